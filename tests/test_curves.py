"""Accuracy-at-budget, true tau and beta on hand-made samples and on the embedded recordings."""

import numpy as np
import pytest

from helpers import make_traces
from traces.curves import accuracy_at, accuracy_grid, fit_beta, solve_rate, true_tau
from traces.registry import load_trace_set


@pytest.fixture
def hand():
    return make_traces([
        [(100, True), (200, False), (300, True), (400, True)],  # tau 100
        [(50, False), (60, False)],  # never solved
        [(250, True)],  # greedy, solved at 250
    ])


def test_accuracy_grid_counts_correct_samples_within_cap(hand):
    grid = accuracy_grid(hand, [0, 99, 100, 299, 300, 1000])
    assert grid.tolist() == [
        [0, 0, 0.25, 0.25, 0.5, 0.75],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 1, 1],
    ]


def test_accuracy_at_is_elementwise_and_zero_at_zero_budget(hand):
    acc = accuracy_at(hand, np.array([0, 0, 2, 2]), np.array([400, 0, 250, 249]))
    assert acc.tolist() == [0.75, 0.0, 1.0, 0.0]


def test_true_tau_is_first_correct_length_and_inf_when_never_solved(hand):
    tau = true_tau(hand)
    assert tau[0] == 100 and tau[2] == 250 and np.isinf(tau[1])
    # acc > 0 exactly from tau on
    for i in (0, 2):
        assert accuracy_at(hand, i, tau[i]) > 0 and accuracy_at(hand, i, tau[i] - 1) == 0


def test_solve_rate(hand):
    assert solve_rate(hand).tolist() == [0.75, 0.0, 1.0]


def test_fit_beta_from_pooled_within_query_variance():
    # query 0 correct lengths 100, 300 (var 20000), query 1: 10, 30 (var 200); pooled = 10100
    ts = make_traces([[(100, True), (300, True), (5, False)], [(10, True), (30, True)], [(7, True)]])
    assert fit_beta(ts) == pytest.approx(np.sqrt(2 / 10100))
    assert fit_beta(make_traces([[(10, True)], [(20, True)]])) is None


def test_fit_beta_recovers_gamma2_rate():
    # 4000 queries x 8 correct samples from tau_i + Gamma(2, beta).  A sample variance of n=8
    # draws has relative variance 2/(n-1) + excess kurtosis/n = 2/7 + 3/8 (Gamma shape 2);
    # pooled over 4000 queries that is 0.66/4000, so the variance's relative sd is 1.3% and
    # beta = sqrt(2/var)'s is half that, 0.64%.  3% is more than 4.5 sigma.
    rng = np.random.default_rng(1)
    beta = 0.01
    taus = rng.uniform(100, 2000, 4000).astype(int)
    qs = [[(int(t + x), True) for x in rng.gamma(2, 1 / beta, 8)] for t in taus]
    est = fit_beta(make_traces(qs))
    assert est == pytest.approx(beta, rel=0.03)


# Mean accuracy at 128/256/512/1024/2048 tokens, as measured in shared/data/README.md.
README_CURVES = {
    "gpt-4_gsm8k_t0.7_k6": [.503, .918, .946, .946, .946],
    "qwen25-math-instruct_math100_t0.7_k8": [.000, .182, .791, .901, .906],
    "qwen2.5-math-7b-instruct_olympiadbench_greedy": [.000, .012, .157, .353, .407],
    "qwen2.5-math-7b-instruct_minerva_math_greedy": [.000, .040, .232, .335, .346],
    "qwen2.5-math-7b-instruct_gaokao2023en_greedy": [.003, .104, .426, .621, .675],
}


@pytest.mark.parametrize("name", sorted(README_CURVES))
def test_embedded_traces_reproduce_the_published_curves(name):
    ts = load_trace_set(name)
    got = accuracy_grid(ts, [128, 256, 512, 1024, 2048]).mean(axis=0)
    assert np.round(got, 3).tolist() == pytest.approx(README_CURVES[name], abs=0.0015)
