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

    def kv_get(self, key: str) -> Any | None:
        deadline = self._deadlines.get(key)
        if deadline is not None and self.now >= deadline:
            del self.data[key], self._deadlines[key]
            return None
        return self.data.get(key)

    def kv_set(self, key: str, value: Any, expire_s: float | None = None) -> None:
        self.data[key] = value
        self.expiries[key] = expire_s
        if expire_s is None:
            self._deadlines.pop(key, None)
        else:
            self._deadlines[key] = self.now + expire_s
