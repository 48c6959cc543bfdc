"""The fitted curve model: Gamma(2) CDF, per-query MLE shifts, beta estimators, outcome draws,
synthetic sets, and fitted outcomes in a run."""

import numpy as np
import pytest
from scipy import stats

from helpers import make_traces
from traces.curves import PAPER_BETA, accuracy_grid, fit_beta
from traces.fit import (draw_outcomes, fit_beta_mle, fit_curves, fit_error, gamma2_cdf,
                        mle_tau)
from traces.registry import load_trace_set
from traces.schema import TraceSet
from traces.synth import synth_set


def test_gamma2_cdf_matches_scipy():
    x = np.array([-5.0, 0.0, 1.0, 50.0, 100.0, 400.0, 5000.0])
    want = stats.gamma(a=2, scale=1 / 0.01).cdf(np.maximum(x, 0))
    np.testing.assert_allclose(gamma2_cdf(x, 0.01), want, rtol=1e-12, atol=1e-15)
    assert gamma2_cdf(np.array([np.nan, -np.inf, np.inf]), 0.01).tolist() == [0.0, 0.0, 1.0]


def test_mle_tau_single_sample_sits_at_the_mode_and_multi_sample_solves_the_score():
    beta = 0.02
    ts = make_traces([[(300, True)], [(10, True)], [(200, True), (260, True), (500, True),
                                                    (90, False)], [(40, False)]])
    tau = mle_tau(ts, beta)
    assert tau[0] == pytest.approx(300 - 1 / beta)
    assert tau[1] == 0.0  # 10 - 50 clipped at zero
    assert np.isinf(tau[3])
    x = np.array([200.0, 260.0, 500.0])
    assert tau[2] < 200 and np.sum(1 / (x - tau[2])) == pytest.approx(3 * beta, rel=1e-9)


def test_mle_beta_recovers_gamma2_rate_up_to_its_known_small_sample_bias():
    # 2000 queries x 16 correct samples of tau_i + Gamma(2, beta).  Estimating one shift per
    # query biases the profile MLE up by about 1/(k-1) = 6.7% (measured by simulation, 7%);
    # its sampling sd is ~beta/sqrt(2 * 32000) = 0.4%, so [1.02, 1.12] x beta is > 10 sd wide
    # around the biased value and excludes neither a correct nor admits a factor-2 error.
    rng = np.random.default_rng(7)
    beta = 0.01
    taus = rng.uniform(100, 2000, 2000).astype(int)
    qs = [[(int(t + x), True) for x in rng.gamma(2, 1 / beta, 16)] for t in taus]
    est = fit_beta_mle(make_traces(qs))
    assert 1.02 * beta < est < 1.12 * beta
    assert fit_beta_mle(make_traces([[(10, True)], [(20, True), (7, False)]])) is None


def test_mle_beta_fits_the_recorded_curves_better_than_moments():
    ts = load_trace_set("qwen25-math-instruct_math100_t0.7_k8")
    grid = [128, 256, 384, 512, 768, 1024, 2048]
    mle = fit_error(ts, fit_curves(ts, method="mle"), grid)["mae"]
    mom = fit_error(ts, fit_curves(ts, method="moments"), grid)["mae"]
    assert fit_curves(ts, method="moments").beta == pytest.approx(fit_beta(ts))
    assert mle < 0.6 * mom and mle < 0.04


def test_greedy_sets_fall_back_to_the_paper_beta_or_take_one_given():
    ts = load_trace_set("qwen2.5-math-7b-instruct_minerva_math_greedy")
    f = fit_curves(ts)
    assert f.beta == PAPER_BETA and f.beta_source == "paper default"
    assert fit_curves(ts, beta=0.02).beta_source == "given"


def test_fit_error_is_zero_where_curves_agree():
    ts = make_traces([[(5, False)], [(7, False), (9, False)]])  # never solved: both curves 0
    err = fit_error(ts, fit_curves(ts, beta=0.01), [0, 100, 1000])
    assert err["mae"] == 0 and err["mean_curve_error"] == [0, 0, 0]


