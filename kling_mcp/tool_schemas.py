"""Tool schemas as the model reads them: what pydantic generates, without the parts that say nothing.

Every tool's ``inputSchema`` and ``outputSchema`` is part of the prompt a client sends its model, so
:func:`compact_tool_schemas` rewrites the generated JSON schemas once, when the server is built:

- no ``title`` keywords (pydantic derives them from the names: ``"Job Id"`` for ``job_id``);
- an optional argument is its plain schema, with its one-line description (and its default, when
  it has one) beside ``type``, not inside an ``anyOf`` with ``null``: leaving it out means "not set";
- no ``maxLength`` of a million characters or more (a safety cap, still enforced, never a limit a
  caller meets by accident);
- in output schemas, a nullable field is ``"type": ["number", "null"]`` and no defaults are shown.

Only the published JSON changes: arguments are still validated by the tools' pydantic models (which
accept an explicit ``null`` as before) and results by their output models.
"""

from __future__ import annotations

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
    return schema


def _walk(node: dict[str, Any], *, output: bool) -> None:
    node.pop("title", None)
    if output:
        node.pop("default", None)
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


_KEPT = ("job_id", "status", "next_action")  # what a stub still spells out


def share_output_schema(mcp: Any, owner: str) -> None:
    """State ``owner``'s output schema once: in the other tools, the same object becomes a stub.

    A tool whose whole output is ``owner``'s object (``generate_video`` answers what ``check_job``
    answers) publishes ``job_id``, ``status`` and ``next_action`` and says where the rest is described;
    a ``$defs`` entry equal to it (``list_jobs``' items) becomes an object that says the same. Both
    still validate every result (other properties are allowed). Call after :func:`compact_tool_schemas`.
    """
    tools = mcp._tool_manager._tools
    full = tools[owner].fn_metadata.output_schema
    if not full:
        return
    body = {k: v for k, v in full.items() if k != "$defs"}
    note = f"The job, as {owner}'s outputSchema describes it."
    for name, tool in tools.items():
        schema = tool.fn_metadata.output_schema
        if name == owner or not schema:
            continue
        if schema == full:
            kept = {k: body["properties"][k] for k in _KEPT if k in body.get("properties", {})}
            tool.fn_metadata.output_schema = {
                "type": "object",
                "description": note,
                "properties": kept,
                "required": [k for k in body.get("required", []) if k in kept],
            }
            continue
        for key, definition in list((schema.get("$defs") or {}).items()):
            if {k: v for k, v in definition.items() if k != "$defs"} == body:
                schema["$defs"][key] = {"type": "object", "description": note}
        _drop_unused_defs(schema)


def _drop_unused_defs(schema: dict[str, Any]) -> None:
    defs = schema.get("$defs")
    if not defs:
        return
    import json

    while True:
        text = json.dumps({k: v for k, v in schema.items() if k != "$defs"}) + json.dumps(
            [v for v in defs.values()]
        )
        unused = [k for k in defs if f'"#/$defs/{k}"' not in text]
        if not unused:
            break
        for k in unused:
            del defs[k]
    if not defs:
        del schema["$defs"]
