"""Protocol features beyond tools/resources/prompts (logging/setLevel, completions, subscriptions).

Part of the server layer: with server.py, the only code that knows MCP.
"""

from __future__ import annotations

from typing import Any


def install_extras(mcp: Any, settings: Any) -> None:
    """Register the optional protocol handlers on ``mcp``."""
    return None
