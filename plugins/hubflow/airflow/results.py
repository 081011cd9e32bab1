"""The one adapter from a deploy run's Airflow tasks to the core's results: which task holds which hub's upgrade
and verification, which map index is which image or rollback, and what each Airflow state means as a Step.

Task ids and XCom keys are known here and in the DAG that makes them, nowhere else: hubflow.core.deploy decides
from HubResult, BuildResult and step values only.
"""
from __future__ import annotations

from hubflow.airflow.runs import task_states
from hubflow.core.deploy import Paths, Planned
from hubflow.core.outcomes import BuildResult, Fault, HubResult, Step, Undo
from hubflow.core.plan import WAVES

FAULT_KEY = "fault"  # XCom of a build or upgrade that did not succeed: its Fault
RESULT_KEY = "result"  # XCom of a verification, also when it failed: the smoke result
STEP = {"success": Step.DONE, "failed": Step.FAILED, "upstream_failed": Step.BLOCKED}  # anything else: NOT_RUN


def step(state: str | None) -> Step:
    return STEP.get(state or "", Step.NOT_RUN)


def hub_results(context: dict, planned: Planned) -> list[HubResult]:
    """Each planned hub's pipeline, in plan order: its wave's group ran the hub's upgrade and verification at the
    hub's index in that wave's list."""
    ti = context["ti"]
    states = task_states(context, [f"{wave}.upgrade" for wave in WAVES])
    where = {hub: (wave, i) for wave in WAVES for i, hub in enumerate(planned.waves[wave])}
    results = []
    for hub in planned.hubs:
        wave, i = where[hub]
        results.append(HubResult(
            hub, wave, step(states.get(f"{wave}.upgrade_{i}")),
            helm=ti.xcom_pull(task_ids=f"{wave}.upgrade", map_indexes=i),
            fault=Fault.from_dict(ti.xcom_pull(task_ids=f"{wave}.upgrade", key=FAULT_KEY, map_indexes=i)),
            verification=ti.xcom_pull(task_ids=f"{wave}.verify", key=RESULT_KEY, map_indexes=i)))
    return results


def build_results(context: dict, built: list[dict]) -> list[BuildResult]:
    """Each mapped build (`built`: the build pods `build_pods` handed out, in map order)."""
    ti = context["ti"]
    states = task_states(context, ["build"])
    return [BuildResult(spec["labels"].get("hubflow.io/image", f"#{i}"), step(states.get(f"build_{i}")),
                        Fault.from_dict(ti.xcom_pull(task_ids="build", key=FAULT_KEY, map_indexes=i)))
            for i, spec in enumerate(built)]


def planned_pods_ran(context: dict) -> bool:
    """Whether the run reached its pods (build_pods handed them out); before that, a step ended the run."""
    return task_states(context, ["build_pods"]).get("build_pods") == "success"


def rollback_steps(context: dict, undo: list[Undo]) -> dict[str, Step]:
    """What became of each hub's rollback pod (the mapped `rollback`, in `undo` order); none ran when the list of
    pods was never made."""
    states = task_states(context, ["rollback"])
    if states.get("rollback") in ("failed", "upstream_failed", "skipped"):
        return {}
    return {u.hub: step(states.get(f"rollback_{i}")) for i, u in enumerate(undo)}


def paths(context: dict) -> Paths:
    states = task_states(context, ["succeed", "fail", "catch_up"])
    return Paths(success=states.get("succeed") == "success", failure=states.get("fail") == "success",
                 catch_up=states.get("catch_up") == "success")
