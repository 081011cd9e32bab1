"""The last line of a failed task's log (hubflow.airflow.runs): what failed and what comes next."""
from hubflow.airflow.runs import failed_task_line


def test_a_failed_hub_step_says_what_comes_next_whichever_wave_it_ran_in():
    for task_id in ("canary.upgrade", "rest.upgrade", "rest.verify"):
        line = failed_task_line(task_id, 2, "helm failed\nError: x")
        assert line == (f"hubflow: {task_id}[2] failed (Error: x); the failure path puts back what this run "
                        "changed; `record` says what runs now")


def test_record_fails_with_the_closing_line_itself():
    assert failed_task_line("record", -1, "staging: x FAILED") == "hubflow: staging: x FAILED"
