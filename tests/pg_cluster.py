"""A throwaway PostgreSQL cluster on loopback for the tests.

``initdb`` (run as the ``postgres`` user when the tests run as root: initdb refuses root) into a
temporary directory, ``fsync=off``, listening on 127.0.0.1 at a free port with its unix socket in
the same directory, one role with a password and one database. :func:`start_cluster` returns a
:class:`Cluster`; ``stop()`` shuts it down and removes the directory.

The binaries come from Debian's ``postgresql`` package (``scripts/install-system-deps.sh``) or from
``KLING_MCP_PG_BIN``. :func:`unavailable_reason` says why a cluster cannot be started; tests skip
on it only outside CI (``CI=true`` turns a missing PostgreSQL into a failure).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROLE = "kling"
PASSWORD = "pg-test-secret-5f3a9c"
DATABASE = "kling"


def pg_bin_dir() -> Path | None:
    override = os.environ.get("KLING_MCP_PG_BIN")
    if override:
        return Path(override)
    def version(bin_dir: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in bin_dir.parent.name.split(".") if part.isdigit())

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version)
    for candidate in reversed(candidates):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def unavailable_reason() -> str | None:
    """Why no cluster can be started here, or None when one can."""
    bin_dir = pg_bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists() or not (bin_dir / "pg_ctl").exists():
        return "PostgreSQL's initdb/pg_ctl are not installed (run scripts/install-system-deps.sh)"
    if os.geteuid() == 0 and not _user_exists("postgres"):
        return "running as root without a 'postgres' user to run initdb as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'kling-mcp[postgres]')"
    return None


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    root: Path
    port: int
    bin_dir: Path
    _as_postgres: bool = field(repr=False, default=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, password: str | None = PASSWORD, database: str = DATABASE) -> str:
        auth = f"{ROLE}:{password}" if password is not None else ROLE
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the unix socket; returns stdout."""
        out = self._run(
            str(self.bin_dir / "psql"), "-h", str(self.root), "-p", str(self.port), "-U", "postgres",
            "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql,
        )
        return out.stdout

    def start(self) -> None:
        log = self.root / "server.log"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> Cluster:
    """initdb + start + a password role and database; the caller must ``destroy()`` it."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    bin_dir = pg_bin_dir()
    assert bin_dir is not None
    as_postgres = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="kling-pg-"))
    root.chmod(0o700)
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    cluster = Cluster(root, _free_port(), bin_dir, as_postgres)
    try:
        cluster._run(
            str(bin_dir / "initdb"), "-D", str(cluster.data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--no-sync",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(cluster.port),
            "unix_socket_directories": f"'{root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
        }
        conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
        hba = "local all all trust\nhost all postgres 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 scram-sha-256\n"
        cluster._run("sh", "-c", f"cat >> '{cluster.data}/postgresql.conf' <<'EOF'\n{conf}EOF")
        cluster._run("sh", "-c", f"cat > '{cluster.data}/pg_hba.conf' <<'EOF'\n{hba}EOF")
        cluster.start()
        cluster.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        cluster.psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
    except BaseException:
        cluster.destroy()
        raise
    return cluster


def wait_port_closed(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.05)
