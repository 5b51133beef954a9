"""Which process drives which job: leases taken, renewed and released for the runner.

A job is driven (polled, downloaded, finished) only by the process holding its lease in the store.
:class:`LeaseKeeper` owns this process's side of that: one task per driven job, one keeper task that
renews every held lease each third of ``KLING_MCP_LEASE_S`` (a job whose lease was lost, because
this process stalled past it and another took over, stops being driven here at once), and, in a
server (``adopt``), takes over any job whose lease is free or expired, so a dead process's jobs are
finished by a live one within about 1.3 leases. A job being submitted is held from its creation
(``JobStore.create(lease_owner=...)``) so that nobody mistakes it for an orphan.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import anyio
import anyio.abc

from .. import errors
from .backend import JobStore

log = logging.getLogger("kling_mcp.runner")

Drive = Callable[[str], Awaitable[None]]


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def _machine() -> str:
    """Where pids mean the same thing: the host name and the pid namespace (containers differ)."""
    return f"{socket.gethostname()}/{_pid_namespace()}"


def new_owner() -> str:
    """This process's lease owner name: machine, pid and a random part (pids are reused)."""
    return f"{_machine()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` certainly ran on this machine and its process is gone (a restart after
    a crash then takes its jobs over at once instead of after the lease)."""
    if os.name != "posix":  # elsewhere signal 0 is not a liveness probe (on Windows it is CTRL_C_EVENT)
        return False
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != _machine() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, but not ours to signal
        return False
    return False


class LeaseKeeper:
    def __init__(self, store: JobStore, lease_s: float, drive: Drive) -> None:
        self.store = store
        self.lease_s = lease_s
        self.owner = new_owner()
        self._drive_job = drive
        self._tg: anyio.abc.TaskGroup | None = None
        self._adopt = False
        self._driving: dict[str, anyio.CancelScope] = {}
        self._submitting: set[str] = set()
        self._wanted: set[str] = set()

    @property
    def started(self) -> bool:
        return self._tg is not None

    @property
    def period(self) -> float:
        return max(0.05, self.lease_s / 3)

    async def start(self, tg: anyio.abc.TaskGroup, adopt: bool) -> int:
        self._tg, self._adopt = tg, adopt
        taken = await self.sweep()
        tg.start_soon(self._keep)
        return taken

    def drive(self, job_id: str) -> None:
        """Drive ``job_id`` here if its lease can be had (free, expired or ours); otherwise leave it."""
        if self._tg is None:
            raise RuntimeError("runner not started")
        self._wanted.add(job_id)
        if job_id not in self._driving and job_id not in self._submitting:  # its submitter tracks it afterwards
            self._driving[job_id] = anyio.CancelScope()
            self._tg.start_soon(self._run, job_id, self._driving[job_id])

    def stop(self, job_id: str) -> None:
        scope = self._driving.get(job_id)
        if scope is not None:
            scope.cancel()

    async def holds(self, job_id: str) -> bool:
        """Whether this process (still) holds the job's lease, renewing it; False once another has taken it."""
        return await self.store.claim_lease(job_id, self.owner, self.lease_s)

    def driving(self, job_id: str) -> bool:
        return job_id in self._driving

    @contextmanager
    def submitting(self, job_id: str) -> Iterator[None]:
        """Mark a job this process created (holding its lease) as being submitted: renewed, never adopted."""
        self._submitting.add(job_id)
        try:
            yield
        finally:
            self._submitting.discard(job_id)

    async def _run(self, job_id: str, scope: anyio.CancelScope) -> None:
        claimed = False
        try:
            with scope:
                claimed = await self.store.claim_lease(job_id, self.owner, self.lease_s)
                if claimed:
                    await self._drive_job(job_id)
        finally:
            self._driving.pop(job_id, None)
            if claimed:  # a lost claim has nothing to give back (check_job on another replica's job is one read)
                with anyio.CancelScope(shield=True), contextlib.suppress(errors.StoreUnavailable):
                    await self.store.release_lease(job_id, self.owner)  # if the store is down, it just expires

    async def sweep(self) -> int:
        """Start driving every job whose lease is free or expired (in a server; else only wanted ones)."""
        taken = 0
        dead: dict[str, bool] = {}
        for lease in await self.store.live_leases():
            if lease.owner == self.owner:
                continue
            if lease.owner not in dead:
                dead[lease.owner] = owner_is_dead(lease.owner)
            if dead[lease.owner]:
                log.info("job %s: its driver %s is gone; taking it over", lease.job_id, lease.owner)
                await self.store.release_lease(lease.job_id, lease.owner)
        for job in await self.store.claimable(self.owner):
            busy = job.job_id in self._driving or job.job_id in self._submitting
            if busy or not (self._adopt or job.job_id in self._wanted):
                continue
            self.drive(job.job_id)
            taken += 1
        return taken

    async def _keep(self) -> None:
        while True:
            await anyio.sleep(self.period)
            try:
                # claim_lease renews our lease, or retakes it if it lapsed unclaimed; it fails only when
                # another process holds it now.
                for job_id in list(self._submitting):
                    await self.store.claim_lease(job_id, self.owner, self.lease_s)
                for job_id, scope in list(self._driving.items()):
                    if not await self.store.claim_lease(job_id, self.owner, self.lease_s):
                        job = await self.store.get(job_id)
                        if job is not None and not job.terminal:
                            log.warning("job %s: its lease was taken over; stopped driving it here", job_id)
                        scope.cancel()
                await self.sweep()
            except errors.StoreUnavailable as exc:
                log.warning("lease keeper: %s", exc.message)
            except Exception:  # a store hiccup must not kill the keeper: try again next period
                log.exception("lease keeper: store error")
