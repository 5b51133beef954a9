"""Test-wide fixtures and the guard that keeps every test on loopback."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from tests.emulators._media import mp4_bytes, png_bytes

_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Fail any test that would reach a non-loopback host (real providers included)."""

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise AssertionError(f"test tried to reach a non-loopback address {address!r}")
        return _real_connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        if host is not None and not _is_loopback(host):
            raise AssertionError(f"test tried to resolve a non-loopback host {host!r}")
        return _real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)

    # ffmpeg (PyAV) opens sockets in C, past the patches above: guard URL probes too.
    from urllib.parse import urlsplit

    from kling_mcp import media

    real_probe = media.probe

    def guarded_probe(path):
        text = str(path)
        if text.startswith(("http://", "https://")) and not _is_loopback(urlsplit(text).hostname or ""):
            raise AssertionError(f"test tried to probe a non-loopback URL {text!r}")
        return real_probe(path)

    monkeypatch.setattr(media, "probe", guarded_probe)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "frame.png"
    path.write_bytes(png_bytes(96, 64, (30, 120, 200)))
    return path


@pytest.fixture
def image_file2(tmp_path: Path) -> Path:
    path = tmp_path / "frame2.png"
    path.write_bytes(png_bytes(96, 64, (220, 180, 40)))
    return path


@pytest.fixture
def video_file(tmp_path: Path) -> Path:
    path = tmp_path / "input.mp4"
    path.write_bytes(mp4_bytes(4.0, 320, 180))
    return path


# PostgreSQL: pg_cluster (session) and pg_url (a fresh database per test).
from tests.pg_fixtures import pg_cluster, pg_url  # noqa: E402, F401
