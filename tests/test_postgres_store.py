"""What only the PostgreSQL store must show beyond the shared contract: a change on one handle wakes a
wait on another within about a second (LISTEN/NOTIFY, not polling), file paths are stored relative
to the data dir, and a database that goes away gives errors that say so, loses nothing, and is used
again when it returns (waits included)."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import psycopg
import pytest

from kling_mcp import errors
from kling_mcp.jobs.model import JobStatus, StoredVideo
from kling_mcp.jobs.postgres_store import PostgresStore
from tests.pg_cluster import PASSWORD, start_cluster
from tests.store_contract import make_job

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_a_change_on_one_replica_wakes_a_wait_on_another_within_a_second(pg_url, tmp_path) -> None:
    a, b = PostgresStore(pg_url, tmp_path), PostgresStore(pg_url, tmp_path)
    try:
        job, _ = await a.create(make_job(status=JobStatus.SUBMITTED))
        await b.wait_for_change(job.job_id, job.version, timeout=0.1)  # B is connected and listening
        lags: list[float] = []
        for n in range(5):
            current = await b.get(job.job_id)
            assert current is not None
            changed_at: list[float] = []

            async def change(progress: float = float(n + 1), changed_at: list[float] = changed_at) -> None:
                await anyio.sleep(0.3)
                changed_at.append(time.monotonic())
                await a.transition(job.job_id, lambda j: j.updated(progress=progress))

            async with anyio.create_task_group() as tg:
                tg.start_soon(change)
                woke = await b.wait_for_change(job.job_id, current.version, timeout=30)
                lags.append(time.monotonic() - changed_at[0])
            assert woke is not None and woke.progress == n + 1
        # NOTIFY wakes in milliseconds; the re-read safety net alone would take 3 s.
        assert max(lags) < 1.0, lags
    finally:
        await a.close()
        await b.close()


async def test_file_paths_are_stored_relative_to_the_data_dir(pg_url, tmp_path) -> None:
    """Videos and file inputs under the data dir (however deep: a board's shots, an assembly's inputs) are
    stored relative to it, so a replica that mounts the shared dir elsewhere finds them; files outside it
    keep their absolute path."""
    from kling_mcp.jobs.composite import AssemblyRecord
    from kling_mcp.requests import MediaRef, VideoSpec

    here, there = tmp_path / "replica-a" / "data", tmp_path / "replica-b" / "mnt" / "shared"
    outside = str(tmp_path / "home" / "me" / "frame.png")
    a, b = PostgresStore(pg_url, here), PostgresStore(pg_url, there)
    try:
        frame = MediaRef(kind="file", value=str(here / "inputs" / "ab12.png"), media="image")
        mine = MediaRef(kind="file", value=outside, media="image")
        link = MediaRef(kind="url", value="https://example.invalid/x.png", media="image")
        spec = VideoSpec(operation="image", prompt="p", first_frame=frame, reference_images=[mine, link])
        clip = MediaRef(kind="file", value=str(here / "videos" / "j" / "0.mp4"), media="video")
        job, _ = await a.create(make_job(status=JobStatus.DOWNLOADING).model_copy(
            update={"spec": spec, "assembly": AssemblyRecord(inputs=[clip])}))
        video = StoredVideo(index=0, path=str(here / "videos" / job.job_id / "0.mp4"), size_bytes=3)
        await a.transition(job.job_id, lambda j: j.moved(JobStatus.SUCCEEDED, videos=[video]))
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT record FROM kling_jobs WHERE job_id = %s", (job.job_id,)).fetchone()
        assert row is not None
        stored = row[0]
        assert stored["videos"][0]["path"] == f"videos/{job.job_id}/0.mp4"
        assert stored["spec"]["first_frame"]["value"] == "inputs/ab12.png"
        assert [r["value"] for r in stored["spec"]["reference_images"]] == [outside, "https://example.invalid/x.png"]
        assert stored["assembly"]["inputs"][0]["value"] == "videos/j/0.mp4"
        seen = await b.get(job.job_id)
        assert seen is not None
        assert Path(seen.videos[0].path) == there / "videos" / job.job_id / "0.mp4"
        assert seen.spec.first_frame is not None and Path(seen.spec.first_frame.value) == there / "inputs" / "ab12.png"
        assert [r.value for r in seen.spec.reference_images] == [outside, "https://example.invalid/x.png"]
        assert seen.assembly is not None and Path(seen.assembly.inputs[0].value) == there / "videos" / "j" / "0.mp4"
    finally:
        await a.close()
        await b.close()


async def test_a_database_that_goes_away_gives_errors_saying_so_and_loses_nothing() -> None:
    cluster = start_cluster()  # its own cluster: this test stops it
    store = PostgresStore(cluster.url(), Path(cluster.root) / "data-dir")
    watcher = PostgresStore(cluster.url(), Path(cluster.root) / "data-dir")
    try:
        job, _ = await store.create(make_job(status=JobStatus.RUNNING))
        await store.transition(job.job_id, lambda j: j.updated(progress=30.0))
        await watcher.wait_for_change(job.job_id, 0, timeout=1)  # listening

        cluster.stop()
        started = time.monotonic()
        with pytest.raises(errors.StoreUnavailable) as caught:
            await store.get(job.job_id)
        assert time.monotonic() - started < 15
        text = str(caught.value)
        assert "KLING_MCP_STORE_URL" in text and "cannot be reached" in text and PASSWORD not in text
        with pytest.raises(errors.StoreUnavailable):
            await store.transition(job.job_id, lambda j: j.updated(progress=60.0))

        cluster.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                back = await store.get(job.job_id)
                break
            except errors.StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not reconnect"
                await anyio.sleep(0.2)
        assert back is not None and back.progress == 30.0 and back.version == 2  # nothing lost, nothing half-done

        # Waits work again once the listener has reconnected: a change wakes the other handle promptly.
        async def change() -> None:
            await anyio.sleep(0.5)
            await store.transition(job.job_id, lambda j: j.updated(progress=90.0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(change)
            started = time.monotonic()
            woke = await watcher.wait_for_change(job.job_id, back.version, timeout=30)
        assert woke is not None and woke.progress == 90.0 and time.monotonic() - started < 5
    finally:
        await store.close()
        await watcher.close()
        cluster.destroy()


async def test_a_database_outage_mid_job_gives_tool_errors_and_the_job_still_finishes(tmp_path) -> None:
    """Through the MCP tools: while the database is down, check_job is a tool error naming
    KLING_MCP_STORE_URL (password masked); once it is back the job resumes and succeeds, submitted once,
    and a listen stream opened before the outage still hears about the video."""
    from mcp import Client
    from mcp.shared.subscriptions import ResourceUpdated

    from kling_mcp.config import Settings
    from kling_mcp.server import create_server
    from tests.emulators._server import serve
    from tests.emulators.runware import RunwareState
    from tests.emulators.runware import create_app as runware_app

    key = "rw-outage-key"
    state = RunwareState(api_keys={key}, processing_polls=30)
    cluster = start_cluster()
    try:
        with serve(runware_app(state)) as base:
            settings = Settings.from_env({
                "RUNWARE_API_KEY": key, "KLING_MCP_RUNWARE_BASE_URL": f"{base}/v1",
                "KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_STORE_URL": cluster.url(),
                "KLING_MCP_LEASE_S": "2", "KLING_MCP_POLL_INTERVAL_S": "0.1", "KLING_MCP_POLL_MAX_INTERVAL_S": "0.2"})
            async with Client(create_server(settings)) as client:
                submitted = await client.call_tool("generate_video", {
                    "prompt": "a paper boat on a pond", "provider": "runware", "tier": "standard", "duration": 5,
                    "wait_seconds": 0})
                assert not submitted.is_error, submitted.content
                job_id = submitted.structured_content["job_id"]
                while len(state.sent("getResponse", job_id)) < 3:  # the runner is polling
                    await anyio.sleep(0.05)

                heard: list[str] = []

                async def listen() -> None:
                    uri = f"kling://jobs/{job_id}/videos/0"
                    async with client.listen(resource_subscriptions=[uri]) as subscription:
                        async for event in subscription:
                            if isinstance(event, ResourceUpdated) and str(event.uri) == uri:
                                heard.append(uri)
                                return

                async with anyio.create_task_group() as listening:
                    listening.start_soon(listen)
                    await anyio.sleep(0.5)

                    cluster.stop()
                    down = await client.call_tool("check_job", {"job_id": job_id})
                    text = down.content[0].text  # type: ignore[union-attr]
                    assert down.is_error and "store_unavailable" in text and "KLING_MCP_STORE_URL" in text, text
                    assert PASSWORD not in text
                    await anyio.sleep(4.0)  # longer than a wait's re-read: the runner and the watcher meet the outage
                    state.processing_polls = 0  # the provider finishes meanwhile

                    cluster.start()
                    with anyio.fail_after(60):
                        while True:
                            back = await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 20})
                            if not back.is_error and back.structured_content["status"] == "succeeded":
                                break
                            await anyio.sleep(0.2)
                    assert back.structured_content["videos"], back.structured_content
                    with anyio.fail_after(10):  # the subscription outlived the outage
                        while not heard:
                            await anyio.sleep(0.05)
        assert len(state.sent("videoInference", job_id)) == 1
    finally:
        cluster.destroy()


async def test_a_locked_row_makes_claimers_skip_it_but_lets_the_holder_renew(pg_url, tmp_path) -> None:
    """SKIP LOCKED is for claimers only: a holder renewing while its own transition holds the row must
    not read that as having lost the lease (its runner would stop driving the job)."""
    store = PostgresStore(pg_url, tmp_path)
    try:
        job, _ = await store.create(make_job(status=JobStatus.RUNNING), lease_owner="holder", lease_s=30)
        expired, _ = await store.create(make_job(status=JobStatus.RUNNING), lease_owner="gone", lease_s=0.01)
        await anyio.sleep(0.1)
        with psycopg.connect(pg_url) as locker:  # another transaction holds both rows, as a transition would
            locker.execute("SELECT 1 FROM kling_jobs WHERE job_id IN (%s, %s) FOR UPDATE", (job.job_id, expired.job_id))
            started = time.monotonic()
            assert not await store.claim_lease(expired.job_id, "claimer", 30)  # skipped, not waited for
            assert time.monotonic() - started < 2.0

            async def unlock_soon() -> None:
                await anyio.sleep(0.5)
                locker.commit()

            async with anyio.create_task_group() as tg:
                tg.start_soon(unlock_soon)
                assert await store.claim_lease(job.job_id, "holder", 30)  # waited for the lock, still ours
        lease = await store.lease(job.job_id)
        assert lease is not None and lease.owner == "holder"
        assert await store.claim_lease(expired.job_id, "claimer", 30)  # unlocked: the expired lease is taken
    finally:
        await store.close()


async def test_the_database_password_is_in_no_output_log_or_stored_row(pg_cluster, pg_url, tmp_path, caplog) -> None:
    import logging

    from mcp import Client

    from kling_mcp.config import Settings
    from kling_mcp.server import create_server

    caplog.set_level(logging.DEBUG)
    settings = Settings.from_env({"KLING_MCP_DATA_DIR": str(tmp_path / "data"), "KLING_MCP_STORE_URL": pg_url})
    seen: list[str] = []
    async with Client(create_server(settings)) as client:
        made = await client.call_tool("generate_video", {"prompt": "a kite", "provider": "local", "duration": 3,
                                                         "wait_seconds": 30, "idempotency_key": "k-1"})
        seen.append(str(made.content) + str(made.structured_content))
        job_id = made.structured_content["job_id"]
        for tool, args in (("check_job", {"job_id": job_id}), ("list_jobs", {}), ("estimate_cost", {"prompt": "x"})):
            result = await client.call_tool(tool, args)
            seen.append(str(result.content) + str(result.structured_content))
    with psycopg.connect(pg_url) as conn:
        for table in ("kling_jobs", "kling_idempotency_keys", "kling_ledger", "kling_kv", "kling_schema_version"):
            seen.extend(str(row) for row in conn.execute(f"SELECT * FROM {table}"))  # type: ignore[call-overload]
    seen.append(caplog.text)
    assert len(seen) >= 8 and all(PASSWORD not in text for text in seen)
