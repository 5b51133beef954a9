"""Command line: ``kling-mcp [serve]`` (stdio), ``serve --transport http``, ``demo``, and the tools
for people without an MCP client (``estimate``, ``generate``, ``edit``, ``jobs``, ``check``,
``last-frame``: see :mod:`kling_mcp.cli_commands`).

Logging goes to stderr only: on stdio, stdout is the protocol.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from . import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kling-mcp", description="MCP server for Kling Video O1.")
    parser.add_argument("--version", action="version", version=f"kling-mcp {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the MCP server (default: stdio)")
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--stateless-http",
        action="store_true",
        help="HTTP without sessions: any replica answers any request (2025-11-25 clients lose server push)",
    )
    demo = sub.add_parser("demo", help="quote, generate and wait on the local provider through a real MCP client")
    demo.add_argument("--prompt", default="A paper boat sails across a moonlit lake, gentle ripples, cinematic")
    demo.add_argument("--duration", type=int, default=5)
    demo.add_argument("--aspect-ratio", default="16:9", choices=["16:9", "9:16", "1:1"])
    from .cli_commands import add_commands
    from .cli_storyboard import add_storyboard_commands

    add_commands(sub)
    add_storyboard_commands(sub)
    return parser


# ``kling-mcp serve``, as the parser reads it. That and a bare ``kling-mcp`` (how MCP clients start the
# server) are read without building every command's parser or importing the commands' modules;
# tests/test_cli.py checks that the parser agrees.
PLAIN_SERVE: dict[str, object] = {
    "log_level": "INFO",
    "command": "serve",
    "transport": "stdio",
    "host": "127.0.0.1",
    "port": 8000,
    "stateless_http": False,
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line ``argv`` (default: ``sys.argv[1:]``) as the parser reads it."""
    given = sys.argv[1:] if argv is None else argv
    if given == ["serve"]:
        return argparse.Namespace(**PLAIN_SERVE)
    if not given:
        return argparse.Namespace(log_level=PLAIN_SERVE["log_level"], command=None)
    return _parser().parse_args(given)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    command = args.command or "serve"
    if command != "serve":
        return _run_command(command, args)
    with _collecting_after_start():
        from . import errors
        from .config import Settings

        try:
            settings = Settings.from_env()
        except errors.KlingError as exc:
            print(f"kling-mcp: {exc}", file=sys.stderr)
            return 2
        if settings.store_url:  # an unreachable database must stop the server now, not at the first tool call
            from .jobs.pg_support import preflight

            try:
                preflight(settings.store_url)
            except errors.KlingError as exc:
                print(f"kling-mcp: {errors.redact(str(exc), settings.secrets())}", file=sys.stderr)
                return 2
        from .server import create_server

        server = create_server(settings)
    transport = getattr(args, "transport", "stdio")
    if transport == "http":
        from .http import run_http

        return run_http(server, settings, host=args.host, port=args.port, stateless=args.stateless_http)
    if sys.stdin.isatty():
        # Run by hand on a terminal: without this, the silent wait for JSON-RPC looks like a hang.
        print(
            "kling-mcp: MCP server on stdio, waiting for an MCP client (Claude Desktop, Claude Code, ...) to speak "
            "on this terminal. To try it by hand, run `kling-mcp demo`; `kling-mcp --help` lists the commands. "
            "Ctrl-C quits.",
            file=sys.stderr,
            flush=True,
        )
    server.run("stdio")
    return 0


@contextmanager
def _collecting_after_start() -> Iterator[None]:
    """No cyclic garbage collection while the server is built; then what was built is frozen (gc.freeze).

    Building it (mcp, pydantic, our modules, the tool schemas) allocates some 150,000 objects that live as
    long as the process: the collector walked them about 200 times on the way, ~25 ms of CPU before
    ``initialize`` could be answered, and each full collection afterwards would walk them again. Frozen,
    later collections skip them; the few thousand objects start-up left in garbage cycles stay with them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _run_command(command: str, args: argparse.Namespace) -> int:
    """Everything but ``serve``: the tools without an MCP client, the storyboard commands, the demo."""
    from .cli_commands import COMMANDS

    if command in COMMANDS:
        from .cli_commands import run

        return run(args)
    from .cli_storyboard import STORYBOARD_COMMANDS

    if command in STORYBOARD_COMMANDS:
        from .cli_storyboard import run as run_storyboard

        return run_storyboard(args)
    if command == "demo":
        from .demo import run_demo

        return run_demo(prompt=args.prompt, duration=args.duration, aspect_ratio=args.aspect_ratio)
    raise AssertionError(f"the parser accepted an unknown command {command!r}")
