"""What both configuration files share: a strict model, YAML in, every problem named by file, field and reason.

settings.py and fleet.py each validate one file; this is the part that is the same for both, so the two report their
problems in one form (ConfigError: all of them at once) that the CLI prints and the tasks raise.
"""
from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from hubflow.core.errors import HubflowError


class ConfigError(HubflowError):
    """One or more problems in a configuration file; `problems` holds (file, field path, reason)."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{f}: {p or '(top level)'}: {r}" for f, p, r in problems))


class StrictModel(BaseModel):
    """Every model of both files: an unknown key is an error (a typo never passes as a default), values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# pydantic puts the member of a tagged union in an error's location; paths leave it out (settings' freeze windows)
UNION_TAGS = {"absolute", "recurring"}


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "tagged-union")) and part not in UNION_TAGS:
            out += f".{part}" if out else str(part)
    return out


def validation_problems(err: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors as (field path, reason), in the words the operator reads."""
    out = []
    for e in err.errors():
        path = _format_loc(e["loc"])
        reason = e["msg"]
        if e["type"] == "extra_forbidden":
            reason = "unknown key"
        elif e["type"] == "missing":
            reason = "required key is missing"
        out.append((path, reason.removeprefix("Value error, ")))
    return out


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on a 300-hub fleet


def parse_yaml(text: str, source: str) -> Any:
    """Safe YAML (no Python objects); a syntax error is a ConfigError at its line and column."""
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([(source, where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None


def top_mapping(data: Any, source: str) -> dict:
    """A configuration file is a mapping at the top level; anything else is one clear problem."""
    if not isinstance(data, dict):
        raise ConfigError([(source, "", f"expected a mapping at the top level, got {type(data).__name__}")])
    return data
