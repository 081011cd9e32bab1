"""The pod operator: the provider's KubernetesPodOperator running a Pod that hubflow.k8s.pods composed, and saying
who is to blame when the pod does not succeed."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
from airflow.sdk.definitions._internal.mixins import ResolveMixin
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from hubflow.airflow.results import FAULT_KEY
from hubflow.core.deploy import PodFacts, pod_fault, tried
from hubflow.core.settings import Environment, Settings
from hubflow.k8s.pods import EXECUTION_MARGIN_SECONDS, LABEL, Kind, base_pod, compose, pod_seconds

log = logging.getLogger("hubflow")


def pod_operator_kwargs(settings: Settings, env: Environment, kind: Kind) -> dict[str, Any]:
    """Keyword arguments of the pod operator's `partial()` for the pods of `kind` in `env`: how the operator runs
    and watches a pod (connection, modes, timeouts) plus `base_pod`, the part of the Pod every pod of `kind` shares
    (hubflow.k8s.pods composes it; the operator joins it with each pod's own part)."""
    subject = "image" if kind == "build" else "hub"
    return dict(
        base_pod=base_pod(settings, env, kind),
        # the UI names each mapped pod after its hub or image (a sanitised label: its output is not re-rendered)
        map_index_template=f"{{{{ task.labels['{LABEL}{subject}'] }}}}",
        kubernetes_conn_id=env.kubernetes_conn_id,
        deferrable=settings.pods.deferrable,
        durable=True,
        on_finish_action="delete_succeeded_pod",
        on_kill_action="delete_pod",
        startup_timeout_seconds=settings.timeouts.pod_startup_seconds,
        schedule_timeout_seconds=settings.timeouts.pod_startup_seconds,
        execution_timeout=timedelta(seconds=pod_seconds(settings, kind) + settings.timeouts.pod_startup_seconds
                                    + EXECUTION_MARGIN_SECONDS),
        get_logs=True,
        log_events_on_failure=True,
        init_container_logs=kind in ("build", "upgrade"),
        do_xcom_push=kind != "build",
        termination_message_policy="FallbackToLogsOnError",
    )


class HubflowPodOperator(KubernetesPodOperator):
    """The KubernetesPodOperator with no templated fields, fed a whole Pod.

    `base_pod` (shared by a kind, from `pod_operator_kwargs`) and `pod`, one pod's name, labels, arguments and init
    containers (from the builders, through XCom), are composed by the same pure function `hubflow render` uses, and
    handed to the provider as its `full_pod_spec`; the provider adds its own labels and the XCom sidecar.

    `pod` arrives either as a value (`.expand(pod=...)`: the mapped operator passes each pod to `__init__`) or, in a
    mapped task group (a hub's upgrade and verification), as the group's argument, which Airflow only resolves at
    run time and only for templated fields; here it is resolved in `render_template_fields` without any Jinja.

    Every field may carry user-controlled strings; Airflow 3.3 renders values that arrive through expand_kwargs
    like any other, so a hub name or revision holding `{{ ... }}` would run as a template. Nothing here needs Jinja.

    When the pod does not succeed, the cluster's own account of it (exit code, termination message, waiting reason,
    scheduling, and the pod's own reason when its node evicted, preempted or lost it) is judged by
    `hubflow.core.deploy.pod_fault`; the verdict goes to XCom (`fault`) for `conclude`, and the task fails with it
    as its last line. A failed build is built again once before that verdict stands (`hubflow.core.deploy.tried`:
    the try fails retriably while the task has a retry left, and the last try's verdict says how many failed).
    A pod that never started is deleted, so it cannot start later behind the run's back; a pod still running is
    left for the retry to re-attach to (durable mode).
    """

    template_fields = ()

    def __init__(self, *, base_pod: dict[str, Any], pod: dict[str, Any] | ResolveMixin, **kwargs: Any):
        super().__init__(**kwargs)
        self.base_pod, self.own_pod = base_pod, pod  # (`self.pod` is the provider's: the pod it created)
        if not isinstance(pod, ResolveMixin):
            self._compose()

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        if isinstance(self.own_pod, ResolveMixin):  # a mapped task group's argument: this instance's pod
            self.own_pod = self.own_pod.resolve(context)
            self._compose()

    def _compose(self) -> None:
        self.labels = dict(self.own_pod["labels"])
        self.full_pod_spec = PodGenerator.deserialize_model_dict(compose(self.base_pod, self.own_pod))

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowFailException:
            raise
        except Exception as exc:  # noqa: BLE001 - judged and re-raised below
            self._judge(exc, context)

    def trigger_reentry(self, context, event):
        try:
            return super().trigger_reentry(context, event)
        except Exception as exc:  # noqa: BLE001 - judged and re-raised below
            self._judge(exc, context)

    def _judge(self, exc: Exception, context) -> None:
        facts = self._facts(exc, context)
        kind = self.labels.get(f"{LABEL}kind", "pod")
        subject = self.labels.get(f"{LABEL}hub") or self.labels.get(f"{LABEL}image") or ""
        ti = context["ti"]
        fault = tried(kind, pod_fault(kind, facts), ti.try_number, self.retries + 1)
        ti.xcom_push(key=FAULT_KEY, value=fault.to_dict())
        message = f"{kind} {subject}: {fault.summary} ({fault.blame} fault)"
        if fault.retry:  # retried: the next try re-attaches to the same pod, or builds the image again
            raise AirflowException(message) from exc
        raise AirflowFailException(message) from exc

    def _facts(self, exc: Exception, context) -> PodFacts:
        facts = PodFacts(error=str(exc))
        try:
            pod = self.pod_manager.read_pod(self.pod) if getattr(self, "pod", None) else self.find_pod(
                self.full_pod_spec.metadata.namespace, context, exclude_checked=False)
        except Exception:  # noqa: BLE001 - the pod is gone or the API unreachable: judged as no pod
            pod = None
        if pod is None:
            facts.exists = False
            return facts
        status = pod.status
        facts.reason, facts.message = status.reason, status.message
        facts.pod_reason, facts.pod_message = status.reason, status.message  # the container's do not hide them
        for c in status.init_container_statuses or []:
            if c.state and c.state.terminated and c.state.terminated.exit_code:
                facts.init_failed = c.name
                facts.message = c.state.terminated.message or facts.message
        for cond in status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False":
                facts.unschedulable = cond.message or cond.reason or "unschedulable"
            if cond.type == "DisruptionTarget" and cond.status == "True":  # preempted, drained, node lost
                facts.disruption = cond.reason
                facts.pod_message = facts.pod_message or cond.message
        base = next((c for c in status.container_statuses or [] if c.name == self.base_container_name), None)
        state = base.state if base else None
        if state and state.terminated:
            facts.exit_code = state.terminated.exit_code
            facts.reason = state.terminated.reason if facts.reason != "DeadlineExceeded" else facts.reason
            facts.message = state.terminated.message or facts.message
        elif state and state.waiting:
            facts.waiting_reason, facts.waiting_message = state.waiting.reason, state.waiting.message
        elif state and state.running and status.phase == "Running":
            facts.running = True
        if not (facts.running or facts.exit_code is not None or facts.init_failed):
            self._delete_unstarted(pod)
        return facts

    def _delete_unstarted(self, pod) -> None:
        try:
            self.pod_manager.delete_pod(pod)
            log.info("deleted pod %s, which never started, so that it cannot start later", pod.metadata.name)
        except Exception as exc:  # noqa: BLE001 - best effort; the line above the failure names the pod
            log.warning("could not delete pod %s: %s", pod.metadata.name, exc)
