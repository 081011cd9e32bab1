"""The hubflow UI plugin: the Environments page and the GitHub webhook, served by Airflow's api-server at /hubflow.

A plugin app inherits no Airflow authentication, so each route says who may call it: the pages need a user who
may read DAG runs (the logged-in user's JWT, from the `_token` cookie or a Bearer header) and show only the
environments whose deploy DAG that user may read; the webhook is authenticated by GitHub's HMAC signature
(HUBFLOW_WEBHOOK_SECRET in the api-server's environment) and creates runs in-process, the way `airflow dags trigger`
does (no service token to keep). What to show is decided in hubflow.core.environments; this module gathers the
rows (ledger, freeze switch Variables, the GitHub connection's host) and renders them.

Every Airflow process loads plugins, but only the api-server serves apps: the app (and Airflow's API security,
about 1.5 s of imports) is built only there, so schedulers and task processes do not pay for it.
"""
import datetime as dt
import os
import sys
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin
from jinja2 import Environment as Jinja

from hubflow.airflow import hooks
from hubflow.airflow.webhook import MAX_BODY, SECRET_ENV, NoSuchDag, Relay, Run
from hubflow.core import environments as view
from hubflow.core.deploy import deploy_dag_id
from hubflow.core.errors import HubflowError
from hubflow.core.settings import Settings, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI


def _github_host(settings: Settings) -> str | None:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(settings.repository.github_conn_id).host
    except AirflowNotFoundException:
        return None


def gather(settings: Settings, user: Any) -> dict[str, Any]:
    """The page model for `user`: environments whose deploy DAG runs they may read."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    auth = get_auth_manager()
    shown = [env for env in settings.environments if auth.is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=deploy_dag_id(env.name)),
        user=user)]
    book = hooks.ledger(settings)  # the api-server's one Ledger per URL, as in every process (LedgerHook)
    holds = book.holds()
    rows = {}
    for env in shown:
        success = book.last_success(env.name)
        rows[env.name] = view.EnvironmentRows(
            attempts=[a.to_dict() for a in book.attempts(env.name, limit=view.HISTORY)],
            last_success=success.to_dict() if success else None, holds=holds,
            switch=hooks.freeze_switch(env.name), nightly=book.last_report("nightly", env.name))
    return view.page(settings, rows, dt.datetime.now(dt.timezone.utc), view.github_web(_github_host(settings)),
                     hooks.run_url)


def _model(user: Any) -> dict[str, Any]:
    try:
        return gather(load_settings(), user)
    except HubflowError as exc:  # bad settings, an unreachable ledger: say so on the page, not as a traceback
        return {"error": str(exc)}


def trigger_in_process(run: Run) -> dict[str, str]:
    """Create the run in the metadata database, as `airflow dags trigger` does; a second one is a no-op."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound, DagRunAlreadyExists, ParamValidationError
    from airflow.utils.types import DagRunTriggeredByType

    try:
        trigger_dag(run.dag_id, run_id=run.run_id, conf=run.conf, triggered_by=DagRunTriggeredByType.REST_API,
                    triggering_user_name="github-webhook")
    except DagRunAlreadyExists:
        return {"already_triggered": run.run_id, "dag_id": run.dag_id}
    except DagNotFound:
        raise NoSuchDag(f"Airflow has no DAG {run.dag_id}") from None
    except (ParamValidationError, ValueError) as exc:
        raise HubflowError(f"Airflow refused the run of {run.dag_id}: {exc}") from None
    return {"triggered": run.run_id, "dag_id": run.dag_id}


