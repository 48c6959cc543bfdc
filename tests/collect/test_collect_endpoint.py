"""The collector against a fake OpenAI-compatible server on loopback (``--endpoint``)."""

from __future__ import annotations

import csv
import json
import socket

import numpy as np
import pytest

from collect_fakes import FAKE_VERSION, FakeOpenAIServer, ServerControl
from sim.foundation.errors import UserError
from traces.collect import collect
from traces.collect.endpoint import parse_endpoint
from traces.collect.prompting import query_seed
from traces.registry import user_dir

BASE = dict(samples=4, max_tokens=40, grader="numeric", chunk_size=5, tick_seconds=0.02,
            retry_backoff=0.001, request_timeout=10.0)


def test_endpoint_collection_matches_the_offline_backend(fake_server, fake_vllm, addition):
    """Same seeds, same fake model: one request per sample gives the n=K request's trace."""
    served = collect(str(addition), endpoint=fake_server.url, concurrency=6, name="srv", **BASE)
    offline = collect(str(addition), model="fake/served-model", name="off", **BASE)
    for col in ("query_id", "prompt_tokens", "max_tokens", "offsets", "sample_tokens",
                "sample_correct", "sample_truncated"):
        assert np.array_equal(getattr(served.trace_set, col), getattr(offline.trace_set, col)), col
    ctl = fake_server.control
    sampling = {(b["temperature"], b["top_p"], b["top_k"], b["min_p"], b["repetition_penalty"],
                 b["n"], b["stream"]) for b in ctl.bodies}
    assert sampling == {(0.7, 0.8, -1, 0.0, 1.0, 1, True)}  # the server's defaults pinned off
    assert ctl.good == 48 and {s for _, s, _ in ctl.generated} == {
        query_seed(0, f"addition/{i}") + k for i in range(12) for k in range(4)}


def test_concurrency_is_bounded(addition):
    # Each request is held 0.1 s by the server, so three client threads overlap even on a
    # loaded machine (at 0.02 s they sometimes did not, and the lower bound failed).
    with FakeOpenAIServer(ServerControl(delay=0.1)) as server:
        collect(str(addition), endpoint=server.url, concurrency=3, **BASE)
        assert server.control.max_in_flight <= 3
        assert server.control.max_in_flight >= 2  # and actually used


def test_transient_errors_are_retried_with_backoff(addition):
    with FakeOpenAIServer(ServerControl(fail_first=5)) as server:
        res = collect(str(addition), endpoint=server.url, concurrency=1, retries=5, **BASE)
        assert server.control.requests == 48 + 5
    assert res.trace_set.n_queries == 12 and len(res.trace_set.sample_tokens) == 48


def test_giving_up_after_retries_then_resuming_exactly_once(addition):
    with FakeOpenAIServer(ServerControl(die_after=22)) as server:
        with pytest.raises(UserError, match="failed 3 times.*rerun the same command"):
            collect(str(addition), endpoint=server.url, concurrency=2, retries=2,
                    name="ep", **BASE)
        first_session = list(server.control.generated)
    committed = (user_dir() / "ep.collect" / "queries.jsonl").read_text().splitlines()
    assert 0 < len(committed) < 12
    with FakeOpenAIServer(ServerControl()) as server:
        res = collect(str(addition), endpoint=server.url, concurrency=2, name="ep", **BASE)
        second_session = list(server.control.generated)
    assert res.resumed == len(committed) and res.generated == 12 - len(committed)
    done_first = {json.loads(line)["query_id"] for line in committed}
    seeds_kept = {query_seed(0, q) + k for q in done_first for k in range(4)}
    seeds_second = [s for _, s, _ in second_session]
    assert len(seeds_second) == len(set(seeds_second)) == 4 * (12 - len(committed))
    assert not seeds_kept & set(seeds_second)  # no committed sample generated again
    assert len(res.trace_set.sample_tokens) == 48
    assert len(first_session) >= 22