def test_draws_follow_the_fitted_curve():
    # 200,000 draws over 4 queries: each P(correct and tokens <= b) is a binomial share with
    # sd <= sqrt(.25/50000) = 0.0022; 0.012 is > 5 sd.
    ts = make_traces([[(300, True), (340, True), (500, False)], [(100, True)],
                      [(50, False), (2048, False)], [(800, True), (900, True), (1000, True)]])
    fit = fit_curves(ts, beta=0.01)
    rng = np.random.default_rng(0)
    query = np.repeat(np.arange(4), 50_000)
    tokens, correct, sample = draw_outcomes(ts, fit, query, rng)
    for b in (150, 300, 400, 600, 1200):
        got = np.bincount(query, weights=(correct & (tokens <= b)), minlength=4) / 50_000
        np.testing.assert_allclose(got, fit.accuracy_at(np.arange(4), b), atol=0.012)
    # incorrect draws replay recorded incorrect samples; correct ones are fresh (-1)
    assert set(tokens[~correct & (query == 2)].tolist()) == {50, 2048}
    assert (sample[correct] == -1).all() and (~correct[query == 3]).sum() == 0


def test_synth_follows_the_fitted_curves_and_is_deterministic(tmp_path):
    like = load_trace_set("qwen2.5-math-7b-instruct_olympiadbench_greedy")
    syn = synth_set(like, 40_000, seed=1)
    fit = fit_curves(like)
    grid = [256, 512, 1024, 2048]
    # 40k greedy queries: a mean accuracy has sd <= sqrt(.25/40000) = .0025 from the sample
    # draws plus template resampling sd (curve values in [0,1]) <= .0025: 0.02 is > 5 sd.
    np.testing.assert_allclose(accuracy_grid(syn, grid).mean(0), fit.accuracy_grid(grid).mean(0),
                               atol=0.02)
    assert set(syn.dataset.tolist()) == {"olympiadbench"} and syn.meta["synthetic"] is True
    a = synth_set(like, 1000, seed=3).write(tmp_path / "a.parquet").read_bytes()
    b = synth_set(like, 1000, seed=3).write(tmp_path / "b.parquet").read_bytes()
    assert a == b
    back = TraceSet.read(tmp_path / "a.parquet")
    assert back.n_queries == 1000 and len(set(back.query_id.tolist())) == 1000
    k8 = synth_set(load_trace_set("qwen25-math-instruct_math100_t0.7_k8"), 10, samples=3)
    assert k8.samples_per_query.tolist() == [3] * 10


def test_a_run_can_draw_outcomes_from_the_fitted_curves():
    from sim.experiments.runner import resolve, simulate

    sc = resolve("paper-balanced", queries=200, policies="uniform,clear")
    sc["traces"]["outcomes"] = "fitted"
    sc["predictor"] = {"kind": "oracle", "sigma": 0.0, "train": None, "ridge": 1.0}
    res = simulate(sc)
    q = res.queries
    from sim.experiments.runner import load_traces

    ts = load_traces(sc)
    fit = fit_curves(ts)
    row = q[q.policy == "uniform"]
    assert np.isfinite(row.tau_true).any()
    # the oracle sees the fitted threshold, and expected accuracy is the fitted curve
    np.testing.assert_allclose(row.tau_pred, row.tau_true)
    idx = {qid: i for i, qid in enumerate(ts.query_id)}
    qi = np.array([idx[x] for x in row.query_id])
    np.testing.assert_allclose(row.expected_accuracy, fit.accuracy_at(qi, row.budget))
    # outcomes are fresh draws: some correct lengths never occur in the recordings
    recorded = set(ts.sample_tokens.tolist())
    assert any(t not in recorded for t in row.tokens_needed[row.correct])
