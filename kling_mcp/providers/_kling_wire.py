"""Kling's official wire format (providers.md §6): the JWT, the response envelope, its error codes.

Every response is ``{"code", "message", "request_id", "data"}``; ``code`` 0 is success and every
other code has a documented HTTP status and meaning (§6.5), which :func:`error_for_code` turns into
the error vocabulary. The token is a JWT (HS256) built with the standard library and signed with
the secret key: ``iss`` is the access key, ``nbf`` five seconds ago, ``exp`` thirty minutes ahead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .. import errors
from .base import Failed

NAME = "kling"
TOKEN_TTL_S = 1800
TOKEN_SKEW_S = 5
DEFAULT_RETRY_AFTER_S = 1.0  # Kling: "recommended initial delay >= 1 second"
KEYS_HINT = "Set KLING_ACCESS_KEY and KLING_SECRET_KEY (or KLING_API_KEY for a gateway) and restart the server."


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def jwt_token(access_key: str, secret_key: str, now: float) -> str:
    """A fresh HS256 JWT for one request: ``{"iss": access_key, "exp": now+1800, "nbf": now-5}``."""
    header = {"alg": "HS256", "typ": "JWT"}
    payload = {"iss": access_key, "exp": int(now) + TOKEN_TTL_S, "nbf": int(now) - TOKEN_SKEW_S}
    signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload))
    signature = hmac.new(secret_key.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


# --- wire models -------------------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Envelope(_Wire):
    code: int | None = None
    message: str | None = None
    request_id: str | None = None
    data: Any = None


class TaskVideo(_Wire):
    id: str | None = None
    url: str | None = None
    duration: str | float | None = None


class TaskResult(_Wire):
    videos: list[TaskVideo] = []


class TaskInfo(_Wire):
    external_task_id: str | None = None


class Task(_Wire):
    task_id: str | None = None
    task_status: str | None = None
    task_status_msg: str | None = None
    task_info: TaskInfo | None = None
    task_result: TaskResult | None = None
    final_unit_deduction: str | float | None = None


def envelope_of(body: Any) -> Envelope | None:
    """The envelope of a decoded body, or None when it is not one (e.g. a proxy's HTML page)."""
    if not isinstance(body, dict) or "code" not in body:
        return None
    try:
        return Envelope.model_validate(body)
    except ValidationError:
        return None


def task_of(envelope: Envelope, secrets: tuple[str, ...]) -> Task:
    if not isinstance(envelope.data, dict):
        raise errors.ProviderProtocol(
            f"kling answered code 0 without a task: {errors.redact(str(envelope.data)[:160], secrets)}"
        )
    try:
        return Task.model_validate(envelope.data)
    except ValidationError:
        raise errors.ProviderProtocol(
            f"kling sent a task in an unexpected shape: {errors.redact(str(envelope.data)[:160], secrets)}"
        ) from None


def describe(body: Any) -> str | None:
    """Kling's own words from an error body: ``message (code N, request_id R)``."""
    envelope = envelope_of(body)
    if envelope is None:
        return None
    bits = [f"code {envelope.code}"] + ([f"request_id {envelope.request_id}"] if envelope.request_id else [])
    return f"{(envelope.message or 'no message').strip()} ({', '.join(bits)})"


# --- error codes -------------------------------------------------------------------------------------


def error_for_code(code: int, detail: str, *, submit: bool, retry_after: float | None) -> errors.ProviderError | None:
    """The error for one of Kling's documented codes (None for a code this table does not know).

    Every 1xxx code is a refusal: nothing was created or billed. Of the 5xxx codes only 5002 (a
    timeout) leaves it open whether a submit was taken.
    """
    said = f"kling refused the request: {detail}"
    if 1000 <= code <= 1002:
        return errors.AuthenticationFailed(
            f"kling rejected the credentials: {detail}", may_have_accepted=False, hint=KEYS_HINT
        )
    if code in (1003, 1004):
        return errors.AuthenticationFailed(
            f"kling refused the token's validity window: {detail}",
            may_have_accepted=False,
            hint="Set this machine's clock right: each token is valid from 5 s before it is made to 30 min after.",
        )
    if code == 1100:
        return errors.AuthenticationFailed(
            f"kling reports an account exception: {detail}",
            may_have_accepted=False,
            hint="Check the Kling account's status in Kling's developer console.",
        )
    if code in (1101, 1102):
        return errors.InsufficientCredits(
            f"kling says the account cannot pay: {detail}",
            may_have_accepted=False,
            hint=(
                "Buy a Kling resource pack (or enable post-payment) in Kling's developer console, or "
                "choose another provider."
                if code == 1102
                else "Settle the Kling account's arrears, or choose another provider."
            ),
        )
    if code == 1103:
        return errors.AuthenticationFailed(
            f"kling does not let this account use this API or model: {detail}",
            may_have_accepted=False,
            hint="Check the account's permissions for kling-video-o1 in Kling's developer console.",
        )
    if code == 1304:
        return errors.AuthenticationFailed(
            f"kling's IP whitelist refused this server: {detail}",
            may_have_accepted=False,
            hint="Add this server's public IP address to the Kling account's IP whitelist.",
        )
    if code in (1200, 1201, 1300):
        return errors.ProviderRejected(said, may_have_accepted=False)
    if code in (1202, 1203):
        return errors.RemoteNotFound(said, may_have_accepted=False)
    if code == 1301:
        return errors.ContentPolicy(
            f"kling's content security policy blocked the request: {detail}", may_have_accepted=False
        )
    if code == 1302:
        return errors.RateLimited(
            f"kling is rate limiting this account: {detail}",
            may_have_accepted=False,
            retry_after=retry_after or DEFAULT_RETRY_AFTER_S,
            hint="Wait a little and try again.",
        )
    if code == 1303:
        return errors.RateLimited(
            f"every concurrency slot of the Kling resource pack is busy: {detail}",
            may_have_accepted=False,
            retry_after=retry_after or DEFAULT_RETRY_AFTER_S,
            hint="Wait for running Kling tasks to finish (check_job), then submit again; or buy a pack with more "
            "concurrency.",
        )
    if code in (5000, 5001):
        return errors.ProviderUnavailable(
            f"kling had an internal error: {detail}", may_have_accepted=False, retry_after=retry_after
        )
    if code == 5002:
        return errors.ProviderTimeout(f"kling timed out inside (a backlog): {detail}", may_have_accepted=submit)
    return None


# --- task failures -----------------------------------------------------------------------------------

_POLICY_WORDS = ("risk", "safety", "sensitive", "policy", "violat", "moderation", "inappropriate")


def task_failure(message: str | None, secrets: tuple[str, ...]) -> Failed:
    """A task Kling reports ``failed``: its ``task_status_msg`` as the message (Kling bills none)."""
    text = errors.redact((message or "").strip(), secrets) or "kling reports the task failed without a reason."
    if any(word in text.lower() for word in _POLICY_WORDS):
        return Failed(
            code=errors.ContentPolicy.code,
            message=f"kling's content review stopped the video: {text}",
            hint=errors.ContentPolicy.default_hint + " Kling does not bill failed tasks.",
        )
    return Failed(
        code=errors.JobFailed.code,
        message=f"kling reports the task failed: {text}",
        retryable=True,
        hint="Kling does not bill failed tasks: generate again, and change the prompt or inputs if it fails again.",
    )
