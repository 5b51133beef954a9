"""Provider adapters, loaded lazily by name so an unused provider costs no import time."""

from __future__ import annotations

import importlib

from .base import Accepted, Done, Failed, PollResult, ProviderContext, Running, VideoProvider

ADAPTERS: dict[str, str] = {
    "runware": "kling_mcp.providers.runware:RunwareProvider",
    "runpod": "kling_mcp.providers.runpod:RunpodProvider",
    "aimlapi": "kling_mcp.providers.aimlapi:AimlapiProvider",
    "evolink": "kling_mcp.providers.evolink:EvolinkProvider",
    "kling": "kling_mcp.providers.kling:KlingProvider",
    "fal": "kling_mcp.providers.fal:FalProvider",
    "replicate": "kling_mcp.providers.replicate:ReplicateProvider",
    "local": "kling_mcp.providers.local:LocalProvider",
}

__all__ = [
    "ADAPTERS",
    "Accepted",
    "Done",
    "Failed",
    "PollResult",
    "ProviderContext",
    "Running",
    "VideoProvider",
    "create_provider",
]


def create_provider(ctx: ProviderContext) -> VideoProvider:
    """Build the adapter for ``ctx.name`` with its context (key, base URL, client, kv)."""
    module_name, _, class_name = ADAPTERS[ctx.name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(ctx)
