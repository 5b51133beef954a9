"""The spending guards and how a price is written for the user.

The budget guards (``KLING_MCP_MAX_JOB_COST_USD``, ``KLING_MCP_DAILY_BUDGET_USD``) refuse early with a clear
message; the atomic check is the ledger's reservation at submit (:mod:`.submission`). The confirmation
guard (``KLING_MCP_CONFIRM_ABOVE_USD``) asks the user before a quote above the threshold is spent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import errors
from .catalog import OPERATION_LABELS
from .requests import Budget

if TYPE_CHECKING:
    from .config import Settings
    from .jobs.backend import JobStore
    from .validation import Match


def usd(amount: float) -> str:
    """``$0.56``, ``$1.1235``: every digit a quote has (at most 4 decimals), at least cents."""
    text = f"{amount:.4f}".rstrip("0")
    return "$" + (text + "0" * (2 - len(text.split(".")[1])))


def require_confirmation(
    threshold_usd: float | None,
    cost_usd: float | None,
    confirmed_usd: float | None,
    *,
    provider: str,
    basis: str,
    what: str,
) -> None:
    """The confirmation guard (``KLING_MCP_CONFIRM_ABOVE_USD``), beside the budget guard.

    Raises :class:`errors.ConfirmationRequired` when ``cost_usd`` is above ``threshold_usd`` and the
    user has not agreed to pay at least that much (``confirmed_usd``, the ``confirm_cost_usd``
    argument). A request without a price needs a confirmation too; any ``confirmed_usd`` covers it.
    ``what`` names the request for the user ("This 10 s text-to-video on runware (...)", "This
    4-shot storyboard"). Nothing happens when no threshold is set.
    """
    if threshold_usd is None:
        return
    if cost_usd is not None and cost_usd <= threshold_usd:
        return
    if confirmed_usd is not None and (cost_usd is None or confirmed_usd + 1e-9 >= cost_usd):
        return
    quote = f"is quoted at {usd(cost_usd)}" if cost_usd is not None else "has no price"
    again = (
        f"repeat the same call with confirm_cost_usd={usd(cost_usd)[1:]}"
        if cost_usd is not None
        else "repeat the same call with confirm_cost_usd set to the most they agree to pay"
    )
    refused = f" confirm_cost_usd={usd(confirmed_usd)[1:]} is below the quote." if confirmed_usd is not None else ""
    raise errors.ConfirmationRequired(
        f"{what} {quote} (basis: {basis}), above KLING_MCP_CONFIRM_ABOVE_USD={usd(threshold_usd)}, so it was "
        f"not submitted.{refused}",
        hint=f"Ask the user whether to spend it; if they agree, {again}. Nothing was billed.",
        details={
            "cost_usd": cost_usd,
            "provider": provider,
            "basis": basis,
            "threshold_usd": threshold_usd,
            "what": what,
        },
    )


def _today() -> str:
    # Imported here: the submit path loads the runner, and the MCP edge imports this module for usd().
    from .submission import today

    return today()


async def budget(settings: Settings, store: JobStore) -> Budget:
    """The spending limits and what is left of today's budget."""
    spent = await store.spent(_today())
    daily = settings.daily_budget_usd
    return Budget(
        max_job_cost_usd=settings.max_job_cost_usd,
        daily_budget_usd=daily,
        spent_today_usd=round(spent, 4),
        remaining_today_usd=None if daily is None else round(max(0.0, daily - spent), 4),
    )


async def guard_cost(
    settings: Settings, store: JobStore, provider: str, cost: float | None, basis: str, what: str = ""
) -> None:
    """The budget guards for one request quoted at ``cost`` (a storyboard passes its total)."""
    limit, daily = settings.max_job_cost_usd, settings.daily_budget_usd
    if provider == "local" or (limit is None and daily is None):
        return
    quote = (
        f"{provider} quotes ${cost:.3f}{what} ({basis})"
        if cost is not None
        else f"{provider} gives no price for this request{what}"
    )
    if cost is None:
        raise errors.BudgetExceeded(
            f"{quote}, and a spending limit is set, so it was not submitted.",
            hint="Pass video_duration_s so it can be priced, or use another provider.",
        )
    if limit is not None and cost > limit:
        raise errors.BudgetExceeded(f"{quote}; KLING_MCP_MAX_JOB_COST_USD is ${limit:.2f}.")
    if daily is not None:
        spent = await store.spent(_today())
        if spent + cost > daily:
            raise errors.BudgetExceeded(
                f"{quote}; ${spent:.2f} of the ${daily:.2f} KLING_MCP_DAILY_BUDGET_USD is already spent today."
            )


def confirm_match(threshold_usd: float | None, match: Match, confirmed_usd: float | None) -> None:
    """:func:`require_confirmation` for one provider's match, naming the request as the user reads it."""
    if match.provider == "local":
        return
    label = OPERATION_LABELS[match.op.operation] if match.op else "request"
    seconds = f"{match.billed_seconds:g} s " if match.billed_seconds else ""
    tier = f", {match.variant.tier}" if match.variant else ""
    require_confirmation(
        threshold_usd,
        match.cost_usd,
        confirmed_usd,
        provider=match.provider,
        basis=f"{match.price.basis}, {match.price.source}" if match.price else "unknown",
        what=f"This {seconds}{label} on {match.provider} ({match.model}{tier})",
    )
