"""Every hubflow DAG's trigger form submits with its defaults in the real UI, and no param that has a default is
marked required (a required param left empty disables the Trigger button: DESIGN.md's bar for every form)."""
from __future__ import annotations

import json
import time

SUBMIT = '[data-testid="trigger-dag-submit"]'


def hubflow_dags(server) -> list[str]:
    """Every DAG tagged hubflow that the dags folder defines (an import error would hide one: none allowed)."""
    assert server.api("GET", "/api/v2/importErrors").json()["total_entries"] == 0
    dags = server.api("GET", "/api/v2/dags", params={"tags": "hubflow", "limit": 100}).json()["dags"]
    return sorted(d["dag_id"] for d in dags)


def open_form(browser, server, dag_id: str) -> None:
    browser.navigate(f"{server.url}/dags/{dag_id}")
    browser.click('[data-testid="trigger-dag-button"]')
    browser.wait_for(f"!!document.querySelector({json.dumps(SUBMIT)})")
    time.sleep(0.3)  # the form validates its fields once after opening


def required_marks(browser, params: list[str]) -> dict[str, bool | None]:
    """Per param: whether its field is marked required (the label's data-required, the input's required), None
    when the form has no field for it."""
    return browser.evaluate(f"""Object.fromEntries({json.dumps(params)}.map(name => {{
        const input = document.getElementById('element_' + name) ||
                      document.querySelector('[name="element_' + name + '"]') ||  // a number field names its input
                      document.querySelector('[id*="element_' + name + '"]');  // a switch, a number: prefixed ids
        const root = input && input.closest('[data-scope="field"][data-part="root"]');
        if (!root) return [name, null];
        return [name, !!root.querySelector('label[data-required], [data-part="required-indicator"]') ||
                      root.querySelector('[required], [aria-required="true"]') !== null]; }}))""")


def test_the_hubflow_dags_are_found(server):
    assert {"hubflow_deploy_staging", "hubflow_deploy_prod"} <= set(hubflow_dags(server))


def test_every_trigger_form_submits_with_its_defaults(server, browser, docs):
    for dag_id in hubflow_dags(server):
        params = server.api("GET", f"/api/v2/dags/{dag_id}/details").json().get("params") or {}
        open_form(browser, server, dag_id)
        disabled = browser.evaluate(f"document.querySelector({json.dumps(SUBMIT)}).disabled")
        assert disabled is False, f"{dag_id}: the Trigger button is disabled with the defaults"
        with_default = [name for name, p in params.items() if (p or {}).get("value") not in (None, "")]
        optional = [name for name, p in params.items() if (p or {}).get("value") is None]
        marks = required_marks(browser, with_default + optional)
        assert None not in marks.values(), f"{dag_id}: the form lacks fields for {marks}"
        marked = [name for name, required in marks.items() if required]
        assert marked == [], f"{dag_id}: params with a default (or optional) marked required: {marked}"
        if dag_id in ("hubflow_deploy_staging", "hubflow_promote"):
            browser.screenshot(docs / f"trigger-{dag_id}.png")


def test_submitting_the_deploy_form_creates_a_run(server, browser):
    dag_id = "hubflow_deploy_staging"
    runs = f"/api/v2/dags/{dag_id}/dagRuns"
    before = {r["dag_run_id"] for r in server.api("GET", runs).json()["dag_runs"]}
    open_form(browser, server, dag_id)
    browser.click(SUBMIT)
    deadline = time.monotonic() + 20
    while True:
        new = [r for r in server.api("GET", runs).json()["dag_runs"] if r["dag_run_id"] not in before]
        if new:
            break
        assert time.monotonic() < deadline, "no run appeared after submitting the form"
        time.sleep(0.3)
    assert new[0]["run_type"] == "manual"
    assert new[0]["conf"] in ({}, {"revision": None, "force_reason": None})

