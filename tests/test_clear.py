"""CLEAR's closed form against clear-method.md's numbers and against brute force."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from policies.clear_market import ClearMarket, clear_allocate, utility, w_of_price


def test_closed_form_matches_the_method_page():
    # clear-method.md: alpha=1.5, beta=0.005, lambda=0.2 gives b=245 (tau=100), b=445
    # (tau=300), abandons tau=800; cut-off 381.7.
    m = ClearMarket(np.array([100.0, 300.0, 800.0]), beta=0.005, b_max=4096)
    w = w_of_price(0.2 / 1.5)
    xs, cut, _, _ = m._bounds(w)
    assert 100 + xs == pytest.approx(245, abs=0.5) and 300 + xs == pytest.approx(445, abs=0.5)
    assert cut == pytest.approx(381.7, abs=0.05)
    assert m.budgets_at(w).tolist() == [math.floor(100 + xs), math.floor(300 + xs), 0]


@pytest.mark.parametrize("tau,b_max", [(100.0, 4096), (300.0, 4096), (370.0, 4096), (900.0, 1000),
                                       (960.0, 1000), (990.0, 1000), (50.0, 60)])
@pytest.mark.parametrize("price", [0.02, 0.2, 0.6])
def test_each_query_gets_its_own_best_budget_at_the_price(tau, b_max, price):
    """b_i(lambda) = argmax over {0} U [tau, b_max] of phi(b) - lambda b, by brute force on a
    0.01-token grid; the closed form (floored to whole tokens) must be within one token."""
    alpha, beta = 1.5, 0.005
    grid = np.concatenate([[0.0], np.arange(tau, b_max + 1e-9, 0.01)])
    surplus = utility(grid, tau, beta, alpha) - price * grid
    best = grid[np.argmax(surplus)]
    got = ClearMarket(np.array([tau]), beta, b_max).budgets_at(w_of_price(price / alpha))[0]
    if best == 0 or surplus.max() <= 1e-9:
        assert got == 0
    else:
        assert abs(got - best) <= 1.0


def _brute_force(tau, beta, b_max, budget):
    """Best total utility over whole-token budgets {0} U [tau_i, b_max] with sum <= budget."""
    choices = [np.concatenate([[0], np.arange(math.ceil(t), b_max + 1)]) for t in tau]
    best = 0.0
    for combo in itertools.product(*choices):
        if sum(combo) <= budget:
            best = max(best, float(utility(np.array(combo), tau, beta).sum()))
    return best


@settings(max_examples=25, deadline=None)
@given(
    tau=st.lists(st.integers(1, 30), min_size=2, max_size=3),
    price=st.floats(0.02, 0.9),
)
def test_price_allocation_is_optimal_for_the_tokens_it_spends(tau, price):
    """Everett's theorem: the Lagrangian allocation at a price maximises total utility among all
    allocations spending no more than it does.  Ours floors to whole tokens; each floor loses at
    most phi's slope over one token below the optimum, phi'(x* - 1) <= alpha (phi' falls on
    [0, 2/beta]), so the allowed gap is that bound per funded query."""
    tau = np.array(tau, dtype=float)
    beta, b_max = 0.1, 45
    m = ClearMarket(tau, beta, b_max)
    w = w_of_price(price)
    b = m.budgets_at(w)
    xs, _, _, _ = m._bounds(w)
    ours = float(utility(b, tau, beta).sum())
    real_spend = float(np.where(b > 0, np.minimum(tau + xs, b_max), 0).sum())
    x = max(xs - 1, 0)
    slack_bound = math.exp(-beta * x) * abs(1 - beta * x)
    tol = slack_bound * int((b > 0).sum()) + 1e-9
    assert ours >= _brute_force(tau, beta, b_max, math.floor(real_spend)) - tol
    assert ours <= _brute_force(tau, beta, b_max, int(b.sum())) + 1e-9


taus = st.lists(
    st.one_of(st.floats(1, 5000), st.just(math.inf)), min_size=1, max_size=60
)


@settings(max_examples=200, deadline=None)
@given(tau=taus, budget=st.floats(0, 2e5), beta=st.floats(1e-4, 0.1), b_max=st.integers(16, 8192),
       leftover=st.sampled_from(["spread", "next-in-line", "none"]))
def test_budget_never_exceeded_and_budgets_are_whole_non_negative(tau, budget, beta, b_max, leftover):
    res = clear_allocate(np.array(tau), budget, beta, b_max, leftover)
    b = res.budgets
    assert b.dtype == np.int64 and (b >= 0).all() and (b <= b_max).all()
    assert b.sum() <= math.floor(budget)
    assert res.leftover == math.floor(budget) - b.sum()
    assert not np.isnan(res.price)
    # never-solved (inf) queries are never funded
    assert (b[np.isinf(np.array(tau))] == 0).all()


@settings(max_examples=200, deadline=None)
@given(tau=taus, budget=st.floats(0, 2e5), beta=st.floats(1e-4, 0.1), b_max=st.integers(16, 8192))
def test_abandonment_is_monotone_in_predicted_tau(tau, budget, beta, b_max):
    tau = np.array(tau)
    b = clear_allocate(tau, budget, beta, b_max).budgets
    funded, abandoned = tau[b > 0], tau[(b == 0) & (tau < b_max)]
    if len(funded) and len(abandoned):
        assert funded.max() <= abandoned.min()


@settings(max_examples=100, deadline=None)
@given(tau=st.lists(st.floats(1, 3000), min_size=1, max_size=40), budget=st.floats(1, 1e5),
       beta=st.floats(1e-3, 0.05))
def test_clearing_price_is_the_smallest_that_fits(tau, budget, beta):
    m = ClearMarket(np.array(tau), beta, 4096)
    w = m.clearing_w(budget)
    assert m.demand(w) <= budget
    if w > 0:
        assert m.demand(w * (1 - 1e-9)) > budget or m.demand(np.nextafter(w, 0)) > budget


def test_uniform_budget_spent_by_clear_on_a_known_batch():
    # Two cheap queries and one hopeless: the hopeless one is abandoned, the cheap ones share.
    res = clear_allocate(np.array([100.0, 120.0, math.inf]), budget=600, beta=0.01)
    assert res.budgets[2] == 0 and res.budgets[0] > 100 and res.budgets[1] > 120
    assert res.budgets[1] - res.budgets[0] in (19, 20, 21)  # same slack x* for both


def _spread_reference(b, spare, b_max):
    """Water-filling one equal step at a time (the definition of ``spread``)."""
    while spare > 0:
        open_ = np.flatnonzero((b > 0) & (b < b_max))
        if len(open_) == 0 or spare < len(open_):
            break
        add = min(spare // len(open_), int((b_max - b[open_]).min()))
        b[open_] += add
        spare -= add * len(open_)
    return spare


@settings(max_examples=300, deadline=None)
@given(caps=st.lists(st.integers(0, 300), min_size=1, max_size=40), spare=st.integers(0, 20000),
       b_max=st.integers(1, 300))
def test_spread_evenly_equals_step_by_step_water_filling(caps, spare, b_max):
    from policies.clear_market import spread_evenly

    b = np.minimum(np.array(caps, dtype=np.int64), b_max)
    ref = b.copy()
    assert spread_evenly(b, spare, b_max) == _spread_reference(ref, spare, b_max)
    assert np.array_equal(b, ref)


@settings(max_examples=300, deadline=None)
@given(heads=st.lists(st.integers(0, 300), min_size=1, max_size=30),
       weights=st.lists(st.integers(1, 50), min_size=30, max_size=30), spare=st.integers(0, 50000))
def test_spread_level_is_the_largest_affordable_level(heads, weights, spare):
    """The water-filling level (weighted, as binned's per-bin caps use it) is the largest whole
    L in [0, max head] whose cost sum(w * min(head, L)) fits the spare tokens: a linear scan."""
    from policies.clear_market import spread_level

    h = np.array(heads, dtype=np.int64)
    w = np.array(weights[:len(h)], dtype=np.int64)
    cost = [int((w * np.minimum(h, lv)).sum()) for lv in range(int(h.max()) + 1)]
    want = max(lv for lv, c in enumerate(cost) if c <= spare)
    assert spread_level(h, spare, w) == want
    assert spread_level(h, spare) == max(lv for lv in range(int(h.max()) + 1)
                                         if int(np.minimum(h, lv).sum()) <= spare)
