"""The texts the model reads: server instructions, tool descriptions (limits derived from the
catalog and the configured providers) and the storyboard prompt."""

from __future__ import annotations

from . import catalog
from .config import WAIT_DEFAULT_S, Settings
from .tool_limits import EDIT_OPS, GENERATE_OPS, provider_lines
from .vocabulary import ACTIVE_NAMES, TERMINAL_NAMES, Operation, spoken

INSTRUCTIONS = (
    "Generate and edit videos with Kling Video O1. Videos take 1-5 minutes: generate_video/edit_video wait up "
    f"to wait_seconds (default {WAIT_DEFAULT_S:g}) and then return a job that keeps running in the background; "
    f"call check_job with its job_id (wait_seconds up to 50) until status is {spoken(TERMINAL_NAMES)}. "
    "Never call generate_video again to 'retry' a running job: that bills twice. Use estimate_cost before "
    "expensive requests. Finished videos are saved locally and returned as kling:// resource links."
)

STORYBOARD = (
    "Plan a {shots}-shot video about: {topic}.\n"
    "1. Write one prompt per shot (subject, action, camera, lighting), keeping characters and setting "
    "consistent; put the shared look in style.\n"
    "2. Call generate_storyboard with the shots, aspect_ratio={aspect_ratio} and an idempotency_key (e.g. "
    "'<topic>-board'). It checks every shot and quotes the whole board before anything is billed; with "
    "continuity='chain' (the default) each shot starts from the previous shot's last frame, and the finished "
    "shots are joined into one MP4.\n"
    "3. While it runs, call check_job with its job_id and wait_seconds=45 until it succeeds or fails.\n"
    "4. If a shot is wrong or failed, call retake_shot with the storyboard's job_id and the shot number (a new "
    "prompt is allowed; cascade=true remakes the later chained shots).\n"
    "5. Finish with the assembled video's resource link."
)


def _providers_text(settings: Settings, ops: tuple[Operation, ...]) -> str:
    """One line per offered provider (tiers merged), then the real providers not configured here."""
    text = provider_lines(settings.configured, ops, local_too="local" in settings.offered)
    missing = [n for n in catalog.REAL_PROVIDERS if n not in settings.offered]
    if missing:
        keys = ", ".join(f"{n} ({catalog.PROVIDERS[n].env_key})" for n in missing)
        text += f"\nNot configured here: {keys}."
    return text


def tool_descriptions(settings: Settings) -> dict[str, str]:
    cancellable = [name for name, entry in catalog.PROVIDERS.items() if entry.can_cancel]
    money = (
        "Checked against the provider's limits before anything is billed; 'auto' picks the cheapest provider that "
        "accepts it; the same idempotency_key, or an identical running request, returns that job instead of "
        "billing twice. A finished job gives the file path, a kling:// link and a poster frame."
    )
    if settings.confirm_above_usd is not None:
        money += (
            f" Above ${settings.confirm_above_usd:g} (KLING_MCP_CONFIRM_ABOVE_USD) the user is asked first, or the "
            "call fails with [confirmation_required] and the quote: repeat it with confirm_cost_usd=<the quote> only "
            "once the user agreed."
        )
    legend = (
        "Per provider (tiers; options, else 1 video, no seed/negative_prompt): operation, seconds, images, "
        "USD/s by tier (~ inferred):"
    )
    edit_legend = "Per provider (tiers; options): input length, images, USD/s by tier (~ inferred):"
    return {
        "generate_video": (
            "Generate a video with Kling Video O1 (1-5 minutes). Inputs set the mode: none = text-to-video; "
            "first_frame (+ last_frame) = image-to-video; reference_images/reference_video = reference-to-video. "
            "Images and videos: http(s) URLs, data: URIs, local paths or results (kling://jobs/ID/videos/N; "
            ".../last-frame as an image). "
            f"{money}\n{legend}\n{_providers_text(settings, GENERATE_OPS)}"
        ),
        "edit_video": (
            "Edit a video with an instruction (restyle, replace, add or remove things); the output has the input's "
            "length. reference_images guide the new look. Inputs, waiting, checks, 'auto', idempotency_key and "
            "confirm_cost_usd work as in generate_video.\n"
            f"{edit_legend}\n{_providers_text(settings, EDIT_OPS)}"
        ),
        "check_job": (
            "Get a job's status, progress, cost and videos; wait_seconds waits for it to finish, with progress "
            f"notifications. Call again while it is {spoken(ACTIVE_NAMES)}; next_action says "
            "what to do. Jobs survive restarts."
        ),
        "estimate_cost": (
            "Quote a generate_video or edit_video request without spending or calling any provider: per provider "
            "cost_usd, its basis (published / inferred / unknown) and whether it accepts the request (if not, "
            "why), the provider 'auto' would pick, and the budget left."
        ),
        "list_jobs": "List jobs newest first, optionally only those in one status.",
        "generate_storyboard": (
            "A multi-shot video in one call, for 2+ connected shots (one clip: generate_video). Every shot is "
            "checked and the board quoted before billing; shots run in the background (chain: one after another; "
            "none: at once) and are joined into one MP4. Returns a job with shots; poll check_job."
        ),
        "retake_shot": (
            "Redo one shot of a finished storyboard (new prompt or duration allowed) and join again; the old take "
            "is kept. Returns a new storyboard job."
        ),
        "assemble_video": (
            "Join 2-50 videos (kling:// results, paths, URLs) into one MP4 on this machine, free; re-encoded to one "
            "size only when they differ."
        ),
        "cancel_job": (
            f"Cancel a job. Where the provider supports it ({', '.join(cancellable)}) the job is stopped there; "
            "elsewhere the server stops tracking it and says plainly that the provider may keep running and "
            "billing it. A storyboard cancels its unfinished shots."
        ),
    }
