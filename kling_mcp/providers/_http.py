"""HTTP plumbing shared by the adapters: one place where transport failures and HTTP statuses
become the error vocabulary. Adapters pass a ``describe`` function that pulls the provider's own
message out of an error body; everything else (status -> class, Retry-After, redaction, whether
the provider may have accepted a submit) is decided here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .. import errors
from ..catalog import PROVIDERS

Describe = Callable[[Any], str | None]


def env_key(provider: str) -> str:
    return PROVIDERS[provider].env_key or ""


def auth_headers(api_key: str | None) -> dict[str, str]:
    return (
        {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        if api_key
        else {"Content-Type": "application/json"}
    )


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return response.text


def error_for_status(
    provider: str,
    response: httpx.Response,
    *,
    submit: bool,
    describe: Describe | None = None,
    secrets: tuple[str, ...] = (),
) -> errors.ProviderError:
    """Map a non-2xx response to the error vocabulary (the caller raises it)."""
    status = response.status_code
    body = _body(response)
    detail = (describe(body) if describe else None) or (body if isinstance(body, str) else json.dumps(body))
    detail = errors.redact(str(detail).strip() or response.reason_phrase, secrets)
    where = f"{provider} answered HTTP {status}: {detail}"
    key = env_key(provider)
    if status == 401:
        return errors.AuthenticationFailed(
            f"{provider} rejected the API key ({detail}).",
            may_have_accepted=False,
            hint=f"Set a valid {key} in the server's environment and restart the server.",
        )
    if status == 402:
        return errors.InsufficientCredits(
            f"{provider} says the account has insufficient credits: {detail}", may_have_accepted=False
        )
    if status == 403:
        low = detail.lower()
        if "credit" in low or "balance" in low or "quota" in low:
            return errors.InsufficientCredits(
                f"{provider} says the account is out of credits: {detail}", may_have_accepted=False
            )
        return errors.AuthenticationFailed(
            f"{provider} refused access with this key: {detail}",
            may_have_accepted=False,
            hint=f"Check that {key} may use this model, then restart the server.",
        )
    if status == 404:
        return errors.RemoteNotFound(where, may_have_accepted=False)
    if status == 408 or status == 504:
        return errors.ProviderTimeout(where, may_have_accepted=not submit or status == 504)
    if status == 429:
        return errors.RateLimited(
            where, retry_after=parse_retry_after(response.headers.get("Retry-After")), may_have_accepted=False
        )
    if status >= 500:
        # A 500/502 after a submit was sent says nothing about whether the service (or the one behind a
        # gateway) queued it; a 503 says it was not handled.
        return errors.ProviderUnavailable(
            where,
            may_have_accepted=submit and status != 503,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    return errors.ProviderRejected(where, may_have_accepted=False)


async def request(
    client: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    *,
    submit: bool = False,
    describe: Describe | None = None,
    secrets: tuple[str, ...] = (),
    **kwargs: Any,
) -> Any:
    """Send one request and return its decoded JSON body, or raise a ``ProviderError``.

    ``submit`` marks requests that may start a billed job: a timeout after the request was sent
    is then reported as ``may_have_accepted=True``, so the caller neither resubmits nor fails over.
    """
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.ConnectError as exc:
        raise errors.ProviderUnavailable(
            f"could not connect to {provider}: {type(exc).__name__}", may_have_accepted=False
        ) from None
    except (httpx.ConnectTimeout, httpx.PoolTimeout):
        raise errors.ProviderUnavailable(f"timed out connecting to {provider}", may_have_accepted=False) from None
    except httpx.TimeoutException:
        raise errors.ProviderUnavailable(f"{provider} did not answer in time", may_have_accepted=submit) from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise errors.ProviderUnavailable(
            f"the connection to {provider} broke: {type(exc).__name__}", may_have_accepted=submit
        ) from None
    except httpx.HTTPError as exc:
        raise errors.ProviderUnavailable(
            f"request to {provider} failed: {type(exc).__name__}", may_have_accepted=submit
        ) from None
    if response.status_code >= 400:
        raise error_for_status(provider, response, submit=submit, describe=describe, secrets=secrets)
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise errors.ProviderUnavailable(
            f"{provider} answered HTTP {response.status_code} with a body that is not JSON: "
            f"{errors.redact(response.text[:120], secrets)!r}",
            may_have_accepted=submit,
        ) from None
