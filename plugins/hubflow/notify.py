"""Tell people what a run did: one message per outcome, to Slack when a webhook connection is configured.

The GitHub status and comment are always set by the lifecycle itself; Slack is the optional extra. Messages carry
user-controlled text (PR titles, failure details), so they go straight to the webhook hook and never through a
notifier's Jinja rendering.
"""
from __future__ import annotations

from hubflow.config import Settings


def outcome_message(env: str, revision: str, outcome: str, detail: str, links: dict[str, str] | None = None) -> str:
    icon = {"success": ":white_check_mark:", "failed": ":x:", "refused": ":no_entry:", "stopped": ":rotating_light:"}
    lines = [f"{icon.get(outcome, ':information_source:')} hubflow {env} {revision[:12]}: {outcome}", detail]
    lines += [f"{name}: {url}" for name, url in (links or {}).items() if url]
    return "\n".join(line for line in lines if line)


def send(settings: Settings, text: str) -> bool:
    """Post `text` to the configured Slack webhook; False when none is configured."""
    if not settings.notify.slack_conn_id:
        return False
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    SlackWebhookHook(slack_webhook_conn_id=settings.notify.slack_conn_id).send_text(text)
    return True
