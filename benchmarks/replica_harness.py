"""Pieces for running several kling-mcp servers on one store: the Runware emulator in its own process
(with a stats endpoint counting submissions and polls per task), and ``kling-mcp serve --transport
http`` replicas as subprocesses sharing one data dir and one ``KLING_MCP_STORE_URL``.

Used by ``benchmarks/replicas.py`` and ``tests/test_replicas.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import clean_env, serve_with_stats

ROOT = Path(__file__).resolve().parents[1]
KEY = "rw-replica-key"
STATS_PATH = "/_replicas/stats"


# --- the Runware emulator, in its own process -----------------------------------------------------


def serve_emulator(processing_polls: int) -> None:
    """Run the Runware emulator on a free loopback port, print ``READY <url>``, serve until killed.

    ``GET /_replicas/stats``: ``{taskUUID: {"submissions": n, "polls": [wall-clock times]}}``.
    """
    from tests.emulators.runware import RunwareState, create_app

    class Timed(list):  # type: ignore[type-arg]
        """The emulator's request log, with the wall-clock time of every entry beside it."""

        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def append(self, item: Any) -> None:
            self.times.append(time.time())
            super().append(item)

    state = RunwareState(api_keys={KEY}, processing_polls=processing_polls)
    log = state.requests = Timed()
    app = create_app(state)

    def stats() -> dict[str, Any]:
        out: dict[str, dict[str, Any]] = {}
        for task, at in zip(list(log), list(log.times)):
            entry = out.setdefault(str(task.get("taskUUID")), {"submissions": 0, "polls": []})
            if task.get("taskType") == "videoInference":
                entry["submissions"] += 1
            elif task.get("taskType") == "getResponse":
                entry["polls"].append(at)
        return out

    serve_with_stats(app, STATS_PATH, stats)


class Emulator:
    """``python -m benchmarks.replica_harness <processing_polls>`` as a subprocess."""

    def __init__(self, processing_polls: int = 3) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.replica_harness", str(processing_polls)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=clean_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.close()
            raise RuntimeError(f"the Runware emulator did not start (said {line!r})")
        self.url = line.split(" ", 1)[1]

    def stats(self) -> dict[str, dict[str, Any]]:
        import httpx

        return httpx.get(f"{self.url}{STATS_PATH}", timeout=30).json()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --- the replicas -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def can_separate_hosts() -> bool:
    """Whether replicas can get host names of their own (a UTS namespace each: root and ``unshare``)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


class Replica:
    """One ``kling-mcp serve --transport http`` process; ``url`` is its MCP endpoint.

    ``own_host``: the process runs in a UTS namespace of its own, named after the replica, so it looks like
    another machine to the others (its lease owner names another host: a dead replica's jobs are then taken
    over when its leases expire, as across machines, not at once as on one machine).
    """

    def __init__(
        self, name: str, env: dict[str, str], log_dir: Path, extra_args: list[str] | None = None,
        own_host: bool = False,
    ) -> None:
        self.name = name
        self.env = env
        self.port = free_port()
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        argv = [sys.executable, "-m", "kling_mcp", "--log-level", "WARNING", "serve", "--transport", "http",
                "--port", str(self.port), *(extra_args or [])]
        if own_host:  # unshare execs in place: the pid stays the server's, so SIGKILL reaches it
            argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', name, *argv]
        self.proc = subprocess.Popen(
            argv,
            env=clean_env(**env), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {self.name} did not start listening") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no lease released, whatever was in flight is cut."""
        if self.alive:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def start_replicas(count: int, env: dict[str, str], log_dir: Path, own_hosts: bool = False) -> list[Replica]:
    replicas = [Replica(f"replica-{n}", env, log_dir, own_host=own_hosts) for n in range(count)]
    try:
        for replica in replicas:
            replica.wait_listening()
    except BaseException:
        for replica in replicas:
            replica.close()
        raise
    return replicas


def replica_env(emulator: Emulator, data_dir: Path, store_url: str | None, **extra: str) -> dict[str, str]:
    """What every replica shares: the provider, the data dir and the store."""
    env = {
        "RUNWARE_API_KEY": KEY,
        "KLING_MCP_RUNWARE_BASE_URL": f"{emulator.url}/v1",
        "KLING_MCP_DATA_DIR": str(data_dir),
        **extra,
    }
    if store_url:
        env["KLING_MCP_STORE_URL"] = store_url
    return env


if __name__ == "__main__":
    serve_emulator(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
