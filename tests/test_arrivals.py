"""Arrival processes: rates, burstiness, time-varying profiles and trace replay.

Statistical checks use tolerances of 4 standard errors derived from the process (Poisson
counts: sd = sqrt(mean); sample means of gaps: sd = CV / sqrt(n) relative)."""

import json
import math

import numpy as np
import pytest

from sim.core.arrivals import daily, gamma, make_arrivals, piecewise, poisson, replay
from sim.foundation.errors import UserError
from sim.experiments.scenario import load_scenario


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_gaps_have_vllm_bench_burstiness(burstiness):
    """vllm bench: gaps ~ Gamma(shape=b, scale=1/(rate b)): mean 1/rate, CV^2 = 1/b."""
    n, rate = 200_000, 5.0
    gaps = np.diff(gamma(rate, burstiness, n, _rng()), prepend=0.0)
    cv = 1 / math.sqrt(burstiness)
    assert abs(gaps.mean() * rate - 1) <= 4 * cv / math.sqrt(n)
    # sd of the sample CV^2 for a Gamma: sqrt((2/b^2)(1 + 3/b)... ) -> bounded by 4 x 5% here
    assert gaps.var() / gaps.mean() ** 2 == pytest.approx(1 / burstiness, rel=0.05)


def test_poisson_is_gamma_with_burstiness_one_in_distribution():
    a = np.diff(poisson(2.0, 100_000, _rng(1)), prepend=0.0)
    assert a.var() / a.mean() ** 2 == pytest.approx(1.0, rel=0.03)


def test_piecewise_rate_follows_the_schedule_and_repeats():
    sched = [[0, 10.0], [100, 50.0], [150, 0.0]]
    t = piecewise(sched, 200.0, 60_000, _rng(2))
    assert (np.diff(t) >= 0).all()
    cycles = int(t[-1] // 200) - 1  # whole cycles only
    t = t[t < cycles * 200]
    phase = t % 200
    for lo, hi, rate in ((0, 100, 10.0), (100, 150, 50.0), (150, 200, 0.0)):
        expect = rate * (hi - lo) * cycles
        got = np.sum((phase >= lo) & (phase < hi))
        assert abs(got - expect) <= 4 * math.sqrt(max(expect, 1)), (lo, got, expect)


def test_piecewise_without_period_keeps_the_last_rate():
    t = piecewise([[0, 1.0], [10, 100.0]], None, 20_000, _rng(3))
    late = t[t >= 10]
    assert len(late) / (late[-1] - 10) == pytest.approx(100.0, rel=4 / math.sqrt(len(late)))


def test_daily_profile_mean_rate_and_peak_to_trough():
    rate, amp, period, peak = 20.0, 0.5, 1000.0, 250.0
    t = daily(rate, amp, period, peak, 400_000, _rng(4))
    cycles = int(t[-1] // period)
    t = t[t < cycles * period]
    assert len(t) / (cycles * period) == pytest.approx(rate, rel=4 / math.sqrt(len(t)))
    phase = t % period
    # Counts in 50 s around the peak and the trough: integral of the cosine profile.
    w = 25.0
    exp_peak = rate * cycles * (2 * w + amp * period / math.pi * math.sin(2 * math.pi * w / period))
    exp_trough = rate * cycles * (2 * w - amp * period / math.pi * math.sin(2 * math.pi * w / period))
    got_peak = np.sum(np.abs(phase - peak) < w)
    got_trough = np.sum(np.abs(phase - (peak + period / 2)) < w)
    assert abs(got_peak - exp_peak) <= 4 * math.sqrt(exp_peak)
    assert abs(got_trough - exp_trough) <= 4 * math.sqrt(exp_trough)


def _azure_csv(tmp_path):
    p = tmp_path / "trace.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:15:46.0000000,100,5\n"
                 "2023-11-16 18:15:47.5000000,200,5\n"
                 "2023-11-16 18:15:50.0000000,300,5\n")
    return p


def test_replay_shifts_scales_and_tiles_a_trace(tmp_path):
    p = _azure_csv(tmp_path)
    t, tokens = replay(p, 5, time_scale=2.0, rate=None)
    # span 4 s over 3 rows: a repeat starts one mean gap (2 s) after the last row, x2 scale.
    np.testing.assert_allclose(t, [0, 3, 8, 12, 15])
    assert tokens.tolist() == [100, 200, 300, 100, 200]
    t, _ = replay(p, 3, time_scale=1.0, rate=1.0)  # native 3 rows per 6 s cycle -> x0.5
    np.testing.assert_allclose(t, [0, 0.75, 2.0])


def test_replay_reads_mooncake_jsonl_in_milliseconds(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(json.dumps({"timestamp": ts, "input_length": n, "output_length": 3})
                           for ts, n in [(0, 7), (3000, 8), (3000, 9), (9000, 10)]) + "\n")
    arr = make_arrivals({"process": "replay", "trace": str(p), "time_scale": 0.5, "rate": None,
                         "trace_prompts": True}, 4, _rng())
    np.testing.assert_allclose(arr.arrival_s, [0, 1.5, 1.5, 4.5])
    assert arr.prompt_tokens.tolist() == [7, 8, 9, 10]


def test_embedded_arrival_traces_equal_a_fresh_build(shared_data, tmp_path):
    import pandas as pd
    from sim.core.arrival_data import SOURCES, build, data_dir
    build(shared_data / "arrivals", tmp_path)
    for alias in SOURCES:
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / f"{alias}.parquet"),
                                      pd.read_parquet(data_dir() / f"{alias}.parquet"))


