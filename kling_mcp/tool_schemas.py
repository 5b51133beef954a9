"""Tool schemas as the model reads them: what pydantic generates, without the parts that say nothing.

Every tool's ``inputSchema`` and ``outputSchema`` is part of the prompt a client sends its model, so
:func:`compact_tool_schemas` rewrites the generated JSON schemas once, when the server is built:

- no ``title`` keywords (pydantic derives them from the names: ``"Job Id"`` for ``job_id``);
- an optional argument is its plain schema, with its one-line description (and its default, when
  it has one) beside ``type``, not inside an ``anyOf`` with ``null``: leaving it out means "not set";
- no ``maxLength`` of a million characters or more (a safety cap, still enforced, never a limit a
  caller meets by accident);
- in output schemas, a nullable field is ``"type": ["number", "null"]``; no defaults and no ``required``
  lists are shown (every field of a result is always present), and a ``$defs`` entry used once is
  written where it is used.

Only the published JSON changes: arguments are still validated by the tools' pydantic models (which
accept an explicit ``null`` as before) and results by their output models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

_NULL = {"type": "null"}
_SAFETY_CAP = 1_000_000  # characters
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "patternProperties")


def compact_tool_schemas(mcp: Any) -> None:
    """Compact the input and output schema of every tool registered on ``mcp`` (an MCPServer)."""
    tools = getattr(getattr(mcp, "_tool_manager", None), "_tools", None)
    if not isinstance(tools, dict):
        raise RuntimeError("mcp SDK layout changed: cannot reach the tool manager to compact the tool schemas")
    for tool in tools.values():
        compact_input(tool.parameters)
        if tool.fn_metadata.output_schema is not None:
            compact_output(tool.fn_metadata.output_schema)


def compact_input(schema: dict[str, Any]) -> dict[str, Any]:
    """Compact an input schema in place (see the module docstring) and return it."""
    _walk(schema, output=False)
    return schema


def compact_output(schema: dict[str, Any]) -> dict[str, Any]:
    """Compact an output schema in place (see the module docstring) and return it."""
    _walk(schema, output=True)
    _inline_single_use_defs(schema)
    return schema


def _inline_single_use_defs(schema: dict[str, Any]) -> None:
    """Put each ``$defs`` entry referenced exactly once where it is used (innermost first)."""
    defs = schema.get("$defs") or {}
    changed = True
    while changed:
        changed = False
        uses: dict[str, list[dict[str, Any]]] = {}
        _find_refs(schema, uses)
        for name, nodes in uses.items():
            if name in defs and len(nodes) == 1 and '"$ref"' not in json.dumps(defs[name]):
                nodes[0].clear()
                nodes[0].update(defs.pop(name))
                changed = True
    if "$defs" in schema and not schema["$defs"]:
        del schema["$defs"]


def _find_refs(node: Any, uses: dict[str, list[dict[str, Any]]]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and len(node) == 1:
            uses.setdefault(ref.removeprefix("#/$defs/"), []).append(node)
        for value in node.values():
            _find_refs(value, uses)
    elif isinstance(node, list):
        for value in node:
            _find_refs(value, uses)


def _walk(node: dict[str, Any], *, output: bool) -> None:
    node.pop("title", None)
    if output:
        node.pop("default", None)
        if isinstance(node.get("required"), list):
            del node["required"]  # every field is always present: the list would name them all again
    elif "default" in node and node["default"] is None:
        del node["default"]
    _fold_null(node, output=output)
    if isinstance(node.get("maxLength"), int) and node["maxLength"] >= _SAFETY_CAP:
        del node["maxLength"]  # a cap against abuse, not a limit a caller could reach by accident
    for key in _SUBSCHEMA_MAPS:
        for child in (node.get(key) or {}).values():
            if isinstance(child, dict):
                _walk(child, output=output)
    for key in _SUBSCHEMA_LISTS:
        for child in node.get(key) or ():
            if isinstance(child, dict):
                _walk(child, output=output)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            _walk(node[key], output=output)


def _fold_null(node: dict[str, Any], *, output: bool) -> None:
    """``anyOf: [X, null]`` -> X beside the node's own keywords (inputs), or X with a nullable type (outputs)."""
    options = node.get("anyOf")
    if not isinstance(options, list) or len(options) != 2 or _NULL not in options:
        return
    other = options[0] if options[1] == _NULL else options[1]
    if not isinstance(other, dict):
        return
    if output:
        kind = other.get("type")
        if not isinstance(kind, str) or "$ref" in other:
            return  # a nullable $ref stays an anyOf
        other = {**other, "type": [kind, "null"]}
    clash = set(other) & (set(node) - {"anyOf"})
    if any(other[k] != node[k] for k in clash):
        return
    del node["anyOf"]
    # The argument's own keywords (its description) first, as a model reads them.
    merged = {**{k: v for k, v in node.items() if k == "description"}, **other, **node}
    node.clear()
    node.update(merged)