def test_tokens_come_from_usage_and_the_cap_from_tokenize(addition):
    with FakeOpenAIServer(ServerControl(max_model_len=55)) as server:
        res = collect(str(addition), endpoint=server.url, **{**BASE, "max_tokens": 4096})
    ts = res.trace_set
    assert np.all(ts.max_tokens == 55 - ts.prompt_tokens)
    assert np.all(ts.sample_tokens <= ts.max_tokens[0])
    assert ts.sample_truncated.any()


def test_without_tokenize_an_oversized_cap_is_the_servers_error(addition):
    with FakeOpenAIServer(ServerControl(max_model_len=55, tokenize=False)) as server:
        with pytest.raises(UserError, match=r"HTTP 400.*maximum context length is 55"):
            collect(str(addition), endpoint=server.url, **{**BASE, "max_tokens": 4096})


def test_provenance_and_calibration_files(addition):
    with FakeOpenAIServer(ServerControl(delay=0.01)) as server:
        res = collect(str(addition), endpoint=server.url, concurrency=2, gpu="H100 SXM", **BASE)
        url = server.url
    meta = res.trace_set.meta
    assert meta["model"] == "fake/served-model" and meta["vllm_version"] == FAKE_VERSION
    assert meta["gpu"] == {"device_name": "H100 SXM"} and meta["backend"].startswith("endpoint")
    assert meta["sessions"][0]["endpoint"] == url
    run = res.serving_dir / "session-01"
    rows = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and {r["n"] for r in rows} == {1}
    for r in rows:
        assert r["queued_ts"] == r["scheduled_ts"] <= r["first_token_ts"] <= r["last_token_ts"]
    tokens = {r["request_id"]: r["output_toks"] for r in rows}
    assert tokens["addition/0#0"] == res.trace_set.sample_tokens[0]
    with (run / "timeseries.csv").open() as fh:
        ticks = list(csv.reader(fh))[1:]
    assert ticks and sum(float(t[2]) for t in ticks) > 0  # generation counter moved
    info = json.loads((run / "meta.json").read_text())
    assert info["num_requests"] == 48 and info["timing_source"].startswith("client-side")
    assert info["hardware"] == {"device_name": "H100 SXM"}
    assert info["kv_cache"] == {"num_gpu_blocks": 4096, "block_size": 128}  # from /metrics


def test_model_must_be_served(fake_server, addition):
    with pytest.raises(UserError, match="does not serve 'other/model'.*fake/served-model"):
        collect(str(addition), endpoint=fake_server.url, model="other/model", **BASE)
    res = collect(str(addition), endpoint=fake_server.url, model="fake/served-model", **BASE)
    assert res.name == "served-model_addition_t0.7_k4"


@pytest.mark.parametrize(
    "url",
    ["localhost:8000/v1", "ftp://host:1/v1", "http://host:8000", "http://host:notaport/v1",
     "http:///v1", "http://host:8000/v1?x=1"],
)
def test_bad_endpoint_urls(url):
    with pytest.raises(UserError) as e:
        parse_endpoint(url)
    assert "field '--endpoint'" in str(e.value) and "http://HOST:PORT/v1" in str(e.value)


def test_endpoint_url_forms():
    assert parse_endpoint("http://10.0.0.1:8000/v1/") == ("http://10.0.0.1:8000/v1",
                                                           "http://10.0.0.1:8000")
    assert parse_endpoint("https://h/prefix/v1")[1] == "https://h/prefix"


def test_unreachable_server_is_a_one_line_error(addition):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="cannot reach the server.*vllm serve"):
        collect(str(addition), endpoint=f"http://127.0.0.1:{port}/v1", **{**BASE, "retries": 1})


@pytest.mark.parametrize(
    "override, flag",
    [({"concurrency": 0}, "--concurrency"), ({"retries": -1}, "--retries"),
     ({"max_num_seqs": 256}, "--max-num-seqs"), ({"revision": "main"}, "--revision")],
)
def test_endpoint_argument_errors(addition, override, flag):
    with pytest.raises(UserError) as e:
        collect(str(addition), endpoint="http://127.0.0.1:9/v1", **{**BASE, **override})
    assert f"field '{flag}'" in str(e.value)
