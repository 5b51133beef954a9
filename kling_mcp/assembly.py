"""Join 2-50 videos, in order, into one MP4 (what ``assemble_video`` and storyboards run).

``assemble(inputs, dest, transition=..., transition_s=..., aspect_ratio=..., on_progress=...)``:

- **remux** (no re-encoding, about as fast as copying the files) when the transition is a cut and all
  inputs share video codec (H.264 or HEVC), codec set-up, size, frame rate and audio format, and
  ``aspect_ratio`` is unset or already theirs. Timestamps are shifted so each clip starts where the
  previous one's video ends; the AAC priming packets of every clip after the first are dropped (they
  would land before the previous clip's last audio packet and the muxer refuses that).
- **reencode** otherwise (``assembly_encode``): every clip is scaled to fit and padded (letterbox or
  pillarbox) to one size and frame rate - the first video's, or with ``aspect_ratio`` a frame of that
  shape with the first video's short side - then H.264 (yuv420p) + AAC. ``crossfade`` blends video and
  audio over ``transition_s`` at each cut, so the result is ``sum - (n - 1) * transition_s`` long. When
  any input has sound, inputs without it contribute silence of their own length.

Synchronous and CPU-bound (PyAV and numpy, imported lazily): async callers run it with
``anyio.to_thread.run_sync``. The MP4 is written to a temp file in ``dest``'s folder, then renamed
over ``dest``. Bad inputs raise :class:`errors.InvalidInputFile` naming the input (1-based).
``on_progress(fraction)`` is called as work advances; an exception it raises aborts the assembly and
leaves no file behind (how a cancelled job stops it).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from . import errors
from .vocabulary import TRANSITIONS, Transition, spoken

MIN_INPUTS, MAX_INPUTS = 2, 50
MAX_TRANSITION_S = 5.0
ACCEPTED_VIDEOS = "MP4, MOV, WebM or MKV videos"
_REMUX_CODECS = ("h264", "hevc")
_VIDEO_DEMUXERS = ("mov", "mp4", "matroska", "webm")
_ASPECT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*[:/x]\s*(\d+(?:\.\d+)?)\s*")

Progress = Callable[[float], None]


@dataclass(frozen=True)
class AssemblyResult:
    """The joined MP4: where it is, its frame size, rate and length, and how it was made."""

    path: Path
    width: int
    height: int
    fps: float
    duration_s: float
    size_bytes: int
    mode: Literal["remux", "reencode"]


@dataclass(frozen=True)
class AudioFormat:
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class Clip:
    """One input as the assembler sees it (``index`` is 1-based)."""

    index: int
    path: Path
    codec: str
    width: int
    height: int
    fps: Fraction
    duration_s: float
    extradata: bytes | None
    audio: AudioFormat | None


def assemble(
    inputs: Sequence[Path],
    dest: Path,
    *,
    transition: Transition = "cut",
    transition_s: float = 0.5,
    aspect_ratio: str | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> AssemblyResult:
    """Join ``inputs`` in order into the MP4 ``dest`` (see the module docstring)."""
    if not MIN_INPUTS <= len(inputs) <= MAX_INPUTS:
        raise errors.InvalidRequest(
            f"assembly joins {MIN_INPUTS}-{MAX_INPUTS} videos; got {len(inputs)}.",
            hint=f"Pass between {MIN_INPUTS} and {MAX_INPUTS} videos, in the order they should play.",
        )
    if transition not in TRANSITIONS:
        raise errors.InvalidRequest(f"transition must be {spoken(map(repr, TRANSITIONS))}; got {transition!r}.")
    shape = parse_aspect_ratio(aspect_ratio) if aspect_ratio else None
    clips = [probe_clip(Path(p), k, len(inputs)) for k, p in enumerate(inputs, start=1)]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        if transition == "cut" and can_remux(clips, shape):
            duration = remux(clips, part, on_progress)
            first = clips[0]
            width, height, fps, mode = first.width, first.height, first.fps, "remux"
        else:
            from .assembly_encode import reencode, target_size

            fade = transition_s if transition == "crossfade" else 0.0
            check_transition(clips, fade)
            width, height = target_size(clips[0], shape)
            fps = clips[0].fps
            duration = reencode(clips, part, width=width, height=height, fps=fps, fade_s=fade, progress=on_progress)
            mode = "reencode"
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    if on_progress is not None:
        on_progress(1.0)
    return AssemblyResult(dest, width, height, float(fps), duration, dest.stat().st_size, mode)  # type: ignore[arg-type]


def parse_aspect_ratio(text: str) -> Fraction:
    """``"16:9"`` -> 16/9 (also ``16/9``, ``16x9``, ``1.85:1``); InvalidRequest otherwise."""
    match = _ASPECT.fullmatch(text)
    if match and float(match[1]) > 0 and float(match[2]) > 0:
        ratio = Fraction(match[1]) / Fraction(match[2])
        if Fraction(1, 4) <= ratio <= 4:
            return ratio
    raise errors.InvalidRequest(
        f"aspect_ratio {text!r} is not a frame shape between 1:4 and 4:1.",
        hint="Use width:height, e.g. 16:9, 9:16 or 1:1, or leave it unset to keep the first video's.",
    )


def check_transition(clips: Sequence[Clip], fade_s: float) -> None:
    """A crossfade must be positive, at most MAX_TRANSITION_S, and fit inside every clip."""
    if fade_s == 0:
        return
    if not 0 < fade_s <= MAX_TRANSITION_S:
        raise errors.InvalidRequest(
            f"transition_s must be more than 0 and at most {MAX_TRANSITION_S:g} seconds; got {fade_s:g}.",
            hint="0.5 s is a gentle crossfade; use transition='cut' for none.",
        )
    for clip in clips:
        inner = 0 < clip.index - 1 < len(clips) - 1  # a middle clip fades in and out
        need = fade_s * (2 if inner else 1)
        if clip.duration_s < need:
            most = clip.duration_s / (2 if inner else 1)
            raise errors.InvalidRequest(
                f"video {clip.index} of {len(clips)} is {clip.duration_s:.2f} s long, too short for a "
                f"{fade_s:g} s crossfade{' on both sides' if inner else ''}.",
                hint=f"Use transition_s of at most {most:.2f}, or transition='cut'.",
            )


# --- probing ------------------------------------------------------------------------------------


def _bad(index: int, total: int, path: Path, reason: str) -> errors.InvalidInputFile:
    return errors.InvalidInputFile(
        f"video {index} of {total} ({path}) {reason}.",
        hint=f"Pass {MIN_INPUTS}-{MAX_INPUTS} {ACCEPTED_VIDEOS} in the order they should play.",
    )


def probe_clip(path: Path, index: int, total: int) -> Clip:
    """Describe input ``index`` (1-based) of ``total``; InvalidInputFile in plain words if unusable."""
    import av

    if path.is_dir():
        raise _bad(index, total, path, "is a folder, not a video file")
    if not path.is_file():
        raise _bad(index, total, path, "does not exist; check the path")
    if path.stat().st_size == 0:
        raise _bad(index, total, path, "is an empty file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError):
        raise _bad(
            index, total, path, "cannot be opened as a video (it is not one, or it is damaged or incomplete)"
        ) from None
    with container:
        fmt = container.format.name
        if not container.streams.video:
            raise _bad(index, total, path, "has no picture (it is not a video)")
        if not any(part in _VIDEO_DEMUXERS for part in fmt.split(",")):
            image = fmt.endswith("_pipe") or fmt in ("image2", "gif")
            what = "an image" if image else f"a {fmt.split(',')[0].upper()} file"
            raise _bad(index, total, path, f"is {what}, not one of the {ACCEPTED_VIDEOS}")
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except (av.FFmpegError, ValueError):
            first = None
        if first is None:
            raise _bad(index, total, path, "has no picture that can be decoded (is it damaged or truncated?)")
        rate = stream.average_rate or stream.guessed_rate
        duration = _duration_s(container, stream)
        if not rate or not duration:
            raise _bad(index, total, path, "does not say how long it is or how many frames per second it has")
        audio = None
        if container.streams.audio:
            a = container.streams.audio[0].codec_context
            audio = AudioFormat(a.name, a.sample_rate, a.channels)
        extradata = stream.codec_context.extradata
        return Clip(
            index=index,
            path=path,
            codec=stream.codec_context.name,
            width=stream.codec_context.width or first.width,
            height=stream.codec_context.height or first.height,
            fps=Fraction(rate).limit_denominator(100_000),
            duration_s=duration,
            extradata=bytes(extradata) if extradata else None,
            audio=audio,
        )


def _duration_s(container: Any, stream: Any) -> float | None:
    import av

    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration / av.time_base)
    return None


# --- remux --------------------------------------------------------------------------------------


def can_remux(clips: Sequence[Clip], shape: Fraction | None) -> bool:
    """True when the clips can be joined packet by packet into one MP4 track per stream."""
    first = clips[0]
    if first.codec not in _REMUX_CODECS or first.width % 2 or first.height % 2:
        return False
    if shape is not None and abs(Fraction(first.width, first.height) - shape) > Fraction(1, 100):
        return False
    if first.audio is not None and first.audio.codec != "aac":
        return False

    def key(c: Clip) -> tuple[object, ...]:
        return (c.codec, c.width, c.height, c.fps, c.extradata, c.audio)

    return all(key(c) == key(first) for c in clips[1:])


def remux(clips: Sequence[Clip], part: Path, progress: Progress | None) -> float:
    """Copy every clip's packets into ``part`` one after another; the joined length in seconds."""
    import av

    offset = Fraction(0)  # where the next clip starts, in seconds
    last_dts: dict[str, Fraction] = {}
    with av.open(str(part), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        outs: dict[str, Any] = {}
        for clip in clips:
            with av.open(str(clip.path)) as src:
                ins: dict[str, Any] = {"video": src.streams.video[0]}
                if clip.audio is not None:
                    ins["audio"] = src.streams.audio[0]
                if not outs:
                    for kind, stream in ins.items():
                        outs[kind] = out.add_stream_from_template(stream)
                        outs[kind].time_base = stream.time_base
                try:
                    offset = _copy_clip(src, ins, outs, out, offset, last_dts, first=clip.index == 1)
                except av.FFmpegError:
                    raise _bad(
                        clip.index, len(clips), clip.path, "could not be read to the end (is it damaged?)"
                    ) from None
            if progress is not None:
                progress(clip.index / len(clips) * 0.98)
    return float(offset)


def _copy_clip(
    src: Any,
    ins: dict[str, Any],
    outs: dict[str, Any],
    out: Any,
    offset: Fraction,
    last_dts: dict[str, Fraction],
    *,
    first: bool,
) -> Fraction:
    """Mux one clip's packets shifted to start at ``offset``; return where its video ends."""
    video = ins["video"]
    start = Fraction(video.start_time or 0) * video.time_base
    shift = offset - start
    kinds = {stream.index: kind for kind, stream in ins.items()}
    pending: list[Any] = []  # audio packets seen before the first video packet fixes ``shift``
    settled = False
    end = offset
    for packet in src.demux(list(ins.values())):
        if packet.dts is None or packet.pts is None:
            continue  # the demuxer's end-of-stream marker
        kind = kinds[packet.stream.index]
        tb = packet.time_base
        if kind == "audio" and not first and packet.pts * tb < start:
            continue  # AAC priming of a later clip: it would overlap the previous clip's audio
        if not settled:
            if kind != "video":
                pending.append(packet)
                continue
            previous = last_dts.get("video")
            if previous is not None and packet.dts * tb + shift <= previous:
                shift = previous - packet.dts * tb + tb  # keep decode order strictly increasing
            settled = True
            for held in pending:
                _mux(out, held, outs["audio"], shift, last_dts, "audio")
        if kind == "video":
            frame_s = packet.duration * tb if packet.duration else 1 / Fraction(video.average_rate or 24)
            end = max(end, packet.pts * tb + shift + frame_s)
        _mux(out, packet, outs[kind], shift, last_dts, kind)
    return end


def _mux(out: Any, packet: Any, stream: Any, shift: Fraction, last_dts: dict[str, Fraction], kind: str) -> None:
    tb = packet.time_base
    ticks = round(shift / tb)
    dts = (packet.dts + ticks) * tb
    if kind in last_dts and dts <= last_dts[kind]:
        return  # audio overlapping the previous clip's tail (video was shifted clear above)
    packet.dts += ticks
    packet.pts += ticks
    packet.stream = stream
    last_dts[kind] = dts
    out.mux(packet)
