"""What hubflow tells people: the Slack message of an outcome, and the escaping of the text it did not write.

Messages carry user-controlled text (PR titles, failure details), so they go straight to the webhook hook
(hubflow.airflow.hooks.notify) and never through a notifier's Jinja rendering; here that text is escaped for where
it lands: `slack_escape` for Slack, `code_span` for GitHub Markdown (PR bodies).
The texts hubflow writes on GitHub (promotion and revert PRs, markers, status descriptions) are in hubflow.core.texts.
"""
from __future__ import annotations

import re

_URL_UNSAFE = {"<": "%3C", ">": "%3E", "|": "%7C", " ": "%20"}  # would end Slack's <url|name> early


def code_span(text: str) -> str:
    """`text` as one Markdown code span, shown literally whatever it holds (markup, HTML, backticks, newlines).

    CommonMark (GitHub) rules: the fence is a backtick run longer than any run inside; one space pads each side when
    the text starts or ends with a backtick or a space (the renderer strips it again). Line breaks become spaces, as
    a line break could start a new block (a heading, a list) before inline parsing sees the span.
    """
    text = " ".join(text.splitlines())
    fence = "`" * (max(map(len, re.findall(r"`+", text)), default=0) + 1)
    pad = " " if not text or (text.strip(" ") and (text[0] in "` " or text[-1] in "` ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def slack_escape(text: str) -> str:
    """`text` shown as written in Slack: &, < and > escaped, so it makes no link, mention (<!here>) or markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_link(url: str, name: str) -> str:
    """A Slack link: the URL kept usable (only what would end the link is %-encoded), the name escaped."""
    for char, code in _URL_UNSAFE.items():
        url = url.replace(char, code)
    return f"<{url}|{slack_escape(name)}>"


def outcome_message(env: str, revision: str, outcome: str, detail: str, links: dict[str, str] | None = None) -> str:
    icon = {"success": ":white_check_mark:", "failed": ":x:", "refused": ":no_entry:", "stopped": ":rotating_light:"}
    lines = [f"{icon.get(outcome, ':information_source:')} hubflow {env} {revision[:12]}: {outcome}",
             slack_escape(detail)]
    lines += [slack_link(url, name) for name, url in (links or {}).items() if url]
    return "\n".join(line for line in lines if line)
