"""Reasoning traces: the embedded sets against the data README, forced-answer vs hard-cap
semantics (hand-built sets and a brute-force reference), the graded probe import, its cache,
pool edges for long traces, and every kind of bad probe input."""

import gzip
import json

import numpy as np
import pytest

from helpers import cli_error
from sim.foundation.errors import UserError
from sim.experiments.runner import resolve, simulate, validate
from traces.curves import SEMANTICS, accuracy_at, accuracy_grid, forced_probe, true_tau
from traces.embed import REASONING, build_embedded
from traces.importers import import_generations
from traces.pools import POOL_EDGES, REASONING_EDGES, edges_for
from traces.registry import embedded_dir, load_trace_set
from traces.schema import PROBE_FIELDS, TraceSet

# shared/data/README.md, "Reasoning models": median tokens and accuracy for AIME / AMC / MATH-500
README = {
    "deepseek-r1-distill-qwen-7b": ((11857, 4628, 2542), (.52, .84, .91)),
    "deepseek-r1-distill-qwen-32b": ((7819, 3559, 2145), (.78, .96, .94)),
    "deepseek-r1-distill-llama-8b": ((10099, 3816, 2265), (.49, .88, .88)),
    "qwen3-8b": ((11668, 7245, 3938), (.74, .85, .92)),
}
DATASETS = ("aime24", "amc23", "math500")
CASES = [(m, k) for m in README for k in range(3)]


@pytest.mark.parametrize("model,k", CASES)
def test_embedded_reasoning_sets_reproduce_the_readme(model, k):
    ts = load_trace_set(f"{model}_{DATASETS[k]}_t0.6_k3")
    median, acc = README[model][0][k], README[model][1][k]
    # the README gives two decimals: half a unit of the last digit, plus float rounding
    assert ts.sample_correct.mean() == pytest.approx(acc, abs=0.0051)
    # the README's medians are rounded summaries of the source's runs; ours, over every
    # recorded run, agree within 3% (the median's own standard error with 90-180 runs of
    # lengths this spread is larger, about 5-10%)
    assert np.median(ts.sample_tokens) == pytest.approx(median, rel=0.03)
    assert ts.has_probes and len(ts.probe_position) > 20 * len(ts.sample_tokens)
    assert ts.meta["source"].startswith("Antony-zdh/Governor @ 6a22a59")


def test_embedded_probes_are_numbers_only_and_consistent():
    total = 0
    for name in REASONING:
        ts = load_trace_set(name)
        total += len(ts.probe_position)
        assert np.all(np.diff(ts.probe_offsets) >= 0)
        assert ts.probe_offsets[-1] == len(ts.probe_position)
        ps = ts.probe_sample
        assert np.all(ts.probe_position <= ts.sample_tokens[ps])  # no probe past its run's end
        same = ps[1:] == ps[:-1]
        assert np.all(np.diff(ts.probe_position)[same] > 0)  # ordered by position
        # every correct probe of a query shares its one "reference" class
        q = ts.sample_query[ps]
        for qi in np.unique(q[ts.probe_correct])[:50]:
            assert len(np.unique(ts.probe_answer[(q == qi) & ts.probe_correct])) == 1
        assert not ts.probe_correct[ts.probe_answer < 0].any()
        assert set(ts.to_table().column_names) >= set(PROBE_FIELDS)
    assert 530_000 < total < 545_000  # the README's "about 540,000"
    size = sum((embedded_dir() / f"{n}.parquet").stat().st_size for n in REASONING)
    assert size < 2_000_000


@pytest.mark.parametrize("name", sorted(REASONING))
def test_forced_answer_is_never_below_the_hard_cap(name):
    ts = load_trace_set(name)
    b = np.r_[0, 1, 63, 64, 65, np.linspace(100, 33000, 120)]
    hard, forced = accuracy_grid(ts, b), accuracy_grid(ts, b, "forced-answer")
    assert np.all(forced >= hard - 1e-12)
    # at or past every run's own end both semantics agree
    end = ts.sample_tokens.max()
    np.testing.assert_allclose(accuracy_grid(ts, [end], "forced-answer"), accuracy_grid(ts, [end]))


