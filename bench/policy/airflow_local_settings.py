"""Cluster policy for the benchmark's stacks (on their PYTHONPATH): one local JupyterHub answers for every hub
here, and smoke tests of one hub share its smoke users, so verifications take the `smoke` pool (one slot) in turn.
A real fleet has one hub per deployment and needs no such pool."""


def task_policy(task) -> None:
    if task.task_id.endswith(".verify"):
        task.pool = "smoke"
