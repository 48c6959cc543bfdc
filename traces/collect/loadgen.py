"""``clearsim traces record-serving``: record a real vLLM serving run for ``clearsim calibrate``.

Why: calibration needs runs whose load is known (arrival times, pinned prompt and output
lengths) and whose engine flags are known.  This is our own load generator: open-loop Poisson
arrivals at each of several rates against a vLLM server on loopback, one run folder per rate in
the layout ``clearsim calibrate`` reads (``shared/data/serving/vllm_runs/*``):

* ``requests.jsonl``: ``request_id, input_toks, output_toks, arrival_time, queued_ts,
  scheduled_ts, first_token_ts, last_token_ts`` per request, seen from the client (``queued_ts =
  scheduled_ts`` = send time, monotonic; first / last token = first / last streamed chunk);
* ``timeseries.csv``: the engine's own load every ``tick_seconds`` from ``GET /metrics``
  (:class:`traces.collect.timing.MetricsSampler`);
* ``meta.json``: model, vLLM version, the server's flags (``engine_kwargs``), the KV cache size
  as the server reports it (``kv_cache``), the load (rate, seed, length ranges), timestamps.

Requests (vLLM's ``POST /v1/completions``): ``prompt`` = a list of token ids (so the prompt
length is exact; ids drawn from ``[100, 1000)``, valid for any vocabulary of 1,000 tokens or
more), ``max_tokens = min_tokens = ignore_eos`` pinned to the drawn output length, greedy,
``stream`` with ``include_usage`` (the server's own token counts are recorded).

Bounded: at most ``requests`` per rate, no new request after ``max_seconds``, every request has
``request_timeout``, at most ``concurrency`` in flight.  Loopback only (127.0.0.1, ::1,
localhost): this is a measurement of the machine itself.  A folder is written only when its run
completed (files built in a temporary folder, then renamed), so nothing is half-written.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sim.foundation.errors import UserError
from sim.foundation.files import terminate_raises, write_dir_atomic
from traces.collect.endpoint import parse_endpoint, sse_chunks
from traces.collect.timing import (
    SCHEMA_VERSION,
    TIMESERIES_HEADER,
    MetricsSampler,
    parse_prometheus_text,
    snapshot_from,
    utc_now,
)
from traces.collect.vllm_server import cache_info_from_metrics

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
TOKEN_LO, TOKEN_HI = 100, 1000


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def server_info(url: str, timeout: float = 10.0) -> dict:
    """The served model, its window, vLLM's version and KV cache size; UserError if no answer."""
    base, root = parse_endpoint(url)
    host = urllib.parse.urlsplit(base).hostname
    if host not in LOOPBACK_HOSTS:
        raise UserError(f"record-serving measures this machine: the endpoint must be on loopback "
                        f"(127.0.0.1), not {host}", field="--endpoint")
    try:
        cards = json.loads(_get(base + "/models", timeout)).get("data") or []
    except (urllib.error.URLError, OSError, ValueError, AttributeError) as exc:
        raise UserError(f"the server does not answer GET /v1/models "
                        f"({type(exc).__name__}: {getattr(exc, 'reason', exc)}); start it first "
                        "or pass --serve MODEL_DIR", where=url, field="--endpoint") from None
    if not cards or not isinstance(cards[0], dict) or not cards[0].get("id"):
        raise UserError("the server serves no model", where=url, field="--endpoint")
    info = {"model": cards[0]["id"], "max_model_len": cards[0].get("max_model_len"),
            "model_root": cards[0].get("root")}
    try:
        info["vllm_version"] = json.loads(_get(root + "/version", timeout)).get("version")
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        info["vllm_version"] = None
    try:
        text = _get(root + "/metrics", timeout).decode("utf-8", "replace")
        info["kv_cache"] = cache_info_from_metrics(text)
        info["has_metrics"] = snapshot_from(parse_prometheus_text(text)) is not None
    except (urllib.error.URLError, OSError):
        info["kv_cache"], info["has_metrics"] = {}, False
    return info


def poisson_schedule(rate: float, n: int, seed: int, prompt_range: tuple[int, int],
                     output_range: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival offsets s, prompt lengths, output lengths) of ``n`` requests: exponential gaps
    of mean ``1/rate`` (the first at 0), lengths uniform on the closed ranges; seeded."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, n)
    gaps[0] = 0.0
    prompt = rng.integers(prompt_range[0], prompt_range[1] + 1, n)
    output = rng.integers(output_range[0], output_range[1] + 1, n)
    return np.cumsum(gaps), prompt, output


