"""The qwen-harness importer (Qwen2.5-Math evaluation output): token counting through an
injected tokenizer, validation of every line, nothing written on error, and the real files."""

import json
import sys

import numpy as np
import pytest

from sim.foundation.errors import UserError
from traces.api import import_traces
from traces.importers import import_qwen_harness, load_tokenizer
from traces.registry import load_trace_set, user_dir


class FakeTokenizer:
    """Stands in for a Hugging Face tokenizer: one token per whitespace-separated word."""

    name_or_path = "fake-whitespace"

    def __init__(self):
        self.calls = 0

    def encode(self, text, add_special_tokens=True):
        assert add_special_tokens is False
        self.calls += 1
        return text.split()


GOOD = {"idx": 0, "question": "what is one plus one", "level": "Level 2", "type": "Algebra",
        "code": ["one plus one is two", "it is three " + "x " * 10], "score": [True, False]}


def write(path, lines):
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines))
    return path


def test_counts_tokens_and_keeps_numbers_only(tmp_path):
    second = {"idx": 1, "question": "q two", "code": ["a b c"], "score": [True], "subfield": "Geometry"}
    ts = import_qwen_harness(write(tmp_path / "Model__toyset.jsonl", [GOOD, second]), "toy",
                             FakeTokenizer(), max_tokens=10)
    assert ts.query_id.tolist() == ["toyset/0", "toyset/1"] and set(ts.dataset) == {"toyset"}
    assert ts.prompt_tokens.tolist() == [5, 2]
    assert ts.sample_tokens.tolist() == [5, 13, 3]
    assert ts.sample_correct.tolist() == [True, False, True]
    assert ts.sample_truncated.tolist() == [False, True, False]  # 13 >= cap 10
    assert ts.level.tolist() == [2, -1] and ts.subject.tolist() == ["Algebra", "Geometry"]
    assert ts.meta["format"] == "qwen-harness" and "fake-whitespace" in ts.meta["tokens"]
    # no text anywhere in the stored table
    blob = ts.to_table().to_pandas().to_json()
    assert "plus" not in blob and "three" not in blob


BAD = [
    ('{"idx": 0, "question": "q", "code": ["a"', "", "not valid JSON"),
    (dict(GOOD, score=[True, "yes"]), "field 'score[1]'", "true or false"),
    (dict(GOOD, score=[True]), "field 'score'", "list of 2"),
    (dict(GOOD, code=[]), "field 'code'", "non-empty list"),
    (dict(GOOD, code=["ok", 5]), "field 'code[1]'", "completion text"),
    ({k: v for k, v in GOOD.items() if k != "idx"}, "field 'idx'", "non-negative integer"),
    (dict(GOOD, idx=-2), "field 'idx'", "non-negative"),
    (dict(GOOD, level="hard"), "field 'level'", "Level N"),
    (dict(GOOD, question=None), "field 'question'", "problem text"),
    (dict(GOOD, idx=7, score=[1, 0]), "field 'score[0]'", "true or false"),
]


@pytest.mark.parametrize("line,field,what", BAD)
def test_bad_lines_name_file_line_and_field_and_write_nothing(tmp_path, monkeypatch, line, field, what):
    monkeypatch.setenv("CLEARSIM_HOME", str(tmp_path / "home"))
    path = write(tmp_path / "bad.jsonl", [dict(GOOD, idx=9), line])
    tok = FakeTokenizer()
    with pytest.raises(UserError) as err:
        import_traces("qwen-harness", path, "bad", tokenizer=tok)
    msg = str(err.value)
    assert msg.startswith(f"{path}:2: ") and field in msg and what in msg, msg
    assert tok.calls == 0  # validated before any counting
    assert not (user_dir() / "bad.parquet").exists()


def test_duplicates_missing_tokenizer_and_missing_transformers(tmp_path, monkeypatch):
    path = write(tmp_path / "d.jsonl", [GOOD, GOOD])
    with pytest.raises(UserError, match="duplicate idx 0"):
        import_qwen_harness(path, "d", FakeTokenizer())
    with pytest.raises(UserError, match=r"field '--tokenizer'.*needs --tokenizer HF_NAME"):
        import_qwen_harness(path, "d", None)
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"needs the 'transformers' package"):
        load_tokenizer("Qwen/Qwen2.5-Math-7B-Instruct")
    monkeypatch.setenv("CLEARSIM_HOME", str(tmp_path / "home"))
    ok = write(tmp_path / "ok.jsonl", [GOOD])
    with pytest.raises(UserError, match="transformers"):
        import_traces("qwen-harness", ok, "x", tokenizer="Qwen/Qwen2.5-Math-7B-Instruct")
    assert not (user_dir() / "x.parquet").exists()


@pytest.mark.parametrize("raw,embedded", [
    ("raw/prime/Qwen2.5-Math-7B-Instruct__olympiadbench.jsonl",
     "qwen2.5-math-7b-instruct_olympiadbench_greedy"),
    ("raw/prime/Meta-Llama-3.1-8B-Instruct__minerva_math.jsonl",
     "meta-llama-3.1-8b-instruct_minerva_math_greedy"),
    ("raw/qwen25-math/math_cot_100.jsonl", "qwen25-math-instruct_math100_t0.7_k8"),
])
def test_real_harness_files_agree_with_the_embedded_sets(shared_data, raw, embedded):
    dataset = "math" if "math_cot" in raw else None
    ts = import_qwen_harness(shared_data / raw, "r", FakeTokenizer(), dataset=dataset)
    ref = load_trace_set(embedded)
    # everything but token counts (which need the real BPE) equals the embedded import
    assert ts.query_id.tolist() == ref.query_id.tolist()
    assert np.array_equal(ts.offsets, ref.offsets)
    assert np.array_equal(ts.sample_correct, ref.sample_correct)
    assert ts.level.tolist() == ref.level.tolist()
    assert ts.subject.tolist() == ref.subject.tolist()
    # word counts track BPE counts: strongly rank-correlated
    from scipy.stats import spearmanr

    assert spearmanr(ts.sample_tokens, ref.sample_tokens).statistic > 0.85
