"""Test DAG: the docker builder's task body as the deploy DAG runs it, one image of `dag_run.conf["planned"]`, in
environment `staging` of the settings file named by HUBFLOW_BUILDER_TEST_CONFIG."""
import os

from airflow.sdk import dag, task

from hubflow.core.settings import load_settings


@dag(dag_id="docker_build", schedule=None, catchup=False)
def docker_build_dag():
    @task(task_id="build")
    def build(**context):
        from hubflow.airflow.builds import docker_build

        settings = load_settings(os.environ["HUBFLOW_BUILDER_TEST_CONFIG"])
        conf = context["dag_run"].conf
        return docker_build(settings, settings.environment("staging"), conf["target"], conf["planned"],
                            conf["image"], context)

    build()


if os.environ.get("HUBFLOW_BUILDER_TEST_CONFIG"):
    docker_build_dag()
