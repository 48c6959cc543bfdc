"""``clearsim traces list/show/import/fit/synth/predict``: output, files, help, bad input."""

import json

import pytest
from helpers import cli_error

from sim.experiments.cli import build_parser, main
from traces.embed import PROVENANCE
from traces.registry import load_trace_set

GEN = {"query_id": "toy/0", "dataset": "toy", "level": None, "subject": None, "prompt_tokens": 9,
       "max_tokens": None, "samples": [{"tokens": 120, "correct": True}, {"tokens": 80, "correct": False}]}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEARSIM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_list_shows_every_embedded_recording_with_provenance(home, capsys):
    assert main(["traces", "list"]) == 0
    out = capsys.readouterr().out
    for name, prov in PROVENANCE.items():
        line = next(l for l in out.splitlines() if l.startswith(name + " "))
        assert "[embedded]" in line and prov["source"] in line and prov["model"] in line


def test_import_lands_in_clearsim_home_and_is_listed(home, tmp_path, capsys):
    src = tmp_path / "g.jsonl"
    src.write_text(json.dumps(GEN) + "\n")
    assert main(["traces", "import", "generations", str(src), "--name", "toy",
                 "--model", "toy-model", "--decoding", "greedy"]) == 0
    assert (home / "traces" / "toy.parquet").is_file()
    main(["traces", "list"])
    out = capsys.readouterr().out
    assert "toy  [imported] 1 queries x 2 samples; datasets toy; model toy-model; greedy" in out
    cli_error(capsys, ["traces", "import", "generations", str(src), "--name", "toy"],
                   "field '--name'", "exists", "--force")
    assert main(["traces", "import", "generations", str(src), "--name", "toy", "--force"]) == 0
    cli_error(capsys, ["traces", "import", "generations", str(src), "--name",
                            "gpt-4_gsm8k_t0.7_k6"], "embedded")
    cli_error(capsys, ["traces", "import", "generations", str(src), "--name", "../x"],
                   "field '--name'")


def test_bad_imports_are_one_line_and_write_nothing(home, tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(GEN) + "\n" + json.dumps(dict(GEN, query_id="toy/1", samples=[
        {"tokens": -4, "correct": True}])) + "\n")
    cli_error(capsys, ["traces", "import", "generations", str(src), "--name", "b"],
                   f"{src}:2", "samples[0].tokens", "non-negative")
    src.write_text(json.dumps(GEN)[:40])
    cli_error(capsys, ["traces", "import", "generations", str(src), "--name", "b"],
                   f"{src}:1", "not valid JSON")
    cli_error(capsys, ["traces", "import", "parquet", str(src), "--name", "b"],
                   "invalid choice: 'parquet'")
    cli_error(capsys, ["traces", "import", "qwen-harness", str(src), "--name", "b"],
                   "--tokenizer")
    assert not (home / "traces").exists() or not any((home / "traces").iterdir())


def test_show_prints_accuracy_tau_and_never_solved_and_plots(home, tmp_path, capsys):
    html = tmp_path / "c.html"
    assert main(["traces", "show", "qwen2.5-math-7b-instruct_olympiadbench_greedy",
                 "--budgets", "512,2048", "--plot", str(html)]) == 0
    out = capsys.readouterr().out
    assert "never solved 59.3%" in out and "acc@512" in out and "0.157" in out and "0.407" in out
    assert "tau p10/p25/p50/p75/p90" in out
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "plotly" in page.lower() and "src=\"http" not in page
    cli_error(capsys, ["traces", "show", "nope"], "unknown trace set 'nope'")
    cli_error(capsys, ["traces", "show", "gpt-4_gsm8k_t0.7_k6", "--budgets", "a,b"],
                   "--budgets")


