"""What hubflow tells people: the Slack message of an outcome.

Messages carry user-controlled text (PR titles, failure details), so they go straight to the webhook hook
(hubflow.airflow.hooks.notify) and never through a notifier's Jinja rendering.
"""
from __future__ import annotations


def outcome_message(env: str, revision: str, outcome: str, detail: str, links: dict[str, str] | None = None) -> str:
    icon = {"success": ":white_check_mark:", "failed": ":x:", "refused": ":no_entry:", "stopped": ":rotating_light:"}
    lines = [f"{icon.get(outcome, ':information_source:')} hubflow {env} {revision[:12]}: {outcome}", detail]
    lines += [f"{name}: {url}" for name, url in (links or {}).items() if url]
    return "\n".join(line for line in lines if line)
