"""Append downloaded bytes to a file in a worker thread, overlapped with the network.

:func:`part_writer` yields a :class:`PartWriter` that takes chunks from the event loop, groups them
into batches of about :data:`BATCH_BYTES` (or :data:`BATCH_SECONDS` of a slow download) and hands each
batch to a worker thread that writes it (one ``writev`` call, which releases the GIL) while the event
loop already receives the next batch. At most :data:`QUEUED_BATCHES` batches wait, so memory stays flat
whatever the file size, and a slow disk slows the download down instead of filling memory. Every
:data:`WRITEBACK_BYTES` the kernel is asked to start writing the new stretch out and to drop the one
before (``posix_fadvise(DONTNEED)``), so the final ``fsync`` has little left to wait for and one
download does not fill the page cache.

``written`` counts the bytes that are in the file, the only figure a resume may trust. Leaving the
``async with`` block waits for every batch already received to be written, on error and on
cancellation too: bytes that arrived before a connection broke are kept for the resume.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

BATCH_BYTES = 1 << 20
BATCH_SECONDS = 0.5  # a slow download still reaches the disk this often, so a kill loses little of it
QUEUED_BATCHES = 2
WRITEBACK_BYTES = 8 << 20
_IOV_MAX = 1024  # the smallest IOV_MAX in practice (Linux, macOS): chunks per writev call


_ADVISE = getattr(os, "posix_fadvise", None)  # Linux and most Unixes; not macOS or Windows


class PartWriter:
    """What :func:`part_writer` yields: ``write`` chunks to it; ``written`` is what is in the file."""

    def __init__(self, fd: int, send: MemoryObjectSendStream[list[bytes]]) -> None:
        self.fd = fd
        self._send = send
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._error: Exception | None = None
        self._written = 0
        self._start = os.lseek(fd, 0, os.SEEK_END)  # where this call's bytes start in the file
        self._window = self._previous_window = self._start
        self._batch_started = time.monotonic()

    @property
    def written(self) -> int:
        """Bytes this writer has put in the file (all it was given, once :func:`part_writer` has returned)."""
        return self._written

    async def write(self, chunk: bytes) -> None:
        """Queue ``chunk``; waits only when the worker is :data:`QUEUED_BATCHES` batches behind.

        Raises the ``OSError`` of a failed earlier write.
        """
        if self._error is not None:
            raise self._error
        if not self._batch:
            self._batch_started = time.monotonic()
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        if self._batch_bytes >= BATCH_BYTES or time.monotonic() - self._batch_started >= BATCH_SECONDS:
            await self._flush()

    async def _flush(self) -> None:
        if self._batch and self._error is None:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            await self._send.send(batch)

    async def _drain(self, receive: MemoryObjectReceiveStream[list[bytes]]) -> None:
        """Write each batch in a worker thread until the send side closes. Shielded, so a cancelled
        download still ends with ``written`` true; never raises (an error is kept)."""
        with anyio.CancelScope(shield=True):
            async with receive:
                async for batch in receive:
                    if self._error is None:
                        try:
                            await anyio.to_thread.run_sync(self._write_batch, batch)
                        except Exception as exc:  # kept, raised by the next write or on leaving
                            self._error = exc

    def _write_batch(self, batch: list[bytes]) -> None:
        """In the worker thread: the whole batch, in one writev where it fits."""
        for start in range(0, len(batch), _IOV_MAX):
            part = batch[start : start + _IOV_MAX]
            total = sum(len(b) for b in part)
            done = os.writev(self.fd, part)
            if done < total:  # a short write (rare on regular files): write the rest plainly
                rest = memoryview(b"".join(part))[done:]
                while rest:
                    rest = rest[os.write(self.fd, rest) :]
            self._written += total
        end = self._start + self._written
        if end - self._window >= WRITEBACK_BYTES and _ADVISE is not None:
            # Start writing this stretch to disk now (asynchronously) rather than all of it in the
            # final fsync, and drop the stretch before it, written out by now, from the page cache.
            _ADVISE(self.fd, self._previous_window, end - self._previous_window, os.POSIX_FADV_DONTNEED)
            self._previous_window, self._window = self._window, end


@asynccontextmanager
async def part_writer(fd: int) -> AsyncIterator[PartWriter]:
    """A :class:`PartWriter` appending to ``fd`` (opened for appending); see the module docstring.

    On leaving, every chunk already given to ``write`` is written (or the first write error is raised,
    when the block itself succeeded).
    """
    send, receive = anyio.create_memory_object_stream[list[bytes]](QUEUED_BATCHES)
    writer = PartWriter(fd, send)
    failure: BaseException | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer._drain, receive)
        try:
            yield writer
        except BaseException as exc:  # re-raised below as it is, not wrapped in the task group's ExceptionGroup
            failure = exc
        finally:
            with anyio.CancelScope(shield=True):  # bytes that arrived before an error or a cancel are kept
                await writer._flush()
            send.close()  # the drain task finishes what is queued, then ends
    if failure is not None:
        raise failure
    if writer._error is not None:
        raise writer._error
