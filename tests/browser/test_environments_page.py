"""The Environments page in the real UI after deploys of the sample repository: the ledger holds what hubflow's
tasks write (a plan made by `make_plan` over the repository, helm releases, verification results, links), prod is
frozen by hand, a revision is held, a nightly report is in; the page shows it, escaped, in and out of the UI."""
from __future__ import annotations

import pytest

from hubflow.clients.git import Repo
from hubflow.clients.ledger import Ledger
from hubflow.core.plan import make_plan

BAD = "b" * 40
NASTY = "<script>window.pwned = 1</script> numpy missing"


@pytest.fixture(scope="module")
def deployed(server):
    """Both environments run the sample repository's head; a later staging attempt failed and is held."""
    repo = Repo(server.origin)
    head = repo.resolve("staging")[0]
    plan = make_plan(repo, None, head, "hubflow-fleet.yaml").to_dict()
    hubs = [h["name"] for h in plan["hubs"]]
    book = Ledger(server.ledger_url)
    for env, helm in (("staging", 4), ("prod", 2)):
        run_id = f"manual__{env}_1"
        attempt = book.start(env, head, None, repo.tree_id(head), run_id)
        links = {"run": f"{server.url}/dags/hubflow_deploy_{env}/runs/{run_id}"}
        if env == "staging":
            links["promotion"] = "https://github.com/datahub/datahub/pull/7"
        book.update(attempt, plan=plan, links=links, promotion="opened" if env == "staging" else "none",
                    releases=[{"hub": h, "upgraded": True, "previous_revision": helm - 1, "revision": helm,
                               "status": "deployed"} for h in hubs],
                    verification={h: {"ok": True, "hub": h, "checks": []} for h in hubs})
        book.finish(attempt, "success", f"{head[:12]} deployed and verified on {len(hubs)} hub(s) in {env}")
    failed = book.start("staging", BAD, head, None, "manual__staging_2")
    book.update(failed, plan=plan, links={"run": f"{server.url}/dags/hubflow_deploy_staging/runs/manual__staging_2"},
                verification={hubs[0]: {"ok": False, "checks": [{"name": "packages", "status": "failed",
                                                                  "detail": NASTY}]}})
    book.finish(failed, "failed", f"verification failed: hub {hubs[0]}: packages: {NASTY}")
    book.hold(BAD, "staging", f"verification failed: {NASTY}")
    book.add_report("nightly", "prod", "scheduled__nightly", True, {"line": "4 hubs verified, no drift"})
    answer = server.api("POST", "/api/v2/variables", json={"key": "hubflow_freeze_prod", "value": "exam week"})
    assert answer.status_code in (200, 201), answer.text
    return {"head": head, "hubs": hubs, "tags": {i["name"]: i["tag"] for i in plan["images"]}}


def test_the_json_has_what_runs_where(server, deployed):
    page = server.api("GET", "/hubflow/api/environments").json()
    staging, prod = page["environments"]
    assert (staging["name"], prod["name"]) == ("staging", "prod")
    assert staging["deployed"]["revision"] == prod["deployed"]["revision"] == deployed["head"]
    assert staging["last_attempt"]["outcome"] == "failed" and prod["last_attempt"] is None
    assert [h["name"] for h in staging["hubs"]] == sorted(deployed["hubs"])
    first = next(h for h in staging["hubs"] if h["name"] == deployed["hubs"][0])
    assert first["verification"]["ok"] is False and NASTY in first["verification"]["problem"]
    assert {h["helm_revision"] for h in prod["hubs"]} == {2}
    assert all(i["tag"] == deployed["tags"][i["name"]] for h in prod["hubs"] for i in h["images"])
    assert staging["holds"][0]["revision"] == BAD and prod["holds"] == []
    assert prod["freeze"]["frozen"] == "prod is frozen by hand: exam week" and staging["freeze"]["frozen"] is None
    assert staging["promotion"] == {"url": "https://github.com/datahub/datahub/pull/7", "state": "opened",
                                    "revision": deployed["head"][:12]}
    assert prod["nightly"]["ok"] is True and prod["nightly"]["summary"] == "4 hubs verified, no drift"
    assert staging["deployed"]["url"].endswith(f"/datahub/datahub/commit/{deployed['head']}")


def page_text(browser) -> str:
    return browser.evaluate("document.body.innerText")


def check_page(browser, deployed, text: str) -> None:
    for word in ("staging", "prod", "frozen by hand: exam week", "promotion PR", "4 hubs verified, no drift",
                 deployed["head"][:12], BAD[:12], NASTY, *deployed["hubs"]):
        assert word in text, f"{word!r} is not on the page:\n{text}"
    for tag in deployed["tags"].values():
        assert tag in text


def test_the_page_in_the_airflow_ui(server, browser, deployed, docs):
    """Through the nav entry's route: the UI frames /hubflow/environments with the user's cookie."""
    browser.navigate(f"{server.url}/plugin/hubflow-environments")
    frame = "document.querySelector('iframe')"
    text = browser.wait_for(f"""(() => {{ const f = {frame}; const d = f && f.contentDocument;
        return d && d.querySelector('section[data-environment="prod"]') ? d.body.innerText : null; }})()""")
    check_page(browser, deployed, text)
    assert browser.evaluate(f"{frame}.contentDocument.querySelectorAll('script').length") == 0
    assert browser.evaluate("window.pwned === undefined")
    browser.screenshot(docs / "environments.png")


def test_the_page_on_its_own(server, browser, deployed):
    browser.navigate(f"{server.url}/hubflow/environments")
    check_page(browser, deployed, page_text(browser))
    assert browser.evaluate("document.querySelectorAll('script').length") == 0
    hrefs = browser.evaluate("[...document.querySelectorAll('a')].map(a => a.href)")
    assert f"{server.url}/dags/hubflow_deploy_prod/runs/manual__prod_1" in hrefs
    assert all(h.startswith(("http://", "https://")) for h in hrefs)


def test_a_viewer_sees_the_page_too(server, deployed):
    answer = server.api("GET", "/hubflow/api/environments", user="viewer")
    assert answer.status_code == 200 and len(answer.json()["environments"]) == 2
