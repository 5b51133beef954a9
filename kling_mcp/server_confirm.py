"""Asking the user before money is spent: the MCP edge of the confirmation guard.

The service refuses a request quoted above ``KLING_MCP_CONFIRM_ABOVE_USD`` with
:class:`errors.ConfirmationRequired` unless ``confirm_cost_usd`` covers the quote
(``spending.require_confirmation``). This module turns that refusal into a question when the client
supports form elicitation, in both protocol eras:

- up to 2025-11-25 the question is an ``elicitation/create`` request sent during the call;
- from 2026-07-28 the call answers an ``InputRequiredResult`` carrying the question, and the client
  repeats the call with the answer; the quote that was asked rides in ``request_state``, which the
  SDK seals, so the answer confirms exactly that amount and nothing more.

Accepting submits once, with ``confirm_cost_usd`` set to the quote the user saw; declining or
cancelling submits nothing and raises :class:`errors.ConfirmationDeclined`. A client without form
elicitation gets the ``[confirmation_required]`` tool error, answered by repeating the call with
``confirm_cost_usd``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mcp.server.elicitation import AcceptedElicitation, render_elicitation_schema
from mcp.server.mcpserver import Context
from mcp.types import ElicitRequest, ElicitRequestFormParams, ElicitResult, InputRequiredResult
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field

from . import errors
from .spending import usd

log = logging.getLogger("kling_mcp.confirm")

T = TypeVar("T")

QUESTION_KEY = "kling-mcp/confirm-cost"
_INPUT_REQUIRED_VERSION = "2026-07-28"  # first revision whose elicitation rides InputRequiredResult


class CostConfirmation(BaseModel):
    """The form the user answers (flat primitives only, as elicitation requires)."""

    submit: bool = Field(default=True, title="Submit and pay", description="Submit this request at the quoted cost.")


async def with_confirmation(
    ctx: Context, attempt: Callable[[float | None], Awaitable[T]], confirm_cost_usd: float | None
) -> T | InputRequiredResult:
    """Run ``attempt(confirmed_usd)`` (a service call), asking the user when the service needs it.

    ``confirmed_usd`` is ``confirm_cost_usd``, or the quote the user accepted. Returns the service's
    answer, or (2026-07-28) the ``InputRequiredResult`` that asks; raises the service's errors,
    :class:`errors.ConfirmationDeclined` when the user says no.
    """
    modern = _modern(ctx)
    answered = _answer(ctx) if modern else None
    if answered is not None:
        action, asked = answered
        if action != "accept":
            raise _declined(action, asked)
        confirm_cost_usd = max(confirm_cost_usd or 0.0, asked.get("cost_usd") or 0.0)
    try:
        return await attempt(confirm_cost_usd)
    except errors.ConfirmationRequired as exc:
        if not _can_elicit(ctx, modern):
            raise
        question = _question(exc.details)
        if modern:
            request = ElicitRequest(
                params=ElicitRequestFormParams(
                    message=question, requested_schema=render_elicitation_schema(CostConfirmation)
                )
            )
            state = json.dumps({"cost_usd": exc.details.get("cost_usd"), "what": exc.details.get("what")})
            return InputRequiredResult(input_requests={QUESTION_KEY: request}, request_state=state)
        try:
            outcome = await ctx.elicit(question, CostConfirmation)
        except Exception as elicit_error:  # the client could not be asked after all: refuse as without elicitation
            log.warning("could not ask for a confirmation: %s", type(elicit_error).__name__)
            raise exc from None
        if not (isinstance(outcome, AcceptedElicitation) and outcome.data.submit):
            raise _declined("decline" if outcome.action == "accept" else outcome.action, exc.details) from None
        cost = exc.details.get("cost_usd")
        return await attempt(max(confirm_cost_usd or 0.0, cost or 0.0))


def _modern(ctx: Context) -> bool:
    version = ctx.protocol_version
    return version is not None and is_version_at_least(version, _INPUT_REQUIRED_VERSION)


def _can_elicit(ctx: Context, modern: bool) -> bool:
    """The client declared form elicitation (a bare ``elicitation: {}`` means form) and can be reached."""
    caps = ctx.client_capabilities
    elicitation = caps.elicitation if caps is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False
    return modern or ctx.session.can_send_request


def _answer(ctx: Context) -> tuple[str, dict[str, Any]] | None:
    """The user's answer on a repeated 2026-07-28 call: ``accept`` (with ``submit`` ticked), ``decline``
    or ``cancel``, and the quote that was asked (from the sealed ``request_state``)."""
    answer = (ctx.input_responses or {}).get(QUESTION_KEY)
    if not isinstance(answer, ElicitResult) or not ctx.request_state:
        return None
    try:
        asked = json.loads(ctx.request_state)
    except ValueError:
        return None
    if not isinstance(asked, dict):
        return None
    if answer.action == "accept" and not (answer.content or {}).get("submit", True):
        return "decline", asked
    return answer.action, asked


def _question(details: dict[str, Any]) -> str:
    cost = details.get("cost_usd")
    price = f"is quoted at {usd(cost)}" if cost is not None else "has no published price"
    threshold = details.get("threshold_usd")
    return (
        f"{details.get('what', 'This request')} {price} (basis: {details.get('basis', 'unknown')}). "
        f"Submit it? (You are asked for anything above {usd(threshold) if threshold is not None else 'the limit'}, "
        "KLING_MCP_CONFIRM_ABOVE_USD.)"
    )


def _declined(action: str, details: dict[str, Any]) -> errors.ConfirmationDeclined:
    cost = details.get("cost_usd")
    quoted = f" quoted at {usd(cost)}" if cost is not None else ""
    said = "declined" if action == "decline" else "dismissed the question"
    return errors.ConfirmationDeclined(
        f"The user {said}: {details.get('what', 'the request')}{quoted} was not submitted, and nothing was billed."
    )
