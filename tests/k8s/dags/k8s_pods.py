"""Test DAGs: each pod kind as a mapped HubflowPodOperator, per-pod kwargs arriving through XCom (as in the deploy DAG).

`k8s_<kind>_<sync|deferrable>` maps over `dag_run.conf["pods"]` in environment `staging` of the settings file named
by HUBFLOW_K8S_TEST_CONFIG; polling is shortened so that tests stay fast. `k8s_status_plain` does the same with the
provider's KubernetesPodOperator itself, to show what hubflow's subclass prevents; `k8s_status_group` maps a task
group over the pods, as the deploy DAG's per-hub pipeline does.
"""
import os

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import dag, task, task_group

from hubflow.airflow.operators import HubflowPodOperator, pod_operator_kwargs
from hubflow.core.settings import load_settings
from hubflow.k8s import pods

FAST = {"startup_check_interval_seconds": 0.2, "poll_interval": 0.2, "base_container_status_polling_interval": 0.1}


def make(kind: str, deferrable: bool, operator=HubflowPodOperator, mode: str | None = None):
    settings = load_settings(os.environ["HUBFLOW_K8S_TEST_CONFIG"])
    env = settings.environment("staging")

    @dag(dag_id=f"k8s_{kind}_{mode or ('deferrable' if deferrable else 'sync')}", schedule=None, catchup=False)
    def pod_dag():
        @task
        def per_pod(**context):
            return context["dag_run"].conf["pods"]

        if operator is KubernetesPodOperator:  # the provider's own operator, given the same pod as plain kwargs
            base = pods.base_pod(settings, env, kind)
            operator.partial(
                task_id="pod", image=base["spec"]["containers"][0]["image"],
                cmds=base["spec"]["containers"][0]["command"], namespace=base["metadata"]["namespace"],
                kubernetes_conn_id=env.kubernetes_conn_id, do_xcom_push=True, deferrable=False, **FAST,
            ).expand_kwargs(per_pod())
        elif mode == "group":  # as the deploy DAG's per-hub pipeline: the pod is a mapped task group's argument
            @task_group
            def one(pod: dict):
                operator(task_id="pod", pod=pod, **{**pod_operator_kwargs(settings, env, kind), **FAST})

            one.expand(pod=per_pod())
        else:
            operator.partial(
                task_id="pod", **{**pod_operator_kwargs(settings, env, kind), "deferrable": deferrable, **FAST}
            ).expand(pod=per_pod())

    return pod_dag()


if os.environ.get("HUBFLOW_K8S_TEST_CONFIG"):
    for _kind in pods.KINDS:
        for _deferrable in (False, True):
            make(_kind, _deferrable)
    make("status", False, KubernetesPodOperator, "plain")
    make("status", False, mode="group")
