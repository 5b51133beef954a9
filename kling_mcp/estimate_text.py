"""The text beside ``estimate_cost``'s structured answer: one line per provider, not a JSON dump."""

from __future__ import annotations

from .catalog import OPERATION_LABELS
from .requests import Estimate, Quote


def _quote_line(q: Quote) -> str:
    who = f"{q.provider} {q.tier}" if q.tier else q.provider
    if not q.supported:
        why = "; ".join(q.problems) or "not supported"
        return f"{who}: no ({why})"
    cost = f"${q.cost_usd:.3f}" if q.cost_usd is not None else "price unknown"
    extra = "" if q.configured else ", not configured here"
    return f"{who}: {cost} ({q.basis}{extra})"


def estimate_text(est: Estimate) -> str:
    """What a model reads first: the request, each provider's quote, the pick, the budget, the next step."""
    seconds = f"{est.duration_s:g} s " if est.duration_s is not None else ""
    head = f"Quote for a {seconds}{OPERATION_LABELS.get(est.operation, est.operation)}"
    head += f"; auto picks {est.recommended}." if est.recommended else "; no configured provider accepts it."
    budget = est.budget
    money = f"Spent today ${budget.spent_today_usd:.2f}"
    if budget.remaining_today_usd is not None:
        money += f", ${budget.remaining_today_usd:.2f} left of the daily budget"
    if budget.max_job_cost_usd is not None:
        money += f"; at most ${budget.max_job_cost_usd:.2f} per job"
    return "\n".join([head, *(_quote_line(q) for q in est.quotes), money + ".", f"Next: {est.next_action}"])