# --------------------------------------------------------------- semantics on tiny sets
def _tiny():
    def probes(pos, cor):
        return {"position": pos, "answer": [0] * len(pos), "certain": [False] * len(pos),
                "correct": cor, "out_tokens": [5 + i for i in range(len(pos))]}

    recs = [
        {"query_id": "q/0", "dataset": "d", "prompt_tokens": 10, "samples": [
            {"tokens": 200, "correct": True, "probes": probes([64, 128, 192], [False, True, True])},
            {"tokens": 70, "correct": False, "probes": probes([64], [False])}]},
        {"query_id": "q/1", "dataset": "d", "prompt_tokens": 10, "samples": [
            {"tokens": 300, "correct": False,
             "probes": probes([64, 128, 192, 256, 300], [True, True, False, False, True])}]},
        {"query_id": "q/2", "dataset": "d", "prompt_tokens": 10, "samples": [
            {"tokens": 40, "correct": True, "probes": probes([], [])}]},
    ]
    return TraceSet.from_records("tiny", {}, recs)


def test_hard_and_forced_curves_of_a_hand_built_set():
    ts = _tiny()
    b = [0, 63, 64, 127, 128, 199, 200, 299, 300, 10_000]
    hard = accuracy_grid(ts, b)
    forced = accuracy_grid(ts, b, "forced-answer")
    np.testing.assert_allclose(hard, [[0, 0, 0, 0, 0, 0, .5, .5, .5, .5],
                                      [0] * 10,
                                      [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    np.testing.assert_allclose(forced, [[0, 0, 0, 0, .5, .5, .5, .5, .5, .5],
                                        # the probe at 300 = the run's end: its own verdict
                                        [0, 0, 1, 1, 1, 0, 0, 0, 0, 0],
                                        [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    # which probe answers: the last one at or below the cap and before the run's end
    np.testing.assert_array_equal(forced_probe(ts, np.array([0, 0, 1, 2, 2, 3]),
                                               np.array([63, 150, 299, 299, 5000, 30])),
                                  [-1, 1, 3, 7, 7, -1])


def _brute_forced(ts, q, b):
    n_ok = 0
    for s in range(ts.offsets[q], ts.offsets[q + 1]):
        L = ts.sample_tokens[s]
        if b <= 0:
            continue
        if L <= b:
            n_ok += bool(ts.sample_correct[s])
            continue
        lo, hi = ts.probe_offsets[s], ts.probe_offsets[s + 1]
        ok = [ts.probe_correct[k] for k in range(lo, hi) if ts.probe_position[k] <= b]
        n_ok += bool(ok[-1]) if ok else 0
    return n_ok / (ts.offsets[q + 1] - ts.offsets[q])


def test_forced_curve_equals_a_brute_force_reference_on_a_real_subset():
    ts = load_trace_set("qwen3-8b_aime24_t0.6_k3").subset(np.arange(8))
    rng = np.random.default_rng(3)
    q = rng.integers(0, ts.n_queries, 300)
    b = rng.integers(-5, 20_000, 300)
    got = accuracy_at(ts, q, b, "forced-answer")
    want = [_brute_forced(ts, qi, bi) for qi, bi in zip(q, b)]
    np.testing.assert_allclose(got, want)


def test_forced_answer_needs_probes():
    ts = load_trace_set("gpt-4_gsm8k_t0.7_k6")
    with pytest.raises(UserError, match="has no probes"):
        accuracy_at(ts, 0, 100, "forced-answer")
    assert SEMANTICS == ("hard-cap", "forced-answer")


# ------------------------------------------------------------------ runs and scenarios
def _run(semantics, **kw):
    return simulate("default", budget=3000, queries=200, rate=2.0, policies="uniform",
                    overrides={"traces.sets": ["deepseek-r1-distill-qwen-7b_math500_t0.6_k3"],
                               "traces.mix": None, "traces.semantics": semantics, **kw})


def test_a_run_honours_the_semantics_in_outcomes_and_generated_tokens():
    hard, forced = _run("hard-cap").queries, _run("forced-answer").queries
    assert (hard["tokens_needed"].to_numpy() == forced["tokens_needed"].to_numpy()).all()
    cut = (hard["tokens_needed"] > hard["budget"]).to_numpy()
    assert cut.any() and not hard["correct"].to_numpy()[cut].any()
    # same arrivals, same samples: only the cut runs change, and they may now be right
    np.testing.assert_array_equal(hard["correct"].to_numpy()[~cut], forced["correct"].to_numpy()[~cut])
    assert forced["correct"].to_numpy()[cut].mean() > 0.3
    # the forced answer's own tokens are generated: between 1 and 32 per cut run
    extra = (forced["tokens_generated"] - hard["tokens_generated"]).to_numpy()
    assert (extra[~cut] == 0).all() and (extra[cut] >= 0).all() and (extra[cut] <= 32).all()
    assert extra[cut].mean() > 1
    assert forced["expected_accuracy"].mean() > hard["expected_accuracy"].mean()


def test_forced_answer_on_a_set_without_probes_is_one_line(capsys):
    cli_error(capsys, ["validate", "default", "--set", "traces.semantics=forced-answer"],
              "traces.semantics", "has no probes")
    cli_error(capsys, ["validate", "default", "--set", "traces.semantics=budget"],
              "traces.semantics", "hard-cap")
    with pytest.raises(UserError, match="empirical"):
        validate("default", overrides={
            "traces.sets": ["qwen3-8b_amc23_t0.6_k3"], "traces.mix": None,
            "traces.semantics": "forced-answer", "traces.outcomes": "fitted"})


def test_reasoning_sets_get_reasoning_pool_edges_automatically():
    ts = load_trace_set("qwen3-8b_math500_t0.6_k3")
    assert edges_for(None, ts.meta) == REASONING_EDGES
    both = TraceSet.concat("x", [ts, load_trace_set("qwen3-8b_aime24_t0.6_k3")])
    assert edges_for(None, both.meta) == REASONING_EDGES
    mixed = TraceSet.concat("y", [ts, load_trace_set("gpt-4_gsm8k_t0.7_k6")])
    assert edges_for(None, mixed.meta) == POOL_EDGES
    assert edges_for("short", ts.meta) == POOL_EDGES and edges_for([10, 20], {}) == (10, 20)
    # the reasoning edges split the solved queries of the 12 sets into rough thirds
    tau = np.concatenate([true_tau(load_trace_set(n)) for n in REASONING])
    share = np.mean(tau[np.isfinite(tau)] <= REASONING_EDGES[0])
    assert 0.28 < share < 0.38
    sc = resolve("paper-balanced", overrides={"traces.sets": ["qwen3-8b_math500_t0.6_k3"],
                                              "traces.mix": None, "traces.pool_edges": "reasoning"})
    assert sc["traces"]["pool_edges"] == "reasoning"


def test_bad_pool_edge_preset_names_the_field(capsys):
    cli_error(capsys, ["validate", "default", "--set", "traces.pool_edges=long"],
              "traces.pool_edges", "reasoning")


def test_fit_and_synth_work_on_a_reasoning_set(tmp_path):
    from traces.api import fit, synth

    d = fit("deepseek-r1-distill-qwen-32b_amc23_t0.6_k3")
    assert d["beta"] > 0
    out = synth(200, "deepseek-r1-distill-qwen-32b_amc23_t0.6_k3", tmp_path / "s.parquet", seed=1)
    back = TraceSet.read(out)
    assert back.n_queries == 200 and np.median(back.sample_tokens) > 1000


# ---------------------------------------------------------------- import and grading
def test_fresh_import_equals_the_shipped_set(shared_data, tmp_path):
    name = "deepseek-r1-distill-qwen-32b_amc23_t0.6_k3"
    build_embedded(shared_data / "generations", tmp_path, only=[name])
    fresh, shipped = TraceSet.read(tmp_path / f"{name}.parquet"), load_trace_set(name)
    assert fresh.meta == shipped.meta
    for f in ("offsets", "sample_tokens", "sample_correct", "probe_offsets", *PROBE_FIELDS):
        np.testing.assert_array_equal(getattr(fresh, f), getattr(shipped, f), err_msg=f)


def test_grading_cache_gives_the_graders_own_verdicts(shared_data):
    from traces.grading import MathGrader
    from traces.probes import ProbeGrader, read_targets

    refs = {q: t for q, (_, t) in read_targets(shared_data / "raw/governor/targets.csv").items()}
    import csv
    with gzip.open(shared_data / "raw/governor/probes_qwen3-8b_amc23.csv.gz", "rt") as fh:
        rows = [r for _, r in zip(range(3000), csv.DictReader(fh))]
    pg, direct = ProbeGrader(), MathGrader()
    for r in rows:
        got = pg.correct(r["probe_answer"], refs[r["query_id"]])
        assert pg.correct(r["probe_answer"], refs[r["query_id"]]) == got  # cached, same answer
    pairs = {(refs[r["query_id"]], r["probe_answer"]) for r in rows}
    assert pg.calls == len(pairs) < len(rows) / 5 and pg.lookups == 2 * len(rows)
    for ref, ans in sorted(pairs)[:150]:
        want = bool(any(c.isalnum() for c in ans) and direct.match(ans, ref))
        assert pg.correct(ans, ref) == want, (ref, ans)


def _write_case(tmp_path, probes_rows, targets_rows, runs=None):
    runs = runs or [("t/0", [(300, True, 1), (150, False, 2)]), ("t/1", [(100, True, 1)])]
    gen = tmp_path / "gen.jsonl"
    gen.write_text("".join(json.dumps({
        "query_id": q, "dataset": "t", "prompt_tokens": 20, "max_tokens": 1000,
        "samples": [{"tokens": n, "correct": c, "truncated": False, "seed": s} for n, c, s in smp]})
        + "\n" for q, smp in runs))
    pr = tmp_path / "probes.csv.gz"
    with gzip.open(pr, "wt") as fh:
        fh.write("query_id,seed,token_position,probe_answer,is_certain,probe_out_tokens\n")
        fh.writelines(",".join(map(str, r)) + "\n" for r in probes_rows)
    tg = tmp_path / "targets.csv"
    tg.write_text("query_id,target\n" + "".join(f"{q},{t}\n" for q, t in targets_rows))
    return gen, pr, tg


GOOD = [("t/0", 1, 64, "7", "False", 3), ("t/0", 1, 128, "\\frac{14}{2}", "True", 6),
        ("t/0", 1, 192, "8", "True", 2), ("t/0", 2, 64, "?", "False", 1),
        ("t/1", 1, 64, "x", "True", 2)]
TARGETS = [("t/0", "7"), ("t/1", "x")]


def test_import_grades_classes_and_reports(tmp_path):
    ts = import_generations(*(_write_case(tmp_path, GOOD, TARGETS)[:1]), "t",
                            probes=tmp_path / "probes.csv.gz", targets=tmp_path / "targets.csv")
    np.testing.assert_array_equal(ts.probe_offsets, [0, 3, 4, 5])
    np.testing.assert_array_equal(ts.probe_correct, [True, True, False, False, True])
    # 7 and 14/2 are one class (both equal the reference), 8 another, ? none
    np.testing.assert_array_equal(ts.probe_answer, [0, 0, 1, -1, 0])
    np.testing.assert_array_equal(ts.probe_out_tokens, [3, 6, 2, 1, 2])
    p = ts.meta["probes"]
    assert p["probes_kept"] == 5 and p["runs_without_probes"] == 0
    # last probes: t/0 seed 1 "8" wrong vs source right; seed 2 "?" wrong = source; t/1 right
    assert (p["final_agreement"]["agree"], p["final_agreement"]["runs"]) == (2, 3)


def test_probe_of_an_unknown_run_names_file_and_row(tmp_path):
    rows = GOOD + [("t/0", 9, 64, "7", "True", 3)]
    gen, pr, tg = _write_case(tmp_path, rows, TARGETS)
    with pytest.raises(UserError) as e:
        import_generations(gen, "t", probes=pr, targets=tg)
    assert f"{pr}:7" in str(e.value) and "seed 9" in str(e.value) and "query_id" in str(e.value)


def test_unparseable_reference_names_file_and_row(tmp_path):
    gen, pr, tg = _write_case(tmp_path, GOOD, [("t/0", "7"), ("t/1", "}{")])
    with pytest.raises(UserError) as e:
        import_generations(gen, "t", probes=pr, targets=tg)
    assert f"{tg}:3" in str(e.value) and "target" in str(e.value)
    gen, pr, tg = _write_case(tmp_path, GOOD, [("t/0", "7")])
    with pytest.raises(UserError, match="no target for query 't/1'"):
        import_generations(gen, "t", probes=pr, targets=tg)


def test_runs_without_or_with_foreign_probes_are_counted_not_zeroed(tmp_path):
    rows = [r for r in GOOD if r[0] != "t/1"] + [("t/0", 2, 192, "7", "True", 1)]
    gen, pr, tg = _write_case(tmp_path, rows, TARGETS)
    ts = import_generations(gen, "t", probes=pr, targets=tg)
    p = ts.meta["probes"]
    # t/1 has no probes; t/0 seed 2 (150 tokens) has a probe at 192: another trajectory's
    assert (p["runs_without_probes"], p["runs_mismatched"], p["probes_dropped"]) == (2, 1, 2)
    np.testing.assert_array_equal(np.diff(ts.probe_offsets), [3, 0, 0])
    assert p["probes_kept"] == 3


@pytest.mark.parametrize("row,field", [
    (("t/0", 1, "sixty", "7", "True", 3), "token_position"),
    (("t/0", 1, 64, "7", "maybe", 3), "is_certain"),
    (("t/0", 1, 64, "7", "True", -1), "probe_out_tokens"),
])
def test_malformed_probe_rows_name_file_row_and_field(tmp_path, row, field):
    gen, pr, tg = _write_case(tmp_path, [row] + GOOD[1:], TARGETS)
    with pytest.raises(UserError) as e:
        import_generations(gen, "t", probes=pr, targets=tg)
    assert f"{pr}:2" in str(e.value) and field in str(e.value)


def test_cli_import_with_probes_and_its_errors(tmp_path, capsys, monkeypatch):
    from sim.experiments.cli import main

    monkeypatch.setenv("CLEARSIM_HOME", str(tmp_path / "home"))
    gen, pr, tg = _write_case(tmp_path, GOOD, TARGETS)
    assert main(["traces", "import", "generations", str(gen), "--name", "tp",
                 "--probes", str(pr), "--targets", str(tg)]) == 0
    out = capsys.readouterr().out
    assert "probes: 5 kept of 5 read" in out and "2/3 agree" in out
    assert load_trace_set("tp").has_probes
    cli_error(capsys, ["traces", "import", "generations", str(gen), "--name", "tq",
                       "--probes", str(pr)], "--targets")


def test_show_gives_the_forced_answer_curve_of_a_reasoning_set():
    from traces.api import format_show, show

    d = show("qwen3-8b_amc23_t0.6_k3", budgets=[1000, 4000, 16384])
    assert np.all(np.array(d["forced_accuracy"]) >= np.array(d["accuracy"]))
    assert d["forced_accuracy"][0] > d["accuracy"][0] + 0.2
    assert "forced answer (15,091 probes)" in format_show(d)
    assert "forced_accuracy" not in show("gpt-4_gsm8k_t0.7_k6")
