"""Escaping the text hubflow did not write: Markdown code spans for GitHub, &<> for Slack."""
import re

import pytest

from hubflow.core.messages import code_span, outcome_message, slack_escape, slack_link


def span_content(span: str) -> str:
    """What a CommonMark renderer shows for a code span (the spec's rules, for a span standing alone)."""
    fence = re.match(r"`+", span).group()
    assert span.endswith(fence) and len(span) > 2 * len(fence)
    inner = span[len(fence):-len(fence)]
    assert not re.search(rf"(?<!`){fence}(?!`)", inner)  # the fence does not appear inside: the span cannot end early
    if inner.startswith(" ") and inner.endswith(" ") and inner.strip(" "):
        inner = inner[1:-1]
    return inner


@pytest.mark.parametrize("text", [
    "Add pandas", "</script><script>alert(1)</script>", "use `numpy`", "``double`` and `single`", "`", "`edge`",
    " padded ", " left", "{{ 7 * 7 }} {% if x %}", "**bold** [link](http://x) <img src=x onerror=alert(1)>",
    "@channel <!here> #123", "   "])
def test_a_code_span_shows_the_text_literally(text):
    span = code_span(text)
    assert span_content(span) == text
    assert "\n" not in span


def test_a_code_span_turns_line_breaks_into_spaces():
    assert code_span("one\n# two\r\n- three") == "`one # two - three`"
    assert span_content(code_span("a\n`b`\n")) == "a `b`"


def test_a_code_span_fence_outgrows_the_longest_backtick_run():
    assert code_span("a ``` b ` c") == "````a ``` b ` c````"
    assert code_span("`x`") == "`` `x` ``"
    assert code_span("") == "`  `"  # blank: a bare `` would be no span at all


@pytest.mark.parametrize("text, escaped", [
    ("a & b", "a &amp; b"), ("<!here> <!channel> <@U123>", "&lt;!here&gt; &lt;!channel&gt; &lt;@U123&gt;"),
    ("</script>", "&lt;/script&gt;"), ("&lt; already", "&amp;lt; already"), ("@channel `code`", "@channel `code`")])
def test_slack_escape(text, escaped):
    assert slack_escape(text) == escaped


def test_slack_link_keeps_the_url_usable_and_escapes_the_name():
    assert slack_link("http://airflow/dags/d/runs/r?a=1&b=2", "run <!here>") == \
        "<http://airflow/dags/d/runs/r?a=1&b=2|run &lt;!here&gt;>"
    assert slack_link("http://x/a|b>c d", "x") == "<http://x/a%7Cb%3Ec%20d|x>"


def test_an_outcome_message_escapes_what_people_wrote():
    text = outcome_message("staging", "a" * 40, "failed",
                           'datahub: PR "<!channel> </script> & {{ 7 * 7 }}" failed',
                           {"run": "http://airflow/run", "<!here>": "http://github/pull/3", "empty": ""})
    assert text.splitlines() == [
        ":x: hubflow staging aaaaaaaaaaaa: failed",
        'datahub: PR "&lt;!channel&gt; &lt;/script&gt; &amp; {{ 7 * 7 }}" failed',
        "<http://airflow/run|run>",
        "<http://github/pull/3|&lt;!here&gt;>",
    ]
    assert "<!" not in text
