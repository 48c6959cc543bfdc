"""Table-driven: every class of broken input found in issue 13 gets the bad-input contract.

Each row builds its input files in a fresh folder and runs ``clearsim`` (run-away rows in a
subprocess with a memory limit and a timeout): exit code 2, exactly one line on stderr naming the file or field,
no traceback, and no file left behind (the folder holds only what the row wrote).  The timeout
and memory limit are run-away guards (an alias bomb or a 10^12-query horizon used to take
minutes and gigabytes), not speed measurements: the machine running the suite may be loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tests/policies (on sys.path via tests/) must not shadow policies/
    sys.path.insert(0, str(REPO))

from helpers import make_traces  # noqa: E402
MEM_LIMIT = 3 * 2**30  # address space of the subprocess; an expanded alias bomb needs far more
TIMEOUT_S = 60  # interpreter start-up (numpy, pandas, pyarrow) on a loaded 2-core machine

SMALL = {
    "name": "small",
    "seed": 0,
    "budget": 250,
    "traces": {"sets": ["qwen25-math-instruct_math100_t0.7_k8"]},
    "arrivals": {"process": "poisson", "rate": 40, "queries": 30},
    "policies": ["uniform"],
}


def scenario(**changes) -> str:
    """SMALL with dotted ``changes`` (``arrivals__rate=...``) as YAML text."""
    data = json.loads(json.dumps(SMALL))
    for key, value in changes.items():
        node = data
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return yaml.safe_dump(data)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
    for p, c in zip("abcdefgh", "bcdefghi")
)


def bomb_in(field: str) -> str:
    """A billion-laughs document whose last alias lands in ``field`` of SMALL."""
    body = yaml.safe_dump({k: v for k, v in SMALL.items() if k != field})
    return BOMB + body + f"{field}: *i\n"


def _set_table(good: pa.Table, col: str, arr) -> pa.Table:
    return good.set_column(good.schema.get_field_index(col), col, arr)


def trace_file(kind: str):
    """A writer of a corrupt trace parquet of ``kind`` (content broken, form fine)."""

    def write(path: Path) -> None:
        good = make_traces([[(100, True), (200, False)], [(300, True)]]).to_table()
        meta = good.schema.metadata
        t = good
        if kind == "empty":
            t = good.slice(0, 0)
        elif kind == "zero-samples":
            t = _set_table(good, "sample_tokens", pa.array([[100, 200], []], pa.list_(pa.int64())))
            t = _set_table(t, "sample_correct", pa.array([[True, False], []], pa.list_(pa.bool_())))
            t = _set_table(t, "sample_truncated", pa.array([[False, False], []], pa.list_(pa.bool_())))
        elif kind == "nan-tokens":
            t = _set_table(good, "sample_tokens", pa.array([[100.0, float("nan")], [300.0]]))
        elif kind == "negative-tokens":
            t = _set_table(good, "sample_tokens", pa.array([[100, -5], [300]]))
        elif kind == "string-tokens":
            t = _set_table(good, "sample_tokens", pa.array([["100", "x"], ["300"]]))
        elif kind == "mismatched-lists":
            t = _set_table(good, "sample_correct", pa.array([[True], [True, False]]))
        elif kind == "missing-column":
            t = good.drop_columns(["prompt_tokens"])
        elif kind == "negative-prompt":
            t = _set_table(good, "prompt_tokens", pa.array([50, -1], pa.int64()))
        pq.write_table(t.replace_schema_metadata(meta), path)

    return write


TRACE_KINDS = ["empty", "zero-samples", "nan-tokens", "negative-tokens", "string-tokens",
               "mismatched-lists", "missing-column", "negative-prompt"]

# (id, {file: text or writer}, argv, texts the one stderr line must hold)
ROWS = [
    # numbers that parse but make no sense
    ("budget-inf", {"s.yaml": scenario(budget=float("inf"))}, ["run", "s.yaml"], ["budget"]),
    ("budget-1e300", {"s.yaml": scenario(budget=1e300)}, ["run", "s.yaml"], ["budget"]),
    ("rate-inf", {"s.yaml": scenario(arrivals__rate=float("inf"))}, ["run", "s.yaml"],
     ["arrivals.rate"]),
    ("rate-nan", {"s.yaml": scenario(arrivals__rate=float("nan"))}, ["run", "s.yaml"],
     ["arrivals.rate"]),
    ("rate-1e-300", {"s.yaml": scenario(arrivals__rate=1e-300)}, ["run", "s.yaml"],
     ["arrivals.rate"]),
    # found by the fuzz test: an empty pair used to raise IndexError
    ("schedule-empty-pair", {"s.yaml": scenario(arrivals__process="piecewise", arrivals__schedule=[[]])},
     ["run", "s.yaml"], ["arrivals.schedule"]),
    ("queries-1e12", {"s.yaml": scenario(arrivals__queries=10**12)}, ["run", "s.yaml"],
     ["arrivals.queries"]),
    ("queries-1e12-flag", {}, ["run", "default", "--queries", str(10**12)], ["arrivals.queries"]),
    ("seed-2^70", {"s.yaml": scenario(seed=2**70)}, ["run", "s.yaml"], ["seed"]),
    ("seed-2^70-flag", {}, ["run", "default", "--seed", str(2**70)], ["seed"]),
    ("sigma-overflow", {"s.yaml": scenario(predictor__kind="noisy", predictor__sigma=1e6)},
     ["run", "s.yaml"], ["predictor.sigma"]),
    ("replicas-1e9", {"s.yaml": scenario(engine__replicas=10**9)}, ["run", "s.yaml"],
     ["engine.replicas"]),
    ("plan-accuracy-2", {"p.yaml": yaml.safe_dump({"base": "default", "slo": {
        "p99_e2e_s": 10, "accuracy": 2}})}, ["plan", "p.yaml"], ["slo.accuracy"]),
    ("plan-replicas-1e9", {"p.yaml": yaml.safe_dump({"base": "default", "slo": {"p99_e2e_s": 10},
                                                      "search": {"max": 10**9}})},
     ["plan", "p.yaml"], ["search.max"]),
    # YAML alias bombs in fields expecting another type, or a list
    ("bomb-in-budget", {"s.yaml": bomb_in("budget")}, ["run", "s.yaml"], ["s.yaml", "aliases"]),
    ("bomb-in-policies", {"s.yaml": bomb_in("policies")}, ["run", "s.yaml"], ["aliases"]),
    ("bomb-validate", {"s.yaml": bomb_in("seed")}, ["validate", "s.yaml"], ["aliases"]),
    ("deep-nesting", {"s.yaml": "budget: " + "[" * 5000 + "]" * 5000 + "\n"},
     ["validate", "s.yaml"], ["s.yaml"]),
    ("long-string", {"s.yaml": scenario(arrivals__process="x" * 1_000_000)},
     ["validate", "s.yaml"], ["arrivals.process"]),
    # the same set listed twice
    ("set-twice", {"s.yaml": scenario(traces__sets=["qwen25-math-instruct_math100_t0.7_k8"] * 2)},
     ["run", "s.yaml"], ["traces.sets", "twice"]),
    # unwritable outputs
    ("out-under-file", {"f": "x"}, ["run", "default", "--queries", "20", "--out", "f/run"], ["f"]),
    ("out-under-proc", {}, ["run", "default", "--queries", "20", "--out", "/proc/clearsim-x"],
     ["/proc"]),
    ("out-long-component", {}, ["run", "default", "--queries", "20", "--out", "r" * 300],
     ["255"]),
    # the CLI itself
    ("no-command", {}, [], ["command"]),
    ("policies-empty", {}, ["run", "default", "--policies", ""], ["polic"]),
]
for kind in TRACE_KINDS:
    ROWS.append((f"trace-{kind}-run", {"t.parquet": trace_file(kind),
                                       "s.yaml": scenario(traces__sets=["t.parquet"])},
                 ["run", "s.yaml"], ["t.parquet"]))
    ROWS.append((f"trace-{kind}-show", {"t.parquet": trace_file(kind)},
                 ["traces", "show", "t.parquet"], ["t.parquet"]))
for kind in ("empty", "nan-tokens", "negative-prompt"):
    ROWS.append((f"trace-{kind}-fit", {"t.parquet": trace_file(kind)},
                 ["traces", "fit", "t.parquet"], ["t.parquet"]))
    ROWS.append((f"trace-{kind}-import", {"t.parquet": trace_file(kind)},
                 ["traces", "import", "clearsim", "t.parquet", "--name", "bad"], ["t.parquet"]))

ARRIVALS = {
    "csv-bad-timestamp": ("a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                          "2023-11-16 18:15:46,100,10\nnot a time,120,10\n"),
    "csv-negative-length": ("a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                            "2023-11-16 18:15:46,100,10\n2023-11-16 18:15:47,-5,10\n"),
    "jsonl-nan-timestamp": ("a.jsonl", '{"timestamp": 0, "input_length": 10}\n'
                            '{"timestamp": NaN, "input_length": 10}\n'
                            '{"timestamp": 2000, "input_length": 10}\n'),
    "jsonl-nan-length": ("a.jsonl", '{"timestamp": 0, "input_length": 10}\n'
                         '{"timestamp": 1000, "input_length": NaN}\n'),
    "jsonl-string-timestamp": ("a.jsonl", '{"timestamp": 0, "input_length": 10}\n'
                               '{"timestamp": "soon", "input_length": 10}\n'),
    "jsonl-empty": ("a.jsonl", ""),
}
for key, (fname, text) in ARRIVALS.items():
    ROWS.append((f"arrivals-{key}", {fname: text, "s.yaml": scenario(
        arrivals={"process": "replay", "trace": fname, "queries": 20})},
        ["run", "s.yaml"], [fname]))


# Recorded vLLM runs (`calibrate`): a shipped CPU recording with one file broken.
RECORDED = REPO / "sim" / "calibration_data" / "cpu_runs" / "tiny-4L-h512_r1.5"


def recorded(edit):
    """A writer of a copy of RECORDED at ``path`` with ``edit(folder)`` applied."""

    def write(path: Path) -> None:
        import shutil

        shutil.copytree(RECORDED, path)
        edit(path)

    return write


def meta_edit(fn):
    def edit(d: Path) -> None:
        m = json.loads((d / "meta.json").read_text())
        fn(m)
        (d / "meta.json").write_text(json.dumps(m))
    return edit


def request_edit(fn):
    def edit(d: Path) -> None:
        rows = [json.loads(line) for line in (d / "requests.jsonl").read_text().splitlines()]
        fn(rows)
        (d / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return edit


def file_text(name: str, text: str):
    return lambda d: (d / name).write_text(text)


CALIBRATE = {  # id: (edit, texts the line must hold besides the run's folder)
    "meta-not-json": (file_text("meta.json", "{bad"), ["meta.json", "JSON"]),
    "meta-list": (file_text("meta.json", "[1, 2]"), ["meta.json", "object"]),
    "dp-zero": (meta_edit(lambda m: m["engine_kwargs"].update(data_parallel_size=0)),
                ["meta.json", "data_parallel_size", "4,096"]),
    "dp-huge": (meta_edit(lambda m: m["engine_kwargs"].update(data_parallel_size=10**9)),
                ["data_parallel_size", "4,096"]),
    "dp-string": (meta_edit(lambda m: m["engine_kwargs"].update(data_parallel_size="two")),
                  ["data_parallel_size"]),
    "dp-more-than-gpus": (meta_edit(lambda m: (m["engine_kwargs"].update(data_parallel_size=4),
                                               m.setdefault("hardware", {}).update(device_count=2))),
                          ["data_parallel_size", "device_count"]),
    "seqs-nan": (lambda d: (d / "meta.json").write_text((d / "meta.json").read_text().replace(
        '"max_num_seqs": 8', '"max_num_seqs": NaN')), ["max_num_seqs"]),
    "blocks-negative": (meta_edit(lambda m: m["kv_cache"].update(num_gpu_blocks=-1)),
                        ["kv_cache.num_gpu_blocks"]),
    "requests-empty": (file_text("requests.jsonl", ""), ["requests.jsonl", "no requests"]),
    "requests-garbage": (file_text("requests.jsonl", "hello\n"), ["requests.jsonl:1"]),
    "tokens-string": (request_edit(lambda r: r[3].update(output_toks="12")),
                      ["requests.jsonl:4", "output_toks"]),
    "tokens-negative": (request_edit(lambda r: r[3].update(input_toks=-5)),
                        ["requests.jsonl:4", "input_toks"]),
    "tokens-2^100": (request_edit(lambda r: r[1].update(output_toks=2**100)),
                     ["requests.jsonl:2", "output_toks"]),
    "timestamp-nan": (lambda d: (d / "requests.jsonl").write_text(
        (d / "requests.jsonl").read_text().replace('"queued_ts": ', '"queued_ts": NaN, "x": ', 1)),
        ["requests.jsonl:1", "queued_ts"]),
    "timestamp-missing": (request_edit(lambda r: r[2].pop("first_token_ts")),
                          ["requests.jsonl:3", "first_token_ts"]),
    "timestamps-reversed": (request_edit(lambda r: r[2].update(last_token_ts=r[2]["queued_ts"] - 1)),
                            ["requests.jsonl:3", "last_token_ts"]),
    "one-token-outputs": (request_edit(lambda r: [x.update(output_toks=1) for x in r]),
                          ["requests.jsonl", "TPOT"]),
    "timeseries-garbage": (file_text("timeseries.csv", '\x00garbage,,\n"unclosed\n'),
                           ["timeseries.csv", "CSV"]),
    "timeseries-empty": (file_text("timeseries.csv", ""), ["timeseries.csv"]),
    "timeseries-nan": (file_text("timeseries.csv", "t,running,waiting\n1,nan,0\n"),
                       ["timeseries.csv:2", "running"]),
    "timeseries-negative": (file_text("timeseries.csv", "t,running,waiting\n1,2,-4\n"),
                            ["timeseries.csv:2", "waiting"]),
    "timeseries-binary": (lambda d: (d / "timeseries.csv").write_bytes(b"\xff\xfe\x00x"),
                          ["timeseries.csv", "UTF-8"]),
    "no-meta": (lambda d: (d / "meta.json").unlink(), ["meta.json"]),
    "no-requests": (lambda d: (d / "requests.jsonl").unlink(), ["requests.jsonl"]),
}
for key, (edit, texts) in CALIBRATE.items():
    ROWS.append((f"calibrate-{key}", {"run": recorded(edit)}, ["calibrate", "run"], texts))
for key in ("dp-huge", "tokens-negative", "timeseries-garbage"):  # the same one reader
    edit, texts = CALIBRATE[key]
    ROWS.append((f"calibrate-fit-{key}", {"run": recorded(edit)},
                 ["calibrate", "--fit", "run", "--check", str(RECORDED)], texts))
ROWS.append(("calibrate-no-folder", {}, ["calibrate", "nowhere"], ["nowhere", "no such folder"]))


# clearsim's own run and sweep folders (`report`): one small real folder each, then broken.
_GOOD: dict[str, Path] = {}


def _good(kind: str) -> Path:
    """A real run (or sweep) folder, made once per test session."""
    if kind not in _GOOD:
        import atexit
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="clearsim-good-"))
        atexit.register(shutil.rmtree, root, True)
        (root / "s.yaml").write_text(scenario())
        if kind == "run":
            from sim.experiments.runner import run

            run(str(root / "s.yaml"), out=root / "run", report=False)
        else:
            from sim.experiments.sweep import sweep

            sweep({"base": str(root / "s.yaml"), "grid": {"budget": [200, 300]}, "seeds": [0]},
                  out=root / "sweep", report=False, progress=False)
        _GOOD[kind] = root / kind
    return _GOOD[kind]


def folder_with(kind: str, name: str, damage):
    """A writer of a copy of the good ``kind`` folder with file ``name`` damaged by ``damage``."""

    def write(path: Path) -> None:
        import shutil

        shutil.copytree(_good(kind), path)
        damage(path / name)

    return write


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def garbage(p: Path) -> None:
    p.write_bytes(b"PAR1 this is not parquet at all PAR1")


def drop_column(col: str):
    def damage(p: Path) -> None:
        t = pq.read_table(p)
        pq.write_table(t.drop_columns([col]), p)
    return damage


def stringify(col: str):
    def damage(p: Path) -> None:
        t = pq.read_table(p)
        i = t.schema.get_field_index(col)
        pq.write_table(t.set_column(i, col, pa.array([str(v) for v in t[col].to_pylist()])), p)
    return damage


def no_rows(p: Path) -> None:
    t = pq.read_table(p)
    pq.write_table(t.slice(0, 0), p)


REPORT = [  # (id, kind, file, damage, texts)
    ("queries-truncated", "run", "queries.parquet", truncate, ["queries.parquet", "corrupt"]),
    ("queries-garbage", "run", "queries.parquet", garbage, ["queries.parquet", "Parquet"]),
    ("queries-no-column", "run", "queries.parquet", drop_column("finish_s"),
     ["queries.parquet", "finish_s"]),
    ("queries-string-column", "run", "queries.parquet", stringify("expected_accuracy"),
     ["queries.parquet", "expected_accuracy"]),
    ("queries-no-rows", "run", "queries.parquet", no_rows, ["queries.parquet", "no rows"]),
    ("timeseries-truncated", "run", "timeseries.parquet", truncate, ["timeseries.parquet"]),
    ("summary-garbage", "run", "summary.json", lambda p: p.write_text("{"), ["summary.json"]),
    ("summary-no-results", "run", "summary.json", lambda p: p.write_text('{"scenario": "x"}'),
     ["summary.json"]),
    ("results-truncated", "sweep", "results.parquet", truncate, ["results.parquet", "corrupt"]),
    ("results-no-column", "sweep", "results.parquet", drop_column("cell"),
     ["results.parquet", "cell"]),
    ("aggregate-garbage", "sweep", "aggregate.parquet", garbage, ["aggregate.parquet"]),
    ("aggregate-no-column", "sweep", "aggregate.parquet", drop_column("expected_accuracy_mean"),
     ["aggregate.parquet", "expected_accuracy_mean"]),
    ("aggregate-missing", "sweep", "aggregate.parquet", lambda p: p.unlink(),
     ["aggregate.parquet"]),
    ("manifest-garbage", "sweep", "sweep.json", lambda p: p.write_text("[]"), ["sweep.json"]),
]
for key, kind, fname, damage, texts in REPORT:
    ROWS.append((f"report-{key}", {"d": folder_with(kind, fname, damage)}, ["report", "d"], texts))
for key, target, texts in [("under-file", "f/report.html", ["f"]),
                           ("under-proc", "/proc/clearsim-report.html", ["/proc"]),
                           ("into-folder", "d", ["folder"]),
                           ("long-name", "r" * 300 + ".html", ["255"])]:
    ROWS.append((f"report-out-{key}", {"d": folder_with("run", "summary.json", lambda p: None),
                                       "f": "x"}, ["report", "d", "--out", target], texts))

# Sweeps refused before anything runs.
SWEEP_BASE = {"base": "s.yaml", "seeds": [0], "set": {"arrivals.queries": 20}}
for key, changes, argv_extra, texts in [
    ("empty-grid-key", {"grid": {"budget": []}}, [], ["grid.budget", "non-empty"]),
    ("grid-not-mapping", {"grid": [1, 2]}, [], ["grid"]),
    ("no-seeds", {"seeds": []}, [], ["seeds"]),
    ("resume-no-folder", {"grid": {"budget": [200]}}, ["--resume", "--out", "nowhere"],
     ["nowhere", "--resume"]),
]:
    ROWS.append((f"sweep-{key}", {"s.yaml": scenario(), "sw.yaml": yaml.safe_dump(
        {**SWEEP_BASE, **changes})}, ["sweep", "sw.yaml", *argv_extra], texts))


# The child sets its own memory limit before importing clearsim: no ``preexec_fn``, which can
# deadlock the forked child when the test process has threads (left by earlier tests).
LIMITED = ("import resource, runpy, sys; "
           f"resource.setrlimit(resource.RLIMIT_AS, ({MEM_LIMIT}, {MEM_LIMIT})); "
           "sys.argv = ['clearsim', *sys.argv[1:]]; runpy.run_module('sim', run_name='__main__')")


def run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLEARSIM_HOME": str(cwd / ".home"), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", LIMITED, *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# Rows whose input once took minutes or gigabytes run in a subprocess with a memory limit and
# a timeout; the others run in-process (same contract, much faster on a loaded machine).
RUNAWAY = {"bomb-in-budget", "bomb-in-policies", "queries-1e12", "replicas-1e9", "deep-nesting"}


@pytest.mark.parametrize("name, files, argv, expected", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_contract(tmp_path, monkeypatch, capsys, name, files, argv, expected):
    for fname, content in files.items():
        if callable(content):
            content(tmp_path / fname)
        else:
            (tmp_path / fname).write_text(content)
    before = _tree(tmp_path)
    if name in RUNAWAY:
        proc = run_cli(argv, tmp_path)
        code, err = proc.returncode, proc.stderr
    else:
        from sim.experiments.cli import main

        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("CLEARSIM_HOME", str(tmp_path / ".home"))
        code = main(argv)
        err = capsys.readouterr().err
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-2000:]
    assert len(lines[0]) < 600, lines[0][:600]  # bad values are quoted cut short
    for text in expected:
        assert text in lines[0], lines[0]
    left = _tree(tmp_path) - before - {".home"}
    assert not left, left  # no output folder, no partial or hidden file


@pytest.mark.parametrize("name, expected", [("../../escaped", "escaped"), ("/etc/passwd", "etc-passwd"),
                                             ("..", "run"), ("a" * 300, "a" * 100),
                                             ("ok_name-1.2", "ok_name-1.2")])
def test_default_folders_stay_under_runs_and_sweeps(name, expected):
    from sim.experiments.outdirs import safe_name
    from sim.experiments.runner import default_out_dir
    from sim.experiments.sweep import default_sweep_dir

    assert safe_name(name) == expected
    run_dir, sweep_dir = default_out_dir(name), default_sweep_dir(name)
    assert run_dir.parent == Path("runs") and run_dir.name.startswith(expected + "-")
    assert sweep_dir.parent == Path("sweeps")
    assert ".." not in run_dir.parts and ".." not in sweep_dir.parts


def test_stale_partial_folders_of_killed_runs_are_removed(tmp_path):
    import time

    from sim.experiments.outdirs import clean_stale
    from sim.experiments.runner import simulate, write_run

    old = tmp_path / ".r-1.abc.partial"
    old.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    busy = tmp_path / ".r-3.def.partial"  # another run writing now
    busy.mkdir()
    write_run(simulate("default", queries=40), tmp_path / "r-2", report=False)
    assert not old.exists() and busy.is_dir()  # the stale one only
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r-3.def.partial", "r-2"]
    assert clean_stale(tmp_path) == []  # the fresh one is not stale
