"""Run an ASGI app (an emulator) on a real loopback port in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


def _start(app, host: str, port: int) -> tuple[socket.socket, uvicorn.Server, threading.Thread]:
    """Bind ``host:port`` (0 picks a free port) and run ``app`` there in a daemon thread, once started."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            sock.close()
            raise RuntimeError("emulator did not start")
        time.sleep(0.01)
    return sock, server, thread


def _stop(sock: socket.socket, server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@contextmanager
def serve(app, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` on ``host`` at a free port; yield its base URL (no trailing slash)."""
    sock, server, thread = _start(app, host, 0)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        _stop(sock, server, thread)


def run_forever(app, host: str, port: int) -> None:
    """An emulator's standalone ``main``: serve ``app`` on ``host:port`` (0 picks a free port), print
    ``READY http://<host>:<port>`` as the first stdout line, and block until interrupted (Ctrl-C)."""
    sock, server, thread = _start(app, host, port)
    print(f"READY http://{host}:{sock.getsockname()[1]}", flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        _stop(sock, server, thread)
