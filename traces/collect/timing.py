"""The calibration files: one engine session's requests, load over time, and settings.

Written in the layout of the recorded runs in ``shared/data/serving/vllm_runs/<run>/`` so that
``clearsim calibrate`` reads a collected session like any recorded run:

* ``requests.jsonl``: one engine request per line (:class:`~traces.collect.backend.RequestTiming`:
  ``request_id, input_toks, output_toks, arrival_time, queued_ts, scheduled_ts, first_token_ts,
  last_token_ts``, plus ``n``, the samples the request carried), appended after every chunk;
* ``timeseries.csv``: ``t, prompt_throughput, gen_throughput, running, waiting, kv_cache_pct``
  sampled every ``tick_seconds`` from the engine's own Prometheus metrics (offline:
  ``LLM.get_metrics()``; server: ``GET /metrics``): throughputs are the per-second change of the
  ``vllm:prompt_tokens`` / ``vllm:generation_tokens`` counters, the rest are the
  ``vllm:num_requests_running`` / ``vllm:num_requests_waiting`` / ``vllm:kv_cache_usage_perc``
  gauges (the older ``vllm:gpu_cache_usage_perc`` is read too);
* ``meta.json``: ``schema_version, model, vllm_version, engine_kwargs, dataset_path,
  dataset_hash, num_requests, started_at, finished_at, tick_seconds, hardware`` as recorded runs
  have them, plus ``recorded_by``, ``timing_source`` and ``timeseries_source``.

Each process that collects is one session with its own folder (``session-01``, ``session-02`` on
resume): monotonic timestamps of two processes are not on one clock, so sessions are never merged.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from sim.foundation.files import write_text_atomic
from traces.collect.backend import RequestTiming

SCHEMA_VERSION = 1
TIMESERIES_HEADER = (
    "t", "prompt_throughput", "gen_throughput", "running", "waiting", "kv_cache_pct",
)

_GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage_legacy",
}
_COUNTERS = {"vllm:prompt_tokens": "prompt_tokens", "vllm:generation_tokens": "generation_tokens"}


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def snapshot_from(samples: Iterable[tuple[str, float]]) -> dict | None:
    """Engine load from ``(metric name, value)`` pairs, summed over engines (labels).

    Counter names may carry Prometheus' ``_total`` suffix (the text format) or not (vLLM's
    ``LLM.get_metrics()`` reader strips it).  KV use is averaged over engines.  Returns None when
    no vLLM load metric is present (e.g. a server that is not vLLM).
    """
    sums: dict[str, float] = {}
    kv: list[float] = []
    kv_legacy: list[float] = []
    for name, value in samples:
        base = name[:-6] if name.endswith("_total") else name
        key = _GAUGES.get(name) or _COUNTERS.get(base)
        if key is None:
            continue
        if key == "kv_cache_usage":
            kv.append(float(value))
        elif key == "kv_cache_usage_legacy":
            kv_legacy.append(float(value))
        else:
            sums[key] = sums.get(key, 0.0) + float(value)
    if not sums and not kv and not kv_legacy:
        return None
    usage = kv or kv_legacy
    sums["kv_cache_usage"] = sum(usage) / len(usage) if usage else 0.0
    return sums


def parse_prometheus_text(text: str) -> list[tuple[str, float]]:
    """``(name, value)`` of every sample line of a Prometheus text exposition (``GET /metrics``)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name = line.split("{", 1)[0]
            rest = line.rsplit("}", 1)[1].split()
        else:
            name, *rest = line.split()
        if not rest:
            continue
        try:
            out.append((name, float(rest[0])))
        except ValueError:
            continue
    return out


class ServingRun:
    """One session's calibration folder, written as collection goes (a crash keeps what ran)."""

    def __init__(self, path: Path, meta: dict, *, tick_seconds: float) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta = {
            "schema_version": SCHEMA_VERSION,
            **meta,
            "num_requests": 0,
            "started_at": utc_now(),
            "finished_at": None,
            "tick_seconds": tick_seconds,
        }
        self._lock = threading.Lock()
        self._requests = (self.path / "requests.jsonl").open("a", encoding="utf-8")
        self._ts_file = (self.path / "timeseries.csv").open("w", encoding="utf-8", newline="")
        self._ts = csv.writer(self._ts_file)
        self._ts.writerow(TIMESERIES_HEADER)
        self._ts_file.flush()
        self.ticks = 0
        self._write_meta()

    def add_requests(self, timings: list[RequestTiming]) -> None:
        with self._lock:
            for t in timings:
                self._requests.write(json.dumps(t.row()) + "\n")
            self._requests.flush()
            os.fsync(self._requests.fileno())
            self.meta["num_requests"] += len(timings)

    def add_tick(self, row: tuple) -> None:
        with self._lock:
            self._ts.writerow(row)
            self._ts_file.flush()
            self.ticks += 1

    def finish(self, **extra) -> None:
        with self._lock:
            self.meta.update(extra)
            self.meta["finished_at"] = utc_now()
            self._requests.close()
            self._ts_file.close()
            self._write_meta()

    def _write_meta(self) -> None:
        write_text_atomic(self.path / "meta.json",
                          json.dumps(self.meta, indent=2, sort_keys=False, default=str) + "\n")


def _rate(snap: dict, prev: dict, key: str, dt: float) -> float:
    """Per-second growth of a counter (never negative: an engine restart resets counters)."""
    return round(max(snap.get(key, 0.0) - prev.get(key, 0.0), 0.0) / dt, 1)


class MetricsSampler:
    """Polls an engine's load every ``tick`` seconds in a daemon thread and writes CSV rows.

    ``snapshot()`` returns :func:`snapshot_from`'s dict, or None when metrics are unavailable;
    the first failure or None stops the sampler and is remembered in :attr:`status`.
    """

    def __init__(
        self,
        snapshot: Callable[[], dict | None],
        sink: Callable[[tuple], None],
        tick: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._sink = sink
        self._tick = tick
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="clearsim-metrics", daemon=True)
        self.status = "not started"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(5.0, 2 * self._tick))

    def _take(self) -> dict | None:
        try:
            return self._snapshot()
        except Exception as exc:  # noqa: BLE001 - a metrics failure must not stop collection
            self.status = f"stopped: {type(exc).__name__}: {exc}"
            return None

    def _loop(self) -> None:
        t0 = self._clock()
        prev = self._take()
        if prev is None:
            if self.status == "not started":
                self.status = "unavailable: the engine exposes no vLLM load metrics"
            return
        prev_t = t0
        self.status = "sampled"
        while not self._stop.wait(self._tick):
            snap = self._take()
            if snap is None:
                if self.status == "sampled":
                    self.status = "stopped: the engine's metrics disappeared"
                return
            now = self._clock()
            dt = max(now - prev_t, 1e-9)
            self._sink(
                (
                    round(now - t0, 3),
                    _rate(snap, prev, "prompt_tokens", dt),
                    _rate(snap, prev, "generation_tokens", dt),
                    int(snap.get("running", 0)),
                    int(snap.get("waiting", 0)),
                    round(100.0 * snap.get("kv_cache_usage", 0.0), 2),
                )
            )
            prev, prev_t = snap, now
