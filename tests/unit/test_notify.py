"""Slack notifications: the message a run posts, sent through the Slack provider's webhook hook to a local
receiver; nothing is sent when no connection is configured; a PR title holding Jinja is sent verbatim."""
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from hubflow.airflow import hooks
from hubflow.core import messages
from hubflow.core.settings import load_settings


def receiver():
    posts = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, posts


def test_outcome_is_posted_to_the_configured_webhook(monkeypatch):
    server, posts = receiver()
    monkeypatch.setenv("AIRFLOW_CONN_HUBFLOW_SLACK", json.dumps({
        "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{server.server_port}", "password": "T0/B0/secret"}))
    settings = load_settings().model_copy(update={"notify": load_settings().notify.model_copy(
        update={"slack_conn_id": "hubflow_slack"})})
    text = messages.outcome_message("staging", "a" * 40, "failed", 'staging: aaaaaaaaaaaa FAILED: "{{ 7 * 7 }}"',
                                  {"run": "http://airflow/run", "revert": "http://github/pull/3"})
    assert hooks.notify(settings, text)
    server.shutdown()
    (path, body), = posts
    assert path == "/T0/B0/secret"
    assert body["text"].startswith(":x: hubflow staging aaaaaaaaaaaa: failed")
    assert "{{ 7 * 7 }}" in body["text"] and "<http://github/pull/3|revert>" in body["text"]


def test_nothing_is_sent_without_a_connection():
    assert load_settings().notify.slack_conn_id is None
    assert hooks.notify(load_settings(), "hello") is False
