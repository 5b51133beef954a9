"""The texts the model reads: server instructions, tool descriptions (limits derived from the
catalog and the configured providers) and the storyboard prompt."""

from __future__ import annotations

from . import catalog
from .config import WAIT_DEFAULT_S, WAIT_MAX_S, Settings

INSTRUCTIONS = (
    "Generate and edit videos with Kling Video O1. Videos take 1-5 minutes: generate_video/edit_video wait up "
    f"to wait_seconds (default {WAIT_DEFAULT_S:g}) and then return a job that keeps running in the background; "
    "call check_job with its job_id (wait_seconds up to 50) until status is succeeded, failed or cancelled. "
    "Never call generate_video again to 'retry' a running job: that bills twice. Use estimate_cost before "
    "expensive requests. Finished videos are saved locally and returned as kling:// resource links."
)

STORYBOARD = (
    "Plan a {shots}-shot video about: {topic}.\n"
    "1. Write one prompt per shot (subject, action, camera, lighting), keeping characters and setting "
    "consistent.\n"
    "2. Call estimate_cost for shot 1 and tell the user the total for all shots.\n"
    "3. Generate shot 1 with generate_video (aspect_ratio={aspect_ratio}). For every next shot, pass the "
    "previous shot's last frame as first_frame so the shots join up (continuity), and use the same "
    "idempotency_key scheme (e.g. '<topic>-shot-<n>') so a retry never pays twice.\n"
    "4. While a job is running, call check_job with wait_seconds=45 until it succeeds.\n"
    "5. Finish with the list of resource links in shot order."
)


def _providers_text(settings: Settings) -> str:
    lines = []
    for name in settings.offered:
        entry = catalog.PROVIDERS[name]
        lines.append(catalog.describe_provider(entry))
    missing = [n for n in catalog.REAL_PROVIDERS if n not in settings.offered]
    text = "\n".join(lines)
    if missing:
        keys = ", ".join(f"{n} ({catalog.PROVIDERS[n].env_key})" for n in missing)
        text += f"\nNot configured on this server: {keys}."
    return text


def tool_descriptions(settings: Settings) -> dict[str, str]:
    limits = _providers_text(settings)
    cancellable = [name for name, entry in catalog.PROVIDERS.items() if entry.can_cancel]
    wait = (
        f"Waits up to wait_seconds (default {WAIT_DEFAULT_S:g}, max {WAIT_MAX_S:g}) with progress "
        "notifications, then returns the job; if it is not finished, call check_job with the job_id. "
        "A finished job returns the local file path, a kling:// resource link and a poster frame."
    )
    money = (
        "Every argument is checked against the chosen provider's limits before anything is billed; a "
        "violation comes back as an error naming the rule and the providers that would accept the request. "
        "provider='auto' picks the cheapest configured provider that accepts it ('local' renders a free "
        "preview on this machine, not Kling). Repeating a call with the same idempotency_key, or an "
        "identical request while the first is running, returns the existing job instead of paying twice."
    )
    if settings.confirm_above_usd is not None:
        money += (
            f" A request quoted above ${settings.confirm_above_usd:g} (KLING_MCP_CONFIRM_ABOVE_USD) needs the user's "
            "consent: the client asks them, or the call fails with [confirmation_required] and the quote; repeat it "
            "with confirm_cost_usd=<the quote> only after the user agreed."
        )
    return {
        "generate_video": (
            "Generate a video with Kling Video O1 (typically 1-5 minutes). The mode follows the inputs: no images "
            "= text-to-video; first_frame (+ last_frame) = image-to-video; reference_images / reference_video = "
            f"reference-to-video (keep characters, props, scenes). Images/videos: http(s) URLs, data: URIs or "
            f"local file paths. {wait} {money}\nLimits per provider:\n{limits}"
        ),
        "edit_video": (
            "Edit an existing video with an instruction (restyle, replace, add or remove things); the output "
            "has the input's length. Optional reference_images guide the new look; keep_original_sound keeps "
            "the audio; fast=true uses the faster edit mode where a provider has one (it accepts longer inputs). "
            f"The input video's length is checked against the provider's range before submitting. {wait} "
            f"{money}\nLimits per provider:\n{limits}"
        ),
        "check_job": (
            "Get a job's status, progress, cost and videos. Pass wait_seconds (up to 50) to wait for it to "
            "finish while receiving progress notifications; call again while status is pending, submitted, "
            "running or downloading. next_action says what to do. Results survive server restarts."
        ),
        "estimate_cost": (
            "Quote a generate_video or edit_video request on every provider without spending or calling any "
            "provider: cost_usd, its basis (published / inferred / unknown), whether each provider supports the "
            "request and why not, the provider 'auto' would pick, and the remaining budget. For edits, the input "
            "video's length is read from the file or URL, or pass video_duration_s."
        ),
        "list_jobs": "List jobs newest first (default 50), optionally only those with one status.",
        "cancel_job": (
            f"Cancel a job. Where the provider supports it ({', '.join(cancellable)}) the job is stopped there; "
            "elsewhere the server stops tracking it and says plainly that the provider may keep running and "
            "billing it."
        ),
    }
