"""Helpers shared by several test modules."""

from __future__ import annotations

from typing import Any


class MemoryKV:
    """An in-memory ``ProviderContext.kv``.

    ``data`` holds the live values; ``expiries`` records the ``expire_s`` of each key's latest write.
    Expiry is judged on ``now``, a clock the test moves by hand (``kv.now += seconds``).
    """

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.data: dict[str, Any] = {}
        self.expiries: dict[str, float | None] = {}
        self._deadlines: dict[str, float] = {}

    async def kv_get(self, key: str) -> Any | None:
        deadline = self._deadlines.get(key)
        if deadline is not None and self.now >= deadline:
            del self.data[key], self._deadlines[key]
            return None
        return self.data.get(key)

    async def kv_set(self, key: str, value: Any, expire_s: float | None = None) -> None:
        self.data[key] = value
        self.expiries[key] = expire_s
        if expire_s is None:
            self._deadlines.pop(key, None)
        else:
            self._deadlines[key] = self.now + expire_s


def read_store(data_dir: Any, body: Any) -> Any:
    """Run ``await body(store)`` on a fresh diskcache store handle in its own event loop (for sync tests and
    for reading a store another process wrote); the handle is closed afterwards."""
    import asyncio

    from kling_mcp.jobs.diskcache_store import DiskcacheStore

    async def main() -> Any:
        store = DiskcacheStore(data_dir)
        try:
            return await body(store)
        finally:
            await store.close()

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # its own thread: callable from inside a running event loop too
        return pool.submit(asyncio.run, main()).result()