_KEPT = ("job_id",)  # what a stub still spells out


def share_output_schema(mcp: Any, owner: str, answering: Sequence[str] = ()) -> None:
    """State ``owner``'s output schema once: in the other tools, the same object becomes a stub.

    The tools in ``answering`` answer ``owner``'s whole object (``generate_video`` answers what ``check_job``
    answers). They are registered without an output schema (pydantic would derive the same one again for
    each, at start-up) and get ``owner``'s output model here, with a schema that publishes ``job_id`` and says
    where the rest is described. The same object nested in another output (``list_jobs``' items) becomes an
    object that says so. Every result is still validated against the whole model (other properties are
    allowed). Call after :func:`compact_tool_schemas`.
    """
    tools = mcp._tool_manager._tools
    full = tools[owner].fn_metadata.output_schema
    if not full:
        return
    body = {k: v for k, v in full.items() if k != "$defs"}
    note = f"The job, as {owner}'s outputSchema describes it."
    kept = {k: body["properties"][k] for k in _KEPT if k in body.get("properties", {})}
    for name in answering:
        metadata = tools[name].fn_metadata
        if metadata.output_schema is not None:
            raise RuntimeError(f"{name} was registered with an output schema of its own")
        metadata.output_model = tools[owner].fn_metadata.output_model
        metadata.output_schema = {"type": "object", "description": note, "properties": dict(kept)}
    for name, tool in tools.items():
        schema = tool.fn_metadata.output_schema
        if name == owner or name in answering or not schema:
            continue
        if schema == full:
            tool.fn_metadata.output_schema = {"type": "object", "description": note, "properties": dict(kept)}
            continue
        _replace_copies(schema, body, {"type": "object", "description": note})
        _drop_unused_defs(schema)


def _replace_copies(node: Any, body: dict[str, Any], stub: dict[str, Any]) -> None:
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        if isinstance(child, dict) and child == body:
            child.clear()
            child.update(stub)
        else:
            _replace_copies(child, body, stub)


def _drop_unused_defs(schema: dict[str, Any]) -> None:
    defs = schema.get("$defs")
    if not defs:
        return
    while True:
        text = json.dumps({k: v for k, v in schema.items() if k != "$defs"}) + json.dumps([v for v in defs.values()])
        unused = [k for k in defs if f'"#/$defs/{k}"' not in text]
        if not unused:
            break
        for k in unused:
            del defs[k]
    if not defs:
        del schema["$defs"]


def summarize_items(mcp: Any, tool: str, field: str) -> None:
    """Describe the objects of ``tool``'s output array ``field`` in one line instead of a schema.

    ``estimate_cost`` answers one quote per provider: a line naming the fields (enums in brackets)
    reads as well as their schema, costs a fifth of it in tools/list, and a client that validates
    ``structuredContent`` no longer walks every field of every quote.
    """
    schema = mcp._tool_manager._tools[tool].fn_metadata.output_schema
    items = schema["properties"][field]["items"]
    names = [
        name + (f" ({'|'.join(map(str, spec['enum']))})" if isinstance(spec, dict) and "enum" in spec else "")
        for name, spec in items.get("properties", {}).items()
    ]
    schema["properties"][field]["items"] = {"type": "object", "description": "Each: " + ", ".join(names) + "."}
