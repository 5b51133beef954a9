"""kling_mcp.download against a real loopback file host (FileHost) and httpx.MockTransport."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, StreamingResponse
from starlette.routing import Route

from kling_mcp import download as download_module
from kling_mcp import errors
from kling_mcp.download import DownloadResult, download
from tests.emulators._files import FileHost
from tests.emulators._media import mp4_bytes
from tests.emulators._server import serve

pytestmark = pytest.mark.anyio

DATA = bytes(range(256)) * 40  # 10 240 bytes, not a repeating pattern at any offset < 256
SIGNED = "?X-Amz-Signature=deadbeefcafebabe0123456789&X-Amz-Credential=AKIAEXAMPLE"


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module, "_BACKOFF_S", (0.01, 0.01))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def host() -> FileHost:
    return FileHost()


@pytest.fixture
def base_url(host: FileHost) -> Iterator[str]:
    async def redirect(request: Request) -> RedirectResponse:
        return RedirectResponse(f"/files/{request.path_params['name']}", status_code=302)

    app = Starlette(routes=[Route("/files/{name}", host.handle), Route("/redirect/{name}", redirect)])
    with serve(app) as url:
        yield url


def mock_client(handler: Callable[[httpx.Request], object]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


def truncated(data: bytes, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    """A response announcing all of ``data`` whose connection drops after half of it."""

    async def body() -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]
        raise httpx.ReadError("connection reset by peer")

    return httpx.Response(status, headers={"Content-Length": str(len(data)), **(headers or {})}, content=body())


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


# --- happy path ---------------------------------------------------------------------------------


async def test_full_download_matches_bytes(host: FileHost, base_url: str, root: Path) -> None:
    video = mp4_bytes()
    name = host.add(video)
    dest = root / "jobs" / "j1" / "video-0.mp4"
    async with httpx.AsyncClient() as client:
        result = await download(client, f"{base_url}/files/{name}{SIGNED}", dest, root=root, max_bytes=10**8)
    assert result == DownloadResult(path=dest.resolve(), size_bytes=len(video), resumed=False,
                                    content_type="video/mp4")
    assert dest.read_bytes() == video
    assert leftovers(root) == ["video-0.mp4"]
    assert host.ranges == []


async def test_follows_redirects(host: FileHost, base_url: str, root: Path) -> None:
    name = host.add(DATA)
    async with httpx.AsyncClient(follow_redirects=False) as client:
        await download(client, f"{base_url}/redirect/{name}", root / "v.mp4", root=root, max_bytes=10**6)
    assert (root / "v.mp4").read_bytes() == DATA


# --- resume -------------------------------------------------------------------------------------


async def test_truncated_body_resumes_with_range(host: FileHost, base_url: str, root: Path) -> None:
    video = mp4_bytes()
    name = host.add(video)
    host.truncate_next = 1
    dest = root / "v.mp4"
    async with httpx.AsyncClient() as client:
        result = await download(client, f"{base_url}/files/{name}", dest, root=root, max_bytes=10**8)
    assert host.downloads[name] == 2
    assert len(host.ranges) == 1
    start = int(host.ranges[0].removeprefix("bytes=").removesuffix("-"))
    assert 0 < start < len(video)
    assert result.resumed is True
    assert dest.read_bytes() == video
    assert result.size_bytes == len(video)
    assert leftovers(root) == ["v.mp4"]


async def test_server_ignoring_range_restarts_from_zero(root: Path) -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("range"))
        if len(seen) == 1:
            return truncated(DATA)
        return httpx.Response(200, content=DATA)  # ignores Range: the whole file again

    async with mock_client(handler) as client:
        result = await download(client, "https://cdn.test/v.mp4", root / "v.mp4", root=root, max_bytes=10**6)
    assert seen == [None, f"bytes={len(DATA) // 2}-"]
    assert (root / "v.mp4").read_bytes() == DATA  # not half + whole
    assert result.resumed is False


async def test_server_refusing_ranges_is_not_asked_for_one(root: Path) -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("range"))
        if len(seen) == 1:
            return truncated(DATA, headers={"Accept-Ranges": "none"})
        return httpx.Response(200, content=DATA)

    async with mock_client(handler) as client:
        await download(client, "https://cdn.test/v.mp4", root / "v.mp4", root=root, max_bytes=10**6)
    assert seen == [None, None]
    assert (root / "v.mp4").read_bytes() == DATA


async def test_part_left_by_previous_process_is_resumed(host: FileHost, base_url: str, root: Path) -> None:
    video = mp4_bytes()
    name = host.add(video)
    dest = root / "v.mp4"
    (root / "v.mp4.part").write_bytes(video[:1000])
    async with httpx.AsyncClient() as client:
        result = await download(client, f"{base_url}/files/{name}", dest, root=root, max_bytes=10**8)
    assert host.ranges == ["bytes=1000-"]
    assert result.resumed is True
    assert dest.read_bytes() == video
    assert leftovers(root) == ["v.mp4"]


async def test_cancelled_download_leaves_only_a_part_that_the_next_call_resumes(root: Path) -> None:
    first_half = len(DATA) // 2

    def stalling(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield DATA[:first_half]
            await anyio.sleep_forever()

        return httpx.Response(200, headers={"Content-Length": str(len(DATA)), "Accept-Ranges": "bytes"},
                              content=body())

    dest = root / "v.mp4"
    async with mock_client(stalling) as client:
        with anyio.move_on_after(0.3):
            await download(client, "https://cdn.test/v.mp4", dest, root=root, max_bytes=10**6)
    assert not dest.exists()
    assert (root / "v.mp4.part").read_bytes() == DATA[:first_half]

    seen: list[str | None] = []

    def ranged(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("range"))
        return httpx.Response(206, headers={"Content-Range": f"bytes {first_half}-{len(DATA) - 1}/{len(DATA)}"},
                              content=DATA[first_half:])

    async with mock_client(ranged) as client:
        result = await download(client, "https://cdn.test/v.mp4", dest, root=root, max_bytes=10**6)
    assert seen == [f"bytes={first_half}-"]
    assert dest.read_bytes() == DATA and result.resumed


async def test_stale_part_longer_than_file_restarts_after_416(host: FileHost, base_url: str, root: Path) -> None:
    name = host.add(DATA)
    (root / "v.mp4.part").write_bytes(b"\xff" * (len(DATA) + 10))
    async with httpx.AsyncClient() as client:
        result = await download(client, f"{base_url}/files/{name}", root / "v.mp4", root=root, max_bytes=10**6)
    assert host.ranges == [f"bytes={len(DATA) + 10}-"]
    assert host.downloads[name] == 2
    assert (root / "v.mp4").read_bytes() == DATA and not result.resumed


@pytest.mark.parametrize("content_range", ["bytes 0-{end}/{size}", "bytes {half}-{end}/{bigger}"],
                         ids=["wrong-start", "file-changed-size"])
async def test_unusable_range_answer_restarts_from_zero(root: Path, content_range: str) -> None:
    half, size = len(DATA) // 2, len(DATA)
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("range"))
        if len(seen) == 1:
            return truncated(DATA, headers={"Accept-Ranges": "bytes", "ETag": '"v1"'})
        if len(seen) == 2:
            value = content_range.format(half=half, end=size - 1, size=size, bigger=size + 100)
            return httpx.Response(206, headers={"Content-Range": value}, content=DATA[half:])
        return httpx.Response(200, content=DATA)

    async with mock_client(handler) as client:
        await download(client, "https://cdn.test/v.mp4", root / "v.mp4", root=root, max_bytes=10**6)
    assert seen == [None, f"bytes={half}-", None]
    assert (root / "v.mp4").read_bytes() == DATA


async def test_resume_sends_if_range_with_the_etag(root: Path) -> None:
    seen: list[tuple[str | None, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get("range"), request.headers.get("if-range")))
        if len(seen) == 1:
            return truncated(DATA, headers={"Accept-Ranges": "bytes", "ETag": '"abc"'})
        half = len(DATA) // 2
        return httpx.Response(206, headers={"Content-Range": f"bytes {half}-{len(DATA) - 1}/{len(DATA)}"},
                              content=DATA[half:])

    async with mock_client(handler) as client:
        await download(client, "https://cdn.test/v.mp4", root / "v.mp4", root=root, max_bytes=10**6)
    assert seen[1] == (f"bytes={len(DATA) // 2}-", '"abc"')


# --- size cap -----------------------------------------------------------------------------------


async def test_content_length_over_cap_is_refused_without_leftovers(host: FileHost, base_url: str,
                                                                     root: Path) -> None:
    name = host.add(DATA)
    async with httpx.AsyncClient() as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, f"{base_url}/files/{name}", root / "v.mp4", root=root, max_bytes=len(DATA) - 1)
    assert caught.value.retryable is False
    assert f"limit of {len(DATA) - 1} bytes" in caught.value.message
    assert leftovers(root) == []


async def test_streamed_body_over_cap_is_refused_without_leftovers(root: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:  # chunked: no Content-Length to check up front
            for _ in range(100):
                yield DATA

        return httpx.Response(200, content=body())

    async with mock_client(handler) as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, "https://cdn.test/v.mp4", root / "v.mp4", root=root, max_bytes=50_000)
    assert caught.value.retryable is False
    assert "limit of 50000 bytes" in caught.value.message
    assert leftovers(root) == []


async def test_resumed_total_over_cap_is_refused(host: FileHost, base_url: str, root: Path) -> None:
    name = host.add(DATA)
    (root / "v.mp4.part").write_bytes(DATA[:100])
    async with httpx.AsyncClient() as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, f"{base_url}/files/{name}", root / "v.mp4", root=root, max_bytes=5000)
    assert caught.value.retryable is False and "limit of 5000" in caught.value.message
    assert leftovers(root) == []


# --- failures -----------------------------------------------------------------------------------


async def test_expired_link_is_not_retryable_and_hides_the_signature(host: FileHost, base_url: str,
                                                                      root: Path) -> None:
    name = host.add(DATA)
    host.expire_all = True
    (root / "v.mp4.part").write_bytes(DATA[:100])
    async with httpx.AsyncClient() as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, f"{base_url}/files/{name}{SIGNED}", root / "v.mp4", root=root, max_bytes=10**6)
    exc = caught.value
    assert exc.retryable is False
    assert "403" in exc.message and "expired" in exc.message
    assert "check_job" in exc.hint
    assert "Signature" not in str(exc) and "AKIAEXAMPLE" not in str(exc)
    assert f"{base_url}/files/{name}" in exc.message
    assert host.downloads[name] == 1  # not retried
    assert leftovers(root) == []


@pytest.mark.parametrize("status", [404, 410])
async def test_gone_link_is_not_retryable(root: Path, status: int) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status, text="gone")

    async with mock_client(handler) as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, "https://cdn.test/v.mp4", root / "v.mp4", root=root, max_bytes=10**6)
    assert caught.value.retryable is False and str(status) in caught.value.message
    assert "expired or is gone" in caught.value.message
    assert calls == 1 and leftovers(root) == []


async def test_500_then_success(root: Path) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(500, text="oops") if calls == 1 else httpx.Response(200, content=DATA)

    async with mock_client(handler) as client:
        await download(client, "https://cdn.test/v.mp4", root / "v.mp4", root=root, max_bytes=10**6)
    assert calls == 2 and (root / "v.mp4").read_bytes() == DATA


async def test_backoff_waits_between_attempts(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module, "_BACKOFF_S", (0.2, 0.5))
    stamps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        return httpx.Response(503) if len(stamps) < 3 else httpx.Response(200, content=DATA)

    async with mock_client(handler) as client:
        await download(client, "https://cdn.test/v.mp4", root / "v.mp4", root=root, max_bytes=10**6)
    assert stamps[1] - stamps[0] >= 0.19 and stamps[2] - stamps[1] >= 0.49


@pytest.mark.parametrize("fault", ["503", "timeout", "refused"])
async def test_transient_failures_exhaust_attempts_as_retryable(root: Path, fault: str) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if fault == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if fault == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(503)

    async with mock_client(handler) as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, "https://cdn.test/v.mp4" + SIGNED, root / "v.mp4", root=root,
                           max_bytes=10**6, attempts=4)
    assert caught.value.retryable is True
    assert calls == 4 and "after 4 attempts" in caught.value.message
    assert "Signature" not in str(caught.value)
    assert leftovers(root) == []  # nothing was received, so no .part worth keeping


async def test_refused_connection_on_real_port_is_retryable(root: Path) -> None:
    app = Starlette(routes=[])
    with serve(app) as url:
        pass  # the port is closed again once serve() exits
    async with httpx.AsyncClient() as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, f"{url}/files/x.mp4", root / "v.mp4", root=root, max_bytes=10**6, attempts=2)
    assert caught.value.retryable is True and "ConnectError" in caught.value.message


async def test_retryable_failure_keeps_a_resumable_part(root: Path) -> None:
    seen: list[str | None] = []

    def always_drops(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("range"))
        start = int(request.headers["range"][6:-1]) if "range" in request.headers else 0
        rest = DATA[start:]
        if start:
            content_range = f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"
            return truncated(rest, status=206, headers={"Content-Range": content_range})
        return truncated(rest, headers={"Accept-Ranges": "bytes"})

    dest = root / "v.mp4"
    async with mock_client(always_drops) as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, "https://cdn.test/v.mp4", dest, root=root, max_bytes=10**6, attempts=2)
    assert caught.value.retryable is True and "is kept" in caught.value.message
    kept = (root / "v.mp4.part").read_bytes()
    assert kept == DATA[: len(kept)] and len(DATA) // 2 < len(kept) < len(DATA)  # two halves: 1/2 + 1/4
    assert not dest.exists()
    assert seen == [None, f"bytes={len(DATA) // 2}-"]


async def test_empty_body_fails(root: Path) -> None:
    async with mock_client(lambda request: httpx.Response(200, content=b"")) as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, "https://cdn.test/v.mp4", root / "v.mp4", root=root, max_bytes=10**6)
    assert "empty body" in caught.value.message
    assert leftovers(root) == []


async def test_other_client_error_is_not_retryable(root: Path) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(400, text="bad")

    async with mock_client(handler) as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, "https://cdn.test/v.mp4", root / "v.mp4", root=root, max_bytes=10**6)
    assert caught.value.retryable is False and "HTTP 400" in caught.value.message and calls == 1


async def test_secrets_are_scrubbed_from_messages(root: Path) -> None:
    async with mock_client(lambda request: httpx.Response(401)) as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, "https://cdn.test/sk-live-123456/v.mp4", root / "v.mp4", root=root,
                           max_bytes=10**6, secrets=("sk-live-123456",))
    assert "sk-live-123456" not in str(caught.value) and "***" in caught.value.message


async def test_redirect_to_file_url_is_refused(root: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "file:///etc/passwd"})

    async with mock_client(handler) as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, "https://cdn.test/v.mp4", root / "v.mp4", root=root, max_bytes=10**6)
    assert caught.value.retryable is False and "redirected" in caught.value.message
    assert leftovers(root) == []


async def test_unwritable_destination_is_not_retryable(root: Path) -> None:
    (root / "jobs").write_bytes(b"a file where a directory should be")
    async with mock_client(lambda request: httpx.Response(200, content=DATA)) as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, "https://cdn.test/v.mp4", root / "jobs" / "v.mp4", root=root, max_bytes=10**6)
    assert caught.value.retryable is False and "could not write" in caught.value.message
    assert "disk space" in caught.value.hint


# --- refused before any request -----------------------------------------------------------------


def _no_requests(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request should be made, got {request.url}")


@pytest.mark.parametrize("make_dest", [
    lambda root: root.parent / "elsewhere.mp4",
    lambda root: root / ".." / "escape.mp4",
    lambda root: root,
], ids=["sibling", "dotdot", "root-itself"])
async def test_dest_outside_root_is_refused(root: Path, make_dest: Callable[[Path], Path]) -> None:
    async with mock_client(_no_requests) as client:
        with pytest.raises(errors.InvalidRequest, match="outside the data directory"):
            await download(client, "https://cdn.test/v.mp4", make_dest(root), root=root, max_bytes=10**6)


async def test_symlink_out_of_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    async with mock_client(_no_requests) as client:
        with pytest.raises(errors.InvalidRequest):
            await download(client, "https://cdn.test/v.mp4", root / "link" / "v.mp4", root=root, max_bytes=10**6)
    assert list(outside.iterdir()) == []


async def test_symlinked_part_is_refused(root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep me")
    (root / "v.mp4.part").symlink_to(victim)
    async with mock_client(_no_requests) as client:
        with pytest.raises(errors.InvalidRequest, match="symlink"):
            await download(client, "https://cdn.test/v.mp4", root / "v.mp4", root=root, max_bytes=10**6)
    assert victim.read_bytes() == b"keep me"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://cdn.test/v.mp4", "/local/path.mp4"])
async def test_non_http_url_is_refused(root: Path, url: str) -> None:
    async with mock_client(_no_requests) as client:
        with pytest.raises(errors.DownloadFailed) as caught:
            await download(client, url, root / "v.mp4", root=root, max_bytes=10**6)
    assert caught.value.retryable is False and "only http and https" in caught.value.message
    assert leftovers(root) == []


# --- memory -------------------------------------------------------------------------------------

_BLOCK = bytes(range(256)) * 4096  # 1 MiB
_BLOCKS = 200 * 1024 * 1024 // len(_BLOCK)  # 200 MiB in all


async def test_200mb_download_keeps_memory_flat(root: Path) -> None:
    async def big(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(_BLOCKS):
                yield _BLOCK  # the same object every time: the server side allocates nothing per chunk

        return StreamingResponse(chunks(), media_type="video/mp4",
                                 headers={"Content-Length": str(_BLOCKS * len(_BLOCK))})

    with serve(Starlette(routes=[Route("/big.mp4", big)])) as url:
        async with httpx.AsyncClient() as client:
            tracemalloc.start()
            try:
                result = await download(client, f"{url}/big.mp4", root / "big.mp4", root=root, max_bytes=1 << 30)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert result.size_bytes == _BLOCKS * len(_BLOCK) == (root / "big.mp4").stat().st_size
    with (root / "big.mp4").open("rb") as written:  # every block, in order
        assert all(written.read(len(_BLOCK)) == _BLOCK for _ in range(_BLOCKS)) and written.read(1) == b""
    assert peak < 10 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"


async def test_a_body_streams_in_reads_of_up_to_a_mib_and_the_connection_is_returned_as_it_came(
    host: FileHost, base_url: str
) -> None:
    from kling_mcp.http_reads import larger_socket_reads

    name = host.add(DATA)
    async with httpx.AsyncClient() as client, client.stream("GET", f"{base_url}/files/{name}") as response:
        transport = response.extensions["network_stream"]._stream._transport  # asyncio's, on loopback
        before = transport.max_size
        with larger_socket_reads(response):
            assert transport.max_size == 1 << 20 > before
            assert b"".join([chunk async for chunk in response.aiter_bytes()]) == DATA
        assert transport.max_size == before