def _one(base: str, model: str, idx: int, prompt_ids: list[int], out_toks: int,
         timeout: float) -> dict:
    body = {"model": model, "prompt": prompt_ids, "max_tokens": out_toks, "min_tokens": out_toks,
            "ignore_eos": True, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
    req = urllib.request.Request(base + "/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    arrival, sent = time.time(), time.monotonic()
    first = last = None
    usage = None
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            for chunk in sse_chunks(resp):
                if chunk is None:
                    break
                if any((c.get("text") or "") != "" or c.get("finish_reason")
                       for c in chunk.get("choices") or []):
                    last = time.monotonic()
                    first = first if first is not None else last
                if chunk.get("usage"):
                    usage = chunk["usage"]
    except urllib.error.HTTPError as exc:
        return {"error": f"HTTP {exc.code}: {exc.read()[:200].decode('utf-8', 'replace')}"}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"}
    if usage is None or first is None:
        return {"error": "the stream ended without tokens or usage"}
    return {"request_id": f"load-{idx}", "input_toks": int(usage.get("prompt_tokens") or 0),
            "output_toks": int(usage.get("completion_tokens") or 0), "arrival_time": arrival,
            "queued_ts": sent, "scheduled_ts": sent, "first_token_ts": first,
            "last_token_ts": last}


def record_one(url: str, out_dir: str | Path, *, rate: float, requests: int, seed: int,
               prompt_range: tuple[int, int], output_range: tuple[int, int],
               max_seconds: float, concurrency: int, request_timeout: float,
               tick_seconds: float, engine_kwargs: dict | None, info: dict,
               extra_meta: dict | None = None) -> dict:
    """One run at one rate into ``out_dir`` (written whole at the end); returns its meta."""
    base, root = parse_endpoint(url)
    out_dir = Path(out_dir)
    offsets, prompt, output = poisson_schedule(rate, requests, seed, prompt_range, output_range)
    rng = np.random.default_rng(seed + 1)
    ticks: list[tuple] = []
    sampler = MetricsSampler(
        lambda: snapshot_from(parse_prometheus_text(
            _get(root + "/metrics", 10.0).decode("utf-8", "replace"))),
        ticks.append, tick_seconds)
    started = utc_now()
    sampler.start()
    t0 = time.monotonic()
    results: list[dict] = []
    lock = threading.Lock()
    sent = 0

    def task(i: int) -> None:
        ids = rng_ids[i]
        res = _one(base, info["model"], i, ids, int(output[i]), request_timeout)
        with lock:
            results.append(res)

    rng_ids = [rng.integers(TOKEN_LO, TOKEN_HI, int(p)).tolist() for p in prompt]
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="clearsim-load")
    try:
        for i in range(requests):
            now = time.monotonic() - t0
            if offsets[i] > max_seconds:
                break
            if offsets[i] > now:
                time.sleep(offsets[i] - now)
            pool.submit(task, i)
            sent += 1
    finally:
        pool.shutdown(wait=True)
        # a few ticks after the last request so the time series shows the engine drained
        time.sleep(min(2 * tick_seconds, 5.0))
        sampler.stop()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise UserError(f"{len(errors)} of {sent} requests at rate {rate:g}/s failed "
                        f"(first: {errors[0]}); nothing written for this rate", where=url)
    rows = sorted(results, key=lambda r: r["queued_ts"])
    meta = {
        "schema_version": SCHEMA_VERSION, "model": info["model"],
        "vllm_version": info.get("vllm_version"),
        "engine_kwargs": {**(engine_kwargs or {}), "max_model_len": info.get("max_model_len")},
        "num_requests": len(rows), "started_at": started, "finished_at": utc_now(),
        "tick_seconds": tick_seconds,
        "load": {"process": "poisson", "rate_per_s": rate, "seed": seed, "requests_asked": requests,
                 "requests_sent": sent, "max_seconds": max_seconds, "concurrency": concurrency,
                 "prompt_tokens": list(prompt_range), "output_tokens": list(output_range)},
        "recorded_by": "clearsim traces record-serving", "timing_source": "client (streamed)",
        "timeseries_source": "GET /metrics" if sampler.status == "sampled" else sampler.status,
        **(extra_meta or {}),
    }
    kv = info.get("kv_cache") or {}
    if kv.get("num_gpu_blocks"):
        meta["kv_cache"] = {"num_gpu_blocks": kv["num_gpu_blocks"],
                            "block_size": kv.get("block_size") or 16}
    def write(tmp: Path) -> None:
        (tmp / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows),
                                            encoding="utf-8")
        (tmp / "timeseries.csv").write_text(
            ",".join(TIMESERIES_HEADER) + "\n" + "".join(",".join(map(str, t)) + "\n" for t in ticks),
            encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    write_dir_atomic(out_dir, write, replace=True)
    return meta


def _check(rates, requests, max_seconds, prompt_range, output_range, concurrency, info=None):
    if not rates or any(not (r > 0) for r in rates):
        raise UserError(f"rates must be positive, got {rates}", field="--rates")
    for name, v in (("--requests", requests), ("--concurrency", concurrency)):
        if int(v) < 1:
            raise UserError(f"{name} must be a positive integer, got {v}", field=name)
    if not max_seconds > 0:
        raise UserError(f"--max-seconds must be positive, got {max_seconds}", field="--max-seconds")
    for name, (lo, hi) in (("--prompt-tokens", prompt_range), ("--output-tokens", output_range)):
        if not 1 <= lo <= hi:
            raise UserError(f"{name} must be LO,HI with 1 <= LO <= HI, got {lo},{hi}", field=name)
    window = (info or {}).get("max_model_len")
    if isinstance(window, int) and prompt_range[1] + output_range[1] > window:
        raise UserError(f"the longest request ({prompt_range[1]} + {output_range[1]} tokens) does "
                        f"not fit the served model's {window}-token window", field="--prompt-tokens")


@terminate_raises()  # a SIGTERM still stops the server it started (the finally below)
def record_serving(out: str | Path, *, rates: list[float], endpoint: str | None = None,
                   serve: str | Path | None = None, requests: int = 100, seed: int = 0,
                   prompt_tokens: tuple[int, int] = (32, 256),
                   output_tokens: tuple[int, int] = (8, 64), max_seconds: float = 120.0,
                   concurrency: int = 64, request_timeout: float = 300.0,
                   tick_seconds: float = 1.0, max_num_seqs: int | None = None,
                   max_model_len: int | None = None, max_num_batched_tokens: int | None = None,
                   kv_cache_gib: float = 1.0, engine_cpus: list[int] | None = None,
                   name: str | None = None, log=print) -> list[Path]:
    """Record one run per rate into ``out/<name>_r<rate>/`` and return the folders.

    Either ``endpoint`` (a running server on loopback; ``max_num_seqs`` /
    ``max_num_batched_tokens``, when given, are recorded as the flags it was started with) or
    ``serve`` (a model folder: a vLLM server is started on 127.0.0.1 with ``max_num_seqs``
    (default 16), ``max_model_len`` (1024), ``max_num_batched_tokens`` (2048, the GPU runs'
    value; passed explicitly because the server does not report it) and ``kv_cache_gib``,
    recorded in ``meta.json``, and stopped afterwards, also on SIGTERM).  ``engine_cpus``
    (with ``serve``) binds vLLM's engine (scheduler and CPU worker) to those cores and keeps
    this process and the API server on the others (:func:`~traces.collect.vllm_server.pin_engine_cpus`);
    the binding is recorded in ``meta.json`` under ``hardware``.
    """
    if (endpoint is None) == (serve is None):
        raise UserError("give one of --endpoint URL (a running server) or --serve MODEL_DIR",
                        field="--endpoint")
    _check(rates, requests, max_seconds, prompt_tokens, output_tokens, concurrency)
    if engine_cpus and serve is None:
        raise UserError("--engine-cpus binds a server started here: give --serve MODEL_DIR",
                        field="--engine-cpus")
    out = Path(out)
    server = None
    engine_kwargs = None
    hardware = _cpu_info()
    if serve is not None:
        from traces.collect.vllm_server import VllmServer, pin_engine_cpus  # noqa: PLC0415

        server = VllmServer(serve, max_num_seqs=max_num_seqs or 16,
                            max_model_len=max_model_len or 1024,
                            max_num_batched_tokens=max_num_batched_tokens or 2048,
                            kv_cache_gib=kv_cache_gib, engine_cpus=engine_cpus)
        if engine_cpus:
            hardware["engine_cpus"] = server.engine_cpus
            hardware["server_and_client_cpus"] = pin_engine_cpus(server.engine_cpus)
        log(f"starting vLLM on {server.url} (about 2 min on a CPU)")
        server.start()
        log(f"vLLM is up (log: {server.log_path})")
        endpoint = server.url
        engine_kwargs = dict(server.engine_kwargs)
    else:
        engine_kwargs = {"max_num_seqs": max_num_seqs,
                         "max_num_batched_tokens": max_num_batched_tokens}
    try:
        info = server_info(endpoint)
        if server is not None and not info.get("kv_cache"):
            info["kv_cache"] = server.kv_cache()
        _check(rates, requests, max_seconds, prompt_tokens, output_tokens, concurrency, info)
        stem = name or Path(str(info.get("model_root") or info["model"])).name
        folders = []
        for k, rate in enumerate(rates):
            d = out / f"{stem}_r{rate:g}"
            log(f"rate {rate:g}/s: up to {requests} requests, at most {max_seconds:g} s -> {d}")
            meta = record_one(endpoint, d, rate=rate, requests=requests, seed=seed + 1000 * k,
                              prompt_range=prompt_tokens, output_range=output_tokens,
                              max_seconds=max_seconds, concurrency=concurrency,
                              request_timeout=request_timeout, tick_seconds=tick_seconds,
                              engine_kwargs={k2: v for k2, v in (engine_kwargs or {}).items()
                                             if v is not None} or None,
                              info=info,
                              extra_meta={"hardware": hardware} if server else None)
            log(f"  {meta['num_requests']} requests recorded")
            folders.append(d)
        return folders
    finally:
        if server is not None:
            server.stop()


def _cpu_info() -> dict:
    import os
    import platform

    return {"device_name": None, "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "note": "vLLM CPU build on this machine"}


__all__ = ["poisson_schedule", "record_one", "record_serving", "server_info"]
