"""Assembly speed: ``kling_mcp.assembly.assemble`` on 720p shots made for the run.

- remux: ``shots`` x ``seconds`` s 1280x720 24 fps H.264 + AAC shots of one format joined with cuts
  (no re-encoding), against copying the same bytes into one file (``shutil.copyfileobj``).
- crossfade: ``fade_shots`` of the same shots joined with 0.5 s crossfades (decode, blend, H.264 + AAC
  re-encode), as a multiple of real time: output seconds / wall seconds; CPU seconds in the notes.

The shots are a moving colour gradient with a tone (``tests.emulators._media``), encoded at CRF 23.
``python -m benchmarks.assembly [--quick]`` runs it alone.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ._common import Row


def _shots(folder: Path, count: int, seconds: float) -> list[Path]:
    from tests.emulators._media import write_mp4

    return [
        write_mp4(folder / f"shot-{n}.mp4", seconds, 1280, 720, 24, audio_hz=220 + 40 * n, crf=23)
        for n in range(count)
    ]


def _copy(paths: list[Path], dest: Path) -> None:
    with dest.open("wb") as out:
        for path in paths:
            with path.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)


def run(shots: int = 10, seconds: float = 5.0, runs: int = 7, fade_shots: int = 4, fade_runs: int = 3) -> list[Row]:
    from kling_mcp.assembly import assemble

    section = f"assembly ({shots} x {seconds:g} s 720p shots)"
    with tempfile.TemporaryDirectory(prefix="kling-bench-assembly-") as tmp:
        root = Path(tmp)
        clips = _shots(root, shots, seconds)
        megabytes = sum(c.stat().st_size for c in clips) / 1e6
        copy_s, remux_s = [], []
        for i in range(runs):
            started = time.perf_counter()
            _copy(clips, root / f"copy-{i}.bin")
            copy_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = assemble(clips, root / f"joined-{i}.mp4")
            remux_s.append(time.perf_counter() - started)
            if result.mode != "remux":
                raise RuntimeError(f"expected a remux, got {result.mode}")
            (root / f"copy-{i}.bin").unlink()
            (root / f"joined-{i}.mp4").unlink()
        base = Row.of(section, "copy the same bytes", copy_s, input_mb=round(megabytes, 1))
        remux = Row.of(section, "remux (cut, no re-encode)", remux_s, duration_s=result.duration_s, target="< 1 s")
        speeds, cpu = [], []
        fades = clips[:fade_shots]
        for i in range(fade_runs):
            started, cpu_started = time.perf_counter(), time.process_time()
            result = assemble(fades, root / f"faded-{i}.mp4", transition="crossfade", transition_s=0.5)
            speeds.append(result.duration_s / (time.perf_counter() - started))
            cpu.append(time.process_time() - cpu_started)
            (root / f"faded-{i}.mp4").unlink()
    fade = Row(
        f"assembly ({fade_shots} x {seconds:g} s 720p shots)",
        "crossfade 0.5 s (re-encode)",
        "x real time",
        round(statistics.median(speeds), 2),
        round(min(speeds), 2),  # the slowest run, in the p99 column
        fade_runs,
        extra={"output_s": result.duration_s, "cpu_s": round(statistics.median(cpu), 1), "target": ">= 2x"},
    )
    return [base, remux.against(base), fade]


if __name__ == "__main__":
    from ._common import markdown

    quick = "--quick" in sys.argv
    rows = run(3, 2.0, 2, 2, 1) if quick else run()
    print(markdown(rows))
