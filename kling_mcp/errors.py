"""The error vocabulary of kling-mcp.

Every error the server can report is a :class:`KlingError` subclass with a stable ``code``, a
``retryable`` flag and a ``hint`` that says what to change. ``str(exc)`` is the one sentence the
model reads, e.g. ``[invalid_request] runpod needs 1-10 reference_images; got 0. Hint: ...``.

Provider adapters map wire failures onto these classes at the seam (``providers/_http.py``);
nothing above the seam inspects HTTP status codes or provider bodies.
"""

from __future__ import annotations

import re
from typing import Any

_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"(?i)(api[_-]?key[\"'=:\s]+)[A-Za-z0-9._~+/=-]{6,}"),
]

MAX_PROVIDER_TEXT = 400


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove API keys and bearer tokens from ``text`` and truncate provider bodies."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    if len(text) > MAX_PROVIDER_TEXT:
        text = text[: MAX_PROVIDER_TEXT - 1] + "…"
    return text


class KlingError(Exception):
    """Base class: a failure with a stable code, a retry flag and a hint."""

    code: str = "error"
    retryable: bool = False
    default_hint: str = ""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        if retryable is not None:
            self.retryable = retryable
        self.details = details or {}

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        if self.hint:
            text += f" Hint: {self.hint}"
        return text

    def to_info(self) -> dict[str, Any]:
        """The JSON shape stored on jobs and returned in ``error``."""
        return {"code": self.code, "message": self.message, "retryable": self.retryable, "hint": self.hint}


# --- bad calls (tool errors) -------------------------------------------------------------------


class InvalidRequest(KlingError):
    code = "invalid_request"
    default_hint = "Fix the arguments named above and call again; nothing was submitted or billed."


class InvalidInputFile(InvalidRequest):
    code = "invalid_input_file"
    default_hint = "Pass an http(s) URL, a data: URI, or the path of a readable image/video file."


class UnsupportedByProvider(InvalidRequest):
    code = "unsupported"
    default_hint = "Choose one of the providers named above, or change the request to fit this provider."


class IdempotencyConflict(InvalidRequest):
    code = "idempotency_conflict"
    default_hint = "Use a new idempotency_key for a different request, or repeat the original request exactly."


class NotConfigured(KlingError):
    code = "not_configured"
    default_hint = "Set the provider's API key in the server's environment and restart it, or use provider='local'."


class BudgetExceeded(KlingError):
    code = "budget_exceeded"
    default_hint = "Shorten the video, use a cheaper tier or provider, or raise the limit in the server's environment."


class ConfirmationRequired(KlingError):
    """The request is quoted above ``KLING_MCP_CONFIRM_ABOVE_USD`` and the user has not agreed yet.

    ``details`` carries ``cost_usd`` (None when the provider gives no price), ``provider``,
    ``basis`` and ``threshold_usd``, so the MCP edge can ask the user instead.
    """

    code = "confirmation_required"
    default_hint = "Ask the user; if they agree, repeat the same call with confirm_cost_usd set to the quote."


class ConfirmationDeclined(KlingError):
    code = "confirmation_declined"
    default_hint = "Nothing was submitted or billed. Do not submit again unless the user asks for it."


class UnknownJob(KlingError):
    code = "unknown_job"
    default_hint = "Call list_jobs to see the job ids this server knows."


# --- provider and job failures (raised at the seam, stored on jobs) ----------------------------


class ProviderError(KlingError):
    """The request to the provider failed (as opposed to the job failing at the provider).

    ``may_have_accepted`` is False only when the provider cannot have started (and billed) the
    job, e.g. the connection was refused; failover is allowed only then.
    """

    code = "provider_error"
    retryable = True
    default_hint = "This is usually temporary; call check_job again later."

    def __init__(
        self, message: str, *, may_have_accepted: bool = True, retry_after: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.may_have_accepted = may_have_accepted
        self.retry_after = retry_after


class AuthenticationFailed(ProviderError):
    code = "auth_failed"
    retryable = False
    default_hint = "Check the provider's API key in the server's environment, then restart the server."


class InsufficientCredits(ProviderError):
    code = "insufficient_credits"
    retryable = False
    default_hint = "Top up the provider account, or choose another configured provider."


class RateLimited(ProviderError):
    code = "rate_limited"
    default_hint = "The provider is rate limiting this key; wait a minute and try again."


class ProviderUnavailable(ProviderError):
    code = "provider_unavailable"
    default_hint = "The provider is down or overloaded; try again later or choose another provider."


class ProviderRejected(ProviderError):
    code = "provider_rejected"
    retryable = False
    default_hint = "Change the parameter the provider named and submit again."


class ContentPolicy(ProviderError):
    code = "content_policy"
    retryable = False
    default_hint = "Rephrase the prompt or use other input images; the provider's safety filter blocked this."


class ProviderTimeout(ProviderError):
    code = "provider_timeout"
    default_hint = "The provider did not finish in time; submit again later (a new job is billed again)."


class ProviderProtocol(ProviderError):
    code = "provider_protocol"
    retryable = False
    default_hint = "The provider answered in a way kling-mcp does not understand; report it with the job id."


class RemoteNotFound(ProviderError):
    code = "remote_not_found"
    retryable = False
    default_hint = "The provider no longer knows this job (its result expired); generate it again."


class DownloadFailed(KlingError):
    code = "download_failed"
    retryable = True
    default_hint = "The provider's video link failed; call check_job again to retry the download."


class JobInterrupted(KlingError):
    code = "interrupted"
    retryable = True
    default_hint = (
        "The server stopped before the provider acknowledged the job, so it may or may not be "
        "billed; check the provider's dashboard before submitting again."
    )


class JobDeadline(KlingError):
    code = "deadline_exceeded"
    retryable = True
    default_hint = "The job took longer than the server waits for; generate again or try another provider."


class AssemblyFailed(KlingError):
    code = "assembly_failed"
    retryable = True
    default_hint = "Check that every input is a playable video, then call assemble_video (or retake_shot) again."


class JobFailed(KlingError):
    """A job failure reported by the provider (a fact about the job, not the request)."""

    code = "job_failed"
    default_hint = "Change the prompt or inputs and generate again."


# --- the shared store --------------------------------------------------------------------------


class StoreUnavailable(KlingError):
    """The job database (``KLING_MCP_STORE_URL``) cannot be reached or refused the operation."""

    code = "store_unavailable"
    retryable = True
    default_hint = (
        "The job database is down or unreachable; nothing stored is lost. Call again in a few seconds, "
        "and if it persists check the database behind KLING_MCP_STORE_URL."
    )