def test_fit_prints_beta_tau_and_fit_error(home, tmp_path, capsys):
    csv = tmp_path / "fit.csv"
    assert main(["traces", "fit", "qwen25-math-instruct_math100_t0.7_k8", "--out", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "beta 0.026" in out and "moments 0.010488" in out and "fit error" in out
    assert "tau fitted" in out
    import pandas as pd

    df = pd.read_csv(csv)
    assert len(df) == 100 and list(df.columns) == ["query_id", "dataset", "p", "tau_fitted",
                                                   "tau_empirical"]
    assert (df.tau_fitted <= df.tau_empirical).all()  # the MLE shift sits below the first correct
    main(["traces", "fit", "qwen2.5-math-7b-instruct_minerva_math_greedy"])
    assert "not identifiable" in capsys.readouterr().out
    cli_error(capsys, ["traces", "fit", "gpt-4_gsm8k_t0.7_k6", "--beta", "-1"], "--beta")


def test_synth_writes_a_loadable_set(home, tmp_path, capsys):
    out = tmp_path / "s.parquet"
    assert main(["traces", "synth", "--queries", "2000", "--like",
                 "qwen2.5-math-7b-instruct_gaokao2023en_greedy", "--out", str(out)]) == 0
    assert "wrote 2,000 synthetic queries" in capsys.readouterr().out
    ts = load_trace_set(str(out))
    assert ts.n_queries == 2000 and ts.meta["like"] == "qwen2.5-math-7b-instruct_gaokao2023en_greedy"
    cli_error(capsys, ["traces", "synth", "--queries", "5", "--like",
                            "gpt-4_gsm8k_t0.7_k6", "--out", str(tmp_path / "s.csv")], "--out")
    cli_error(capsys, ["traces", "synth", "--queries", "0", "--like", "x", "--out", "y"],
                   "--queries")


def test_predict_prints_ood_error_per_set_and_predictor(home, capsys):
    assert main(["traces", "predict", "--train", "qwen25-math-instruct_math100_t0.7_k8",
                 "--test", "qwen2.5-math-7b-instruct_minerva_math_greedy"]) == 0
    out = capsys.readouterr().out
    assert "MAE log tau" in out and "Spearman" in out and "n/a (constant)" in out
    assert out.count("qwen2.5-math-7b-instruct_minerva_math_greedy") == 2
    cli_error(capsys, ["traces", "predict", "--test", "nope"], "field '--test'")


@pytest.mark.parametrize("cmd", ["list", "show", "import", "fit", "synth", "predict"])
def test_help_documents_every_option(cmd, capsys):
    ap = build_parser()
    with pytest.raises(SystemExit) as ex:
        ap.parse_args(["traces", cmd, "--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    sub = ap._subparsers._group_actions[0].choices["traces"]._subparsers._group_actions[0].choices[cmd]
    for action in sub._actions:
        if action.help is None:
            continue
        assert action.help, action.dest
        for opt in action.option_strings:
            assert opt in out


def test_embedded_provenance_file_is_current():
    from traces.embed import provenance_markdown
    from traces.registry import embedded_dir

    assert (embedded_dir() / "PROVENANCE.md").read_text() == provenance_markdown()


def test_import_of_our_own_format_renames_and_keeps_provenance_and_sidecar(home, tmp_path, capsys):
    """A trace file collected elsewhere (``traces collect`` output) imports under a new name."""
    import numpy as np

    from traces.schema import TraceSet

    src = load_trace_set("qwen25-math-instruct_math100_t0.7_k8")
    collected = tmp_path / "gpu-box.parquet"
    src.write(collected)
    (tmp_path / "gpu-box.samples.jsonl").write_text('{"query_id": "math/0"}\n')
    assert main(["traces", "import", "clearsim", str(collected), "--name", "mine"]) == 0
    got = TraceSet.read(home / "traces" / "mine.parquet")
    assert got.name == "mine" and got.meta["source"] == src.meta["source"]
    assert got.meta["imported_from"] == str(collected.resolve())
    assert np.array_equal(got.sample_tokens, src.sample_tokens)
    assert (home / "traces" / "mine.samples.jsonl").read_text() == '{"query_id": "math/0"}\n'
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    cli_error(capsys, ["traces", "import", "clearsim", str(tmp_path / "junk.parquet"),
                            "--name", "junk"], "not a clearsim trace file")
    assert not (home / "traces" / "junk.parquet").exists()