def test_real_azure_conv_trace_replays():
    arr = make_arrivals({"process": "replay", "trace": "azure-conv", "time_scale": 1.0,
                         "rate": None, "trace_prompts": True}, 19_366, _rng())
    assert arr.arrival_s[0] == 0 and 3400 < arr.arrival_s[-1] < 3600
    assert len(arr.arrival_s) / arr.arrival_s[-1] == pytest.approx(5.53, rel=0.01)
    assert arr.prompt_tokens.mean() == pytest.approx(1155, rel=0.01)


def _scenario(tmp_path, arrivals):
    p = tmp_path / "s.yaml"
    import yaml
    p.write_text(yaml.safe_dump({"budget": 100, "traces": {"sets": ["qwen25-math-instruct_math100_t0.7_k8"]},
                                 "arrivals": arrivals, "policies": ["uniform"]}))
    return str(p)


@pytest.mark.parametrize("arrivals,field", [
    ({"process": "gamma", "queries": 10}, "arrivals.rate"),
    ({"process": "replay", "queries": 10}, "arrivals.trace"),
    ({"process": "piecewise", "queries": 10}, "arrivals.schedule"),
    ({"process": "piecewise", "queries": 10, "schedule": [[5, 1]]}, "arrivals.schedule"),
    ({"process": "daily", "queries": 10, "rate": 1, "amplitude": 1.5}, "arrivals.amplitude"),
    ({"process": "replay", "queries": 10, "trace": "nope.csv"}, "arrivals.trace"),
    ({"process": "gamma", "queries": 10, "rate": 1, "burstiness": 0}, "arrivals.burstiness"),
])
def test_bad_arrival_sections_name_the_field(tmp_path, arrivals, field):
    with pytest.raises(UserError, match=f"field '{field}'"):
        sc = load_scenario(_scenario(tmp_path, arrivals))
        make_arrivals(sc["arrivals"], 10, _rng(), where="s.yaml")


def test_replayed_prompts_reach_the_engine(tmp_path):
    from sim.experiments.runner import simulate

    trace = _azure_csv(tmp_path)
    path = _scenario(tmp_path, {"process": "replay", "trace": str(trace), "queries": 6,
                                "trace_prompts": True})
    res = simulate(path)
    q = res.queries
    assert q["prompt_tokens"].tolist() == [100, 200, 300] * 2
    np.testing.assert_allclose(q["arrival_s"], [0, 1.5, 4, 6, 7.5, 10])
