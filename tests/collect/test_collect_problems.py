"""Loading problem sets: the named benchmarks, custom JSONL files, and every bad input."""

from __future__ import annotations

import json
import sys
import types

import pytest

from sim.foundation.errors import UserError
from traces.collect.problems import load_problems

EXPECTED = {"gsm8k": 1319, "math500": 500, "aime24": 30, "amc23": 40}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_named_sets_load_from_the_shared_copies(shared_data, name):
    pset = load_problems(name, problems_dir=shared_data / "problems")
    assert len(pset.problems) == EXPECTED[name]
    assert pset.problems[0].query_id == f"{name}/0"
    assert all(p.question and p.reference for p in pset.problems)
    assert pset.source["kind"] == "file" and len(pset.source["sha256"]) == 64
    assert len({p.query_id for p in pset.problems}) == len(pset.problems)


def test_named_set_fields_are_normalised(shared_data):
    d = shared_data / "problems"
    gsm = load_problems("gsm8k", problems_dir=d).problems[0]
    assert gsm.reference == "18"  # the number after '####', not the worked answer
    assert "####" in gsm.solution
    math = load_problems("math500", problems_dir=d).problems[0]
    assert math.level == 2 and math.subject == "Precalculus"
    assert "\\boxed" in math.solution
    amc = load_problems("amc23", problems_dir=d).problems
    assert amc[0].reference == "27"  # 27.0 in the file
    assert all(p.level is None and p.solution is None for p in amc)
    assert load_problems("aime24", problems_dir=d).problems[7].reference == "025"


def test_env_var_names_the_problems_dir(shared_data, monkeypatch):
    monkeypatch.setenv("CLEARSIM_PROBLEMS_DIR", str(shared_data / "problems"))
    assert len(load_problems("aime24").problems) == 30


def test_limit_and_content_hash(shared_data):
    d = shared_data / "problems"
    a = load_problems("math500", problems_dir=d, limit=10)
    b = load_problems("math500", problems_dir=d, limit=11)
    assert len(a.problems) == 10 and a.source["limit"] == 10
    assert a.content_hash != b.content_hash
    assert a.content_hash == load_problems("math500", problems_dir=d, limit=10).content_hash


def test_custom_jsonl_with_named_fields(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text(
        json.dumps({"prompt": "What is 1 plus 2?", "gold": 3, "uid": "a", "level": "Level 4"})
        + "\n\n"
        + json.dumps({"prompt": "What is 2 plus 2?", "gold": 4.0, "uid": "b"})
        + "\n"
    )
    pset = load_problems(str(f), question_field="prompt", answer_field="gold", id_field="uid")
    assert [p.query_id for p in pset.problems] == ["mine/a", "mine/b"]
    assert [p.reference for p in pset.problems] == ["3", "4"]
    assert pset.problems[0].level == 4 and pset.problems[1].level is None
    assert pset.default_grader == "math"
    renamed = load_problems(str(f), question_field="prompt", answer_field="gold",
                            dataset_name="arith")
    assert renamed.problems[1].query_id == "arith/1"


def test_named_set_from_the_hub_through_datasets(monkeypatch):
    calls = []

    def load_dataset(*args, split):
        calls.append((args, split))
        return [{"problem": "What is 1 plus 1?", "answer": "2", "id": 60}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    pset = load_problems("aime24")
    assert calls == [(("HuggingFaceH4/aime_2024",), "train")]
    assert pset.source["hf_id"] == "HuggingFaceH4/aime_2024"
    assert pset.problems[0].query_id == "aime24/0" and pset.problems[0].reference == "2"


# ------------------------------------------------------------------ bad input
def _error(excinfo) -> str:
    return str(excinfo.value)


def test_unknown_set_suggests_the_close_name():
    with pytest.raises(UserError) as e:
        load_problems("math50")
    assert "unknown problem set 'math50'" in _error(e) and "did you mean 'math500'" in _error(e)
    assert "--problems" in _error(e)


def test_missing_file_is_named():
    with pytest.raises(UserError, match="problems file not found"):
        load_problems("nowhere/problems.jsonl")


def test_named_set_without_local_copy_or_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(UserError) as e:
        load_problems("gsm8k")
    msg = _error(e)
    assert "--problems-dir" in msg and "gsm8k_test.jsonl" in msg and "clearsim[collect]" in msg


def test_missing_answer_field_names_file_line_field_and_fix(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"question": "q1", "answer": "1"}) + "\n"
                 + json.dumps({"question": "q2", "solution": "2"}) + "\n")
    with pytest.raises(UserError) as e:
        load_problems(str(f))
    msg = _error(e)
    assert f"{f}:2" in msg and "field 'answer'" in msg and "--answer-field" in msg
    assert "question, solution" in msg  # tells which fields the record has


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "no problems in file"),
        ("{not json\n", "not valid JSON"),
        (json.dumps([1, 2]) + "\n", "expected a JSON object"),
        (json.dumps({"question": "", "answer": "1"}) + "\n", "non-empty question"),
        (json.dumps({"question": "q", "answer": None}) + "\n", "reference answer"),
        (json.dumps({"question": "q", "answer": "  "}) + "\n", "empty reference"),
    ],
)
def test_bad_files(tmp_path, content, expected):
    f = tmp_path / "p.jsonl"
    f.write_text(content)
    with pytest.raises(UserError, match=expected):
        load_problems(str(f))


def test_duplicate_ids_are_refused(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"question": "q", "answer": "1", "id": 7}) + "\n"
                         for _ in range(2)))
    with pytest.raises(UserError, match="duplicate id '7'"):
        load_problems(str(f), id_field="id")


def test_bad_limit_and_problems_dir(tmp_path):
    with pytest.raises(UserError, match="positive integer"):
        load_problems("gsm8k", limit=0)
    with pytest.raises(UserError, match="problems directory not found"):
        load_problems("gsm8k", problems_dir=tmp_path / "missing")
    with pytest.raises(UserError, match="no gsm8k_test.jsonl or gsm8k.jsonl here"):
        load_problems("gsm8k", problems_dir=tmp_path)


def test_gsm8k_answers_must_have_the_marker(tmp_path):
    (tmp_path / "gsm8k_test.jsonl").write_text(json.dumps({"question": "q", "answer": "7"}) + "\n")
    with pytest.raises(UserError, match="#### N"):
        load_problems("gsm8k", problems_dir=tmp_path)
