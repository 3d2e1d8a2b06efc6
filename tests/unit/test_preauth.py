"""The node-wide budget of unauthenticated websockets (syncd/web/preauth.py)."""

from __future__ import annotations

from syncd.web.preauth import PreAuthBudget


def test_take_counts_only_what_fits_and_give_returns_it() -> None:
    budget = PreAuthBudget(limit=100)
    assert budget.take(60) and budget.take(40)
    assert not budget.take(1)
    assert budget.held == 100  # a refused take counts nothing
    budget.give(40)
    assert budget.take(30) and budget.held == 90


def test_refusals_are_reported_once_per_interval() -> None:
    budget = PreAuthBudget(limit=1)
    assert budget.refused() == 1  # the first one is logged at once
    assert [budget.refused() for _ in range(5)] == [None] * 5  # then not for a while
