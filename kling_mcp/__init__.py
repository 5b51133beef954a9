"""kling-mcp: an MCP server for Kling Video O1 through the providers that serve it."""

__version__ = "0.1.0"
