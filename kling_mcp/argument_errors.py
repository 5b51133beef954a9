"""Tool arguments the schema refuses, said in the error vocabulary instead of pydantic's dump.

:func:`describe` turns the errors of a tool's argument model into one :class:`errors.InvalidRequest`:
each problem names the argument, the rule and the value given, and for the limits that differ between
providers (duration, aspect_ratio, reference_images, num_videos, prompt length, provider) which
providers would accept that value, configured here or not. Pure: no MCP, no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import catalog, errors
from .catalog import OperationSpec
from .tool_limits import EDIT_OPS, GENERATE_OPS

_MAX_SHOWN = 60
_OPS: dict[str, tuple[str, ...]] = {"generate_video": GENERATE_OPS, "edit_video": EDIT_OPS}
_TYPES = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "an object",
}


def describe(
    tool: str, problems: Sequence[Mapping[str, Any]], arguments: Sequence[str], configured: Sequence[str]
) -> errors.InvalidRequest:
    """One error for the pydantic ``problems`` of ``tool``'s arguments (``arguments``: the names it takes)."""
    ops = _OPS.get(tool, GENERATE_OPS + EDIT_OPS)
    sentences = [_sentence(tool, p, arguments, ops, configured) for p in problems]
    return errors.InvalidRequest(
        f"{tool} refused its arguments: " + " ".join(sentences),
        hint="Fix the arguments named above and call again; nothing was submitted or billed.",
    )


def shown(value: Any) -> str:
    if isinstance(value, list):
        return f"[{len(value)} item{'' if len(value) == 1 else 's'}]"
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _sentence(
    tool: str, problem: Mapping[str, Any], arguments: Sequence[str], ops: Sequence[str], configured: Sequence[str]
) -> str:
    loc = [str(part) for part in problem.get("loc", ())]
    name = loc[0] if loc else "arguments"
    where = ".".join(loc) or "arguments"
    kind, value, ctx = problem.get("type", ""), problem.get("input"), problem.get("ctx") or {}
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(name, arguments, n=1)
        guess = f" Did you mean {close[0]}?" if close else f" It takes: {', '.join(arguments)}."
        return f"{name} is not an argument of {tool}.{guess}"
    if kind == "missing":
        return f"{where} is required."
    rule = _rule(kind, ctx, problem.get("msg", ""))
    text = f"{where}={shown(value)}: {rule}."
    who = _accepting(name, value, ops, kind)
    if who is not None:
        text += " " + _who(who, configured, name, value)
    return text


def _rule(kind: str, ctx: Mapping[str, Any], msg: str) -> str:
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))}"
    if kind in ("too_long", "string_too_long"):
        return f"must have at most {ctx.get('max_length')} {'characters' if 'string' in kind else 'items'}"
    if kind in ("too_short", "string_too_short"):
        return f"must have at least {ctx.get('min_length')} {'characters' if 'string' in kind else 'items'}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    for name, words in _TYPES.items():
        if kind.startswith(name):
            return f"must be {words}"
    return msg[:1].lower() + msg[1:] if msg else kind


def _specs(ops: Sequence[str]) -> list[tuple[str, Any, OperationSpec]]:
    return [
        (p.name, v, s)
        for p in catalog.PROVIDERS.values()
        for v in p.variants
        for op, s in v.operations.items()
        if op in ops
    ]


def _accepting(name: str, value: Any, ops: Sequence[str], kind: str) -> list[str] | None:
    """The providers whose limits take ``value`` for argument ``name``; None: not a per-provider limit."""
    tests: dict[str, Callable[[Any, OperationSpec], bool]] = {
        "duration": lambda v, s: isinstance(value, int) and value in s.durations,
        "aspect_ratio": lambda v, s: value in s.aspect_ratios,
        "num_videos": lambda v, s: isinstance(value, int) and 1 <= value <= s.max_videos,
        "reference_images": lambda v, s: (
            isinstance(value, list) and len(value) <= max(s.reference_images[1], s.reference_images_with_video)
        ),
        "prompt": lambda v, s: isinstance(value, str) and len(value) <= v.max_prompt_chars,
        "negative_prompt": lambda v, s: (
            s.negative_prompt and isinstance(value, str) and len(value) <= v.max_prompt_chars
        ),
    }
    if name == "provider":
        offering = [
            n
            for n in catalog.PROVIDER_NAMES
            if any(op in v.operations for v in catalog.PROVIDERS[n].variants for op in ops)
        ]
        return offering
    test = tests.get(name)
    if test is None or kind.endswith("_type") or kind.endswith("_parsing"):
        return None
    return list(dict.fromkeys(p for p, v, s in _specs(ops) if test(v, s)))


def _who(providers: list[str], configured: Sequence[str], name: str, value: Any) -> str:
    if name == "provider":  # providers: every provider offering the tool's operations
        if value in providers:
            entry = catalog.PROVIDERS[value]
            return f"{value} is not configured on this server" + (f" (set {entry.env_key})." if entry.env_key else ".")
        return f"{shown(value)} does not offer this; {', '.join(providers)} do."
    real = [p for p in providers if p != "local"]
    if not real:
        return "No Kling provider accepts it" + (" (only the local preview does)." if providers else ".")
    here = [p for p in real if p in configured]
    elsewhere = [p for p in real if p not in configured]
    parts = []
    if here:
        parts.append(f"{', '.join(here)} {'accepts' if len(here) == 1 else 'accept'} it")
    if elsewhere:
        keys = ", ".join(f"{p} ({catalog.PROVIDERS[p].env_key})" for p in elsewhere)
        parts.append(f"{keys} would accept it (not configured here)")
    return "; ".join(parts) + "."
