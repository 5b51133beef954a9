"""The confirmation guard (``KLING_MCP_CONFIRM_ABOVE_USD``) and how a price is written for the user."""

from __future__ import annotations

from . import errors


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
