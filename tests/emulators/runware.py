"""A loopback emulator of Runware's REST API for Kling VIDEO O1 (providers.md §2, the seed pages).

``POST /v1`` takes a JSON array of tasks (``authentication``, ``videoInference``, ``getResponse``,
``imageUpload``, ``mediaStorage``); result videos are real MP4 bytes at ``/files/{name}``.
It enforces the documented validation rules and sizes, bills with the *published* per-second
rates (its own table, independent of kling_mcp's catalog, so tests can compare the two), and
advances one step per ``getResponse``. Fault knobs live on :class:`RunwareState`. The validation
rules and the rate table live in ``_runware_rules.py``.

Where the docs are silent the choices are marked [INFERRED]: the HTTP status of an ``errors``
envelope (400, as in Runware's error table), the rejection of a reused ``taskUUID``
(``duplicateTaskUUID``), the code for an unknown task (``taskFailedOrNotFound``), the 5|10 s rule
for text-to-video (providers.md §8.8), and serving results at a reduced resolution (long side
320 px) with the requested aspect ratio.

Run standalone: ``python -m tests.emulators.runware --port 0`` prints ``READY http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators._files import FileHost
from tests.emulators._media import mp4_bytes
from tests.emulators._runware_rules import INPUT_KEYS as INPUT_KEYS  # re-exported
from tests.emulators._runware_rules import PRICES as PRICES  # re-exported
from tests.emulators._runware_rules import PRO as PRO  # re-exported
from tests.emulators._runware_rules import SIZES as SIZES  # re-exported
from tests.emulators._runware_rules import TOP_LEVEL as TOP_LEVEL  # re-exported
from tests.emulators._runware_rules import UUID4, Reject, check_inference
from tests.emulators._server import run_forever

INVALID_KEY = {"code": "invalidApiKey", "message": "Invalid API key. Get one at https://my.runware.ai/signup",
               "parameter": "apiKey", "taskType": "authentication"}
HTTP_FAULTS: dict[int, dict[str, Any]] = {
    401: INVALID_KEY,
    402: {"code": "insufficientCredits", "message": "Insufficient credits. Top up at https://my.runware.ai/wallet"},
    403: {"code": "forbidden", "message": "This API key has no permission for this model."},
    429: {"code": "rateLimitExceeded", "message": "Too many requests."},
}


@dataclass
class Upload:
    media: Literal["image", "video"]
    name: str                      # file name on the FileHost
    width: int | None = None
    height: int | None = None
    seconds: float | None = None


@dataclass
class Task:
    task_uuid: str
    model: str
    number_results: int
    seconds: float
    rate: float
    include_cost: bool
    size: tuple[int, int]
    polls: int = 0
    delivered: list[dict[str, Any]] = field(default_factory=list)
    error_code: str | None = None
    never_finish: bool = False

    @property
    def cost(self) -> float:
        return round(self.rate * self.seconds, 4)


@dataclass
class RunwareState:
    """Everything the emulator knows, plus the knobs tests turn.

    Knobs: ``http_faults`` (HTTP statuses for the next POSTs, one each: 401/402/403/429 answer
    Runware's error envelope, 429 with ``Retry-After: retry_after_s``; 500/502/503 a plain body),
    ``malformed_next`` (answer that many POSTs with broken JSON), ``task_error_code`` (new tasks fail
    with that code after processing, as an ``error`` item or an ``errors`` envelope per
    ``task_error_form``), ``never_finish``, ``processing_polls``, ``results_per_poll``,
    ``result_ttl_s`` (link lifetime), ``default_input_video_s`` (billed length of an edit whose
    input video is not hosted here), ``ack_form`` (``item`` or the SDK mocks' ``empty``), and on
    ``files``: ``truncate_next``, ``expire_all``.
    """

    api_keys: set[str] = field(default_factory=lambda: {"rw-test-key"})
    files: FileHost = field(default_factory=FileHost)
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth_modes: list[str] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    http_faults: list[int] = field(default_factory=list)
    retry_after_s: int = 2
    malformed_next: int = 0
    task_error_code: str | None = None
    task_error_form: Literal["item", "envelope"] = "item"
    never_finish: bool = False
    processing_polls: int = 1
    results_per_poll: int = 1
    result_ttl_s: float = 3600.0
    default_input_video_s: float = 6.0
    ack_form: Literal["item", "empty"] = "item"

    def sent(self, task_type: str, task_uuid: str | None = None) -> list[dict[str, Any]]:
        """The recorded tasks of ``task_type`` (for one taskUUID when given)."""
        return [r for r in self.requests
                if r.get("taskType") == task_type and (task_uuid is None or r.get("taskUUID") == task_uuid)]

    def billed(self, task_uuid: str) -> float:
        """What the delivered results of a task cost (the sum of their ``cost``)."""
        task = self.tasks[task_uuid]
        return round(task.cost * len(task.delivered), 6)


def create_app(state: RunwareState | None = None) -> Starlette:
    """The emulator app; its state is ``app.state.emulator`` (replace it to reset the emulator)."""

    async def files(request: Request) -> Response:
        return await request.app.state.emulator.files.handle(request)

    async def api(request: Request) -> Response:
        return await _handle(request.app.state.emulator, request)

    app = Starlette(routes=[Route("/v1", api, methods=["POST"]), Route("/files/{name}", files, methods=["GET"])])
    app.state.emulator = state or RunwareState()
    return app


# --- dispatch ---------------------------------------------------------------------------------


async def _handle(state: RunwareState, request: Request) -> Response:
    if state.http_faults:
        status = state.http_faults.pop(0)
        if status in HTTP_FAULTS:
            headers = {"Retry-After": str(state.retry_after_s)} if status == 429 else {}
            return JSONResponse({"errors": [HTTP_FAULTS[status]]}, status_code=status, headers=headers)
        return Response(f"{status} upstream error", status_code=status, media_type="text/plain")
    if state.malformed_next > 0:
        state.malformed_next -= 1
        return Response('{"data": [{"taskType": "videoInference", "taskUU', media_type="application/json")
    try:
        tasks = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _errors([{"code": "invalidJSON", "message": "The request body is not valid JSON."}])
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        return _errors([{"code": "invalidRequestBody", "message": "The request body must be a JSON array of tasks."}])
    key, mode = None, "none"
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        key, mode = header[7:].strip(), "header"
    if tasks and tasks[0].get("taskType") == "authentication":
        key, mode = tasks.pop(0).get("apiKey"), "element"
    if key is None or key not in state.api_keys:
        return JSONResponse({"errors": [INVALID_KEY]}, status_code=401)
    state.auth_modes.append(mode)
    base = str(request.base_url).rstrip("/")
    data: list[dict[str, Any]] = []
    errs: list[dict[str, Any]] = []
    for task in tasks:
        state.requests.append(dict(task))
        task_type, task_uuid = task.get("taskType"), task.get("taskUUID")
        try:
            if not isinstance(task_uuid, str) or not UUID4.match(task_uuid):
                raise Reject("invalidTaskUUID", "taskUUID must be a UUID v4.", "taskUUID")
            if task_type == "videoInference":
                data.extend(await _inference(state, task))
            elif task_type == "getResponse":
                items, task_errors = await _get_response(state, task_uuid, base)
                data.extend(items)
                errs.extend(task_errors)
            elif task_type == "imageUpload":
                data.append(await _image_upload(state, task, base))
            elif task_type == "mediaStorage":
                data.append(await _media_storage(state, task, base))
            else:
                raise Reject("invalidTaskType", f"Unknown taskType {task_type!r}.", "taskType")
        except Reject as rejected:
            errs.append({**rejected.error, "taskType": task_type, "taskUUID": task_uuid})
    if errs:
        return _errors(errs, data)
    return JSONResponse({"data": data})


def _errors(errs: list[dict[str, Any]], data: list[dict[str, Any]] | None = None) -> JSONResponse:
    return JSONResponse({"errors": errs, **({"data": data} if data else {})}, status_code=400)


# --- videoInference (the rules and rates are in _runware_rules.py) ----------------------------


async def _inference(state: RunwareState, task: dict[str, Any]) -> list[dict[str, Any]]:
    task_uuid = task["taskUUID"]
    if task_uuid in state.tasks:
        raise Reject("duplicateTaskUUID", "A task with this taskUUID already exists.", "taskUUID")
    checked = check_inference(state, task)
    state.tasks[task_uuid] = Task(
        task_uuid=task_uuid, model=checked.model, number_results=task.get("numberResults", 1),
        seconds=checked.seconds, rate=checked.rate, include_cost=task.get("includeCost") is True,
        size=checked.size, error_code=state.task_error_code, never_finish=state.never_finish)
    if state.ack_form == "empty":
        return []
    return [{"taskType": "videoInference", "taskUUID": task_uuid}]


# --- getResponse ------------------------------------------------------------------------------


async def _get_response(state: RunwareState, task_uuid: str, base: str) -> tuple[list[dict], list[dict]]:
    task = state.tasks.get(task_uuid)
    if task is None:
        raise Reject("taskFailedOrNotFound", f"No task with taskUUID {task_uuid} was found.", "taskUUID")
    task.polls += 1
    head = {"taskType": "videoInference", "taskUUID": task_uuid}
    if not task.never_finish and task.polls > state.processing_polls:
        if task.error_code:
            error = {"code": task.error_code, "message": f"The task failed: {task.error_code}."}
            if state.task_error_form == "envelope":
                return [], [{**error, **head}]
            return [{**head, "status": "error", "error": error}], []
        while len(task.delivered) < min(task.number_results, (task.polls - state.processing_polls)
                                        * state.results_per_poll):
            data = await run_in_threadpool(mp4_bytes, task.seconds, *task.size, 12)
            name = state.files.add(data, ttl_s=state.result_ttl_s)
            video_uuid = str(uuid.uuid4())
            item = {**head, "status": "success", "videoUUID": video_uuid, "videoURL": f"{base}/files/{name}",
                    "seed": uuid.UUID(video_uuid).int % 2**31}
            if task.include_cost:
                item["cost"] = task.cost
            task.delivered.append(item)
    pending = task.number_results - len(task.delivered)
    return [*task.delivered, *({**head, "status": "processing"} for _ in range(pending))], []


# --- uploads ----------------------------------------------------------------------------------


async def _image_upload(state: RunwareState, task: dict[str, Any], base: str) -> dict[str, Any]:
    raw = _decode(task.get("image"), "image")
    info = await run_in_threadpool(_image_info, raw)
    if info is None:
        raise Reject("invalidImage", "image is not a decodable image (jpeg, png, webp, bmp or gif).", "image")
    image_uuid = _store(state, raw, Upload("image", "", *info))
    return {"taskType": "imageUpload", "taskUUID": task["taskUUID"], "imageUUID": image_uuid,
            "imageURL": f"{base}/files/{state.uploads[image_uuid].name}"}


async def _media_storage(state: RunwareState, task: dict[str, Any], base: str) -> dict[str, Any]:
    operation = task.get("operation")
    if operation == "delete":
        media_uuid = str(task.get("mediaUUID", "")).lower()
        if state.uploads.pop(media_uuid, None) is None:
            raise Reject("mediaNotFound", f"No media with UUID {media_uuid}.", "mediaUUID")
        return {"taskType": "mediaStorage", "taskUUID": task["taskUUID"], "operation": "delete",
                "mediaUUID": media_uuid}
    if operation != "upload":
        raise Reject("invalidOperation", "operation must be upload or delete.", "operation")
    raw = _decode(task.get("media"), "media")
    image = await run_in_threadpool(_image_info, raw)
    if image is not None:
        upload = Upload("image", "", *image)
    else:
        video = await run_in_threadpool(_video_info, raw)
        if video is None:
            raise Reject("invalidMedia", "media is not a decodable image or video.", "media")
        upload = Upload("video", "", *video)
    media_uuid = _store(state, raw, upload)
    return {"taskType": "mediaStorage", "taskUUID": task["taskUUID"], "mediaUUID": media_uuid,
            "mediaURL": f"{base}/files/{state.uploads[media_uuid].name}"}


def _decode(value: Any, parameter: str) -> bytes:
    if isinstance(value, str) and value.startswith("data:") and ";base64," in value:
        value = value.split(";base64,", 1)[1]
    try:
        if not isinstance(value, str):
            raise ValueError
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Reject(f"invalid{parameter.capitalize()}", f"{parameter} must be a data URI or base64 string.",
                     parameter) from None


def _store(state: RunwareState, raw: bytes, upload: Upload) -> str:
    suffix = ".mp4" if upload.media == "video" else ".img"
    upload.name = state.files.add(raw, ttl_s=30 * 24 * 3600.0, suffix=suffix,
                                  content_type="video/mp4" if upload.media == "video" else "image/png")
    media_uuid = str(uuid.uuid4())
    state.uploads[media_uuid] = upload
    return media_uuid


def _image_info(raw: bytes) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.format not in ("JPEG", "PNG", "WEBP", "BMP", "GIF"):
                return None
            return img.size
    except (UnidentifiedImageError, OSError):
        return None


def _video_info(raw: bytes) -> tuple[int, int, float] | None:
    import av

    try:
        with av.open(io.BytesIO(raw)) as container:
            stream = container.streams.video[0]
            seconds = container.duration / 1_000_000 if container.duration else float(
                stream.duration * stream.time_base)
            return stream.codec_context.width, stream.codec_context.height, round(seconds, 3)
    except (av.error.FFmpegError, IndexError, TypeError):
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Runware (Kling O1) emulator on loopback")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="rw-test-key")
    args = parser.parse_args(argv)
    run_forever(create_app(RunwareState(api_keys={args.api_key})), args.host, args.port)


if __name__ == "__main__":
    main()
