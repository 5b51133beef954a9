"""The baseline: a bare MCPServer with one tool, on stdio (what kling-mcp's cold start is held against)."""

from mcp.server import MCPServer

mcp = MCPServer("bare")


@mcp.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


if __name__ == "__main__":
    mcp.run("stdio")
