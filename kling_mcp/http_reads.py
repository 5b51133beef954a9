"""Larger reads for streamed HTTP/1.1 bodies: the knobs httpx, httpcore and asyncio do not expose.

A download's CPU is mostly per-read Python work (asyncio, anyio, h11, httpcore, httpx), the same for
a 64 KiB read as for a 1 MiB one, so reading bodies in larger pieces is most of what makes a fast
download cheap. :func:`read_in_larger_pieces` runs on import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

_READ_BYTES = 1 << 20


def read_in_larger_pieces() -> None:
    """Let httpcore read HTTP/1.1 bodies up to 1 MiB at a time instead of 64 KiB.

    Every read costs the same Python work (h11, httpcore, httpx) whatever its size, so this cuts a
    download's CPU; a read returns whatever has arrived, so small answers are unchanged. httpcore has
    no per-client setting for it: the class attribute is the knob (checked, not assumed).
    """
    import httpcore

    connection: Any = getattr(httpcore, "AsyncHTTP11Connection", None)
    current = getattr(connection, "READ_NUM_BYTES", None)
    if isinstance(current, int) and current < _READ_BYTES:
        connection.READ_NUM_BYTES = _READ_BYTES


@contextlib.contextmanager
def larger_socket_reads(response: httpx.Response) -> Iterator[None]:
    """While a body streams, let its asyncio socket return up to 1 MiB per read instead of 256 KiB.

    asyncio's transport caps each ``recv`` at its ``max_size``, so without this a fast body arrives
    in 256 KiB pieces whatever httpcore asks for. Reached through private attributes, so checked at
    every step: on another event loop or a TLS stream nothing changes.
    """
    stream = response.extensions.get("network_stream")
    transport: Any = getattr(getattr(stream, "_stream", None), "_transport", None)
    before = getattr(transport, "max_size", None)
    if not isinstance(before, int) or before >= _READ_BYTES:
        yield
        return
    transport.max_size = _READ_BYTES
    try:
        yield
    finally:
        transport.max_size = before  # the connection goes back to the pool as it came


read_in_larger_pieces()