def make_app() -> "FastAPI":
    """The app mounted at /hubflow: every route states its own authentication (no `from __future__ import
    annotations` in this module: FastAPI reads these routes' annotations at run time)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="hubflow", docs_url=None, redoc_url=None, openapi_url=None)
    read_runs = Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))

    @app.get("/environments", response_class=HTMLResponse, dependencies=[read_runs])
    def environments_page(user: GetUserDep) -> HTMLResponse:
        model = _model(user)
        return HTMLResponse(PAGE.render(**model), status_code=503 if "error" in model else 200)

    @app.get("/api/environments", dependencies=[read_runs])
    def environments_json(user: GetUserDep) -> JSONResponse:
        model = _model(user)
        return JSONResponse(model, status_code=503 if "error" in model else 200)

    @app.post("/webhook/github")
    async def github_webhook(request: Request) -> JSONResponse:
        """GitHub deliveries; no Airflow login (GitHub cannot send one): the HMAC signature is the authentication."""
        declared = request.headers.get("content-length") or "0"
        if not declared.isdigit():
            return JSONResponse({"error": "the Content-Length header is not a number"}, status_code=400)
        if int(declared) > MAX_BODY:
            return JSONResponse({"error": f"the body is larger than {MAX_BODY} bytes"}, status_code=413)
        body = bytearray()
        async for chunk in request.stream():  # also bounds a chunked body, which declares no length
            body += chunk
            if len(body) > MAX_BODY:
                return JSONResponse({"error": f"the body is larger than {MAX_BODY} bytes"}, status_code=413)
        try:
            relay = Relay(load_settings(), os.environ.get(SECRET_ENV, ""), trigger_in_process)
        except HubflowError as exc:
            return JSONResponse({"error": f"the webhook is not configured: {exc}"}, status_code=503)
        status, answer = await run_in_threadpool(relay.handle, request.headers.get("x-github-event"),
                                                 request.headers.get("x-hub-signature-256"), bytes(body))
        return JSONResponse(answer, status_code=status)

    return app


def when(iso: str | None) -> str:
    """An ISO time as `2026-12-03 14:05 UTC`, for reading."""
    if not iso:
        return "-"
    moment = dt.datetime.fromisoformat(iso)
    moment = moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


_jinja = Jinja(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_jinja.filters["when"] = when
PAGE = _jinja.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hubflow environments</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; background: #fff; }
 h1 { font-size: 1.3rem; margin: 0 0 .2rem; } h2 { font-size: 1.15rem; margin: 0; }
 .muted { color: #57606a; } code { font: 12.5px ui-monospace, monospace; }
 section { border: 1px solid #d0d7de; border-radius: 8px; padding: .9rem 1.1rem; margin: 1rem 0; }
 table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
 th, td { text-align: left; padding: .3rem .6rem .3rem 0; border-bottom: 1px solid #eaeef2; vertical-align: top; }
 th { font-weight: 600; color: #57606a; }
 .badge { display: inline-block; padding: 0 .5rem; border-radius: 1rem; font-size: 12px; font-weight: 600; }
 .ok { background: #dafbe1; color: #116329; } .bad { background: #ffebe9; color: #a40e26; }
 .warn { background: #fff8c5; color: #7d4e00; } .info { background: #ddf4ff; color: #0550ae; }
 dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: .6rem 0; }
 dt { color: #57606a; } dd { margin: 0; }
</style></head><body>
{% macro rev(r) %}{% if r.url %}<a href="{{ r.url }}" target="_blank" rel="noopener"><code>{{ r.short }}</code></a>{% else %}<code>{{ r.short }}</code>{% endif %}{% endmacro %}
{% macro run(url, label) %}{% if url %}<a href="{{ url }}" target="_top">{{ label }}</a>{% else %}{{ label or "-" }}{% endif %}{% endmacro %}
<h1>hubflow environments</h1>
{% if error %}
<p class="badge bad">cannot show the environments</p><p>{{ error }}</p>
{% else %}
<p class="muted">Deployment repository <a href="{{ repository_url }}" target="_blank" rel="noopener">{{ repository }}</a>
 &middot; as of {{ generated_at | when }}</p>
{% for e in environments %}
<section id="env-{{ e.name }}" data-environment="{{ e.name }}">
 <h2>{{ e.name }} <span class="muted">branch <code>{{ e.branch }}</code></span>
 {% if e.freeze.frozen %}<span class="badge warn">frozen</span>{% endif %}</h2>
 <dl>
  <dt>Deployed</dt><dd>{% if e.deployed %}{{ rev(e.deployed) }} {{ e.deployed.finished_at | when }} by run
   {{ run(e.deployed.run_url, e.deployed.run_id) }}{% if e.deployed.forced_by %} (forced by {{ e.deployed.forced_by }}: {{ e.deployed.force_reason }}){% endif %}
   {% else %}<span class="muted">nothing yet</span>{% endif %}</dd>
  {% if e.last_attempt %}
  <dt>Last attempt</dt><dd><span class="badge {{ 'info' if e.last_attempt.outcome in ('running', 'skipped') else 'bad' }}">{{ e.last_attempt.outcome }}</span>
   {{ rev(e.last_attempt) }} {{ e.last_attempt.started_at | when }} run {{ run(e.last_attempt.run_url, e.last_attempt.run_id) }}
   <div>{{ e.last_attempt.detail }}</div></dd>
  {% endif %}
  <dt>Freeze</dt><dd>{% if e.freeze.frozen %}{{ e.freeze.frozen }}{% else %}not frozen{% endif %}
   {% if e.freeze.window and not e.freeze.window.current %}<span class="muted">&middot; next window {{ e.freeze.window.start | when }} to {{ e.freeze.window.end | when }}: {{ e.freeze.window.reason }}</span>{% endif %}</dd>
  {% if e.promotion %}
  <dt>Promotion</dt><dd>{% if e.promotion.url %}<a href="{{ e.promotion.url }}" target="_blank" rel="noopener">promotion PR</a>{% else %}no PR yet{% endif %}
   <span class="muted">of <code>{{ e.promotion.revision }}</code> ({{ e.promotion.state }})</span></dd>
  {% endif %}
  <dt>Nightly</dt><dd>{% if e.nightly %}<span class="badge {{ 'ok' if e.nightly.ok else 'bad' }}">{{ 'ok' if e.nightly.ok else 'failed' }}</span>
   {{ e.nightly.when | when }} {{ run(e.nightly.run_url, 'run') }} <span class="muted">{{ e.nightly.summary }}</span>
   {% else %}<span class="muted">no nightly report yet</span>{% endif %}</dd>
 </dl>
 {% if e.hubs %}
 <table><thead><tr><th>Hub</th><th>Revision</th><th>Images</th><th>Helm revision</th><th>Last verification</th></tr></thead><tbody>
 {% for h in e.hubs %}
  <tr data-hub="{{ h.name }}"><td>{{ h.name }}</td>
   <td>{% if h.revision %}{{ rev(h) }}{% else %}-{% endif %}</td>
   <td>{% for i in h.images %}<code>{{ i.name }}:{{ i.tag }}</code>{% if not loop.last %}<br>{% endif %}{% else %}-{% endfor %}</td>
   <td>{{ h.helm_revision if h.helm_revision is not none else '-' }}{% if h.release_status %} <span class="muted">{{ h.release_status }}</span>{% endif %}</td>
   <td>{% if h.verification %}<span class="badge {{ 'ok' if h.verification.ok else 'bad' }}">{{ 'ok' if h.verification.ok else 'failed' }}</span>
    {{ run(h.verification.run_url, h.verification.when | when) }} <code>{{ h.verification.revision }}</code>
    {% if h.verification.problem %}<div>{{ h.verification.problem }}</div>{% endif %}{% else %}-{% endif %}</td></tr>
 {% endfor %}
 </tbody></table>
 {% else %}<p class="muted">No hub deployed by hubflow yet.</p>{% endif %}
 {% if e.holds %}
 <p><strong>Held revisions</strong> (never deployed or promoted until cleared)</p>
 <ul>{% for h in e.holds %}<li>{{ rev(h) }} since {{ h.since | when }}: {{ h.reason }}</li>{% endfor %}</ul>
 {% endif %}
</section>
{% else %}
<p>No environment you may see.</p>
{% endfor %}
{% endif %}
</body></html>
""")


class HubflowPlugin(AirflowPlugin):
    name = "hubflow"
    # only the api-server imports airflow.api_fastapi.app before it loads plugins
    fastapi_apps = ([{"app": make_app(), "url_prefix": "/hubflow", "name": "hubflow"}]
                    if "airflow.api_fastapi.app" in sys.modules else [])
    external_views = [{"name": "Environments", "href": "/hubflow/environments", "destination": "nav",
                       "url_route": "hubflow-environments", "category": "hubflow"}]
