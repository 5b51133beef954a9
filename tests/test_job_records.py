"""Job records written by earlier versions still load."""

from __future__ import annotations

from kling_mcp.jobs.model import Job, JobStatus
from kling_mcp.requests import VideoSpec


def test_a_record_with_the_retired_video_checksum_still_loads() -> None:
    spec = VideoSpec(operation="text", prompt="a lighthouse at dusk", duration=5)
    job = Job(provider="local", model="local", spec=spec, status=JobStatus.SUCCEEDED)
    record = job.model_dump(mode="json")
    # Versions before the download stopped hashing stored a sha256 per video; nothing read it.
    record["videos"] = [{"index": 0, "path": "/data/videos/j/0.mp4", "size_bytes": 3, "sha256": "ab" * 32}]
    loaded = Job.model_validate(record)
    assert loaded.videos[0].path == "/data/videos/j/0.mp4" and loaded.videos[0].size_bytes == 3
    assert "sha256" not in loaded.videos[0].model_dump()
