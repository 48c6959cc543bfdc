"""``collect``: turn a model and a problem set into a clearsim trace set, resumably.

The steps, each in its own module: load and validate the problems (:mod:`.problems`), build the
grader (:mod:`.grading`), open or resume the checkpoint (:mod:`.checkpoint`), generate through
the backend (:mod:`.vllm_backend` or :mod:`.endpoint`) while recording the engine's timings
(:mod:`.timing`), grade every sample in the main thread, commit whole queries chunk by chunk, and
finally write:

* ``NAME.parquet``: the :class:`~traces.schema.TraceSet` (numbers only) with full provenance in
  its metadata: model, revision, backend, sampling parameters, seed, system prompt, problem set
  and its hash, grader, vLLM version, GPU, dates, and every session of a resumed collection;
* ``NAME.samples.jsonl``: per query and sample the finish reason and the extracted answer (cut to
  64 characters) beside the numbers, to audit the grading; no problem text, no completion text;
* ``NAME.serving/session-NN/``: the calibration files of each session (see :mod:`.timing`).

Everything that can be checked before a GPU is touched (arguments, problems, grader, checkpoint)
is checked first, so a mistake costs seconds, not a model load.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sim.foundation.errors import UserError
from sim.foundation.files import write_text_atomic
from traces.collect.backend import GenRequest, GenResult
from traces.collect.checkpoint import Checkpoint
from traces.grading import Grader, make_grader, short
from traces.collect.problems import Problem, load_problems
from traces.collect.prompting import DEFAULT_SYSTEM, build_messages, query_seed
from traces.collect.timing import MetricsSampler, ServingRun, utc_now
from traces.registry import user_dir
from traces.schema import TraceSet

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RECORDED_BY = "clearsim traces collect"


@dataclass
class CollectResult:
    name: str
    trace_path: Path
    samples_path: Path
    serving_dir: Path
    trace_set: TraceSet
    generated: int
    resumed: int


def _positive_int(value, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"got {value!r}; expected a positive integer", field=flag)
    return value


def _check_sampling(samples, temperature, top_p, max_tokens, seed, chunk_size) -> None:
    _positive_int(samples, "--samples")
    _positive_int(max_tokens, "--max-tokens")
    _positive_int(chunk_size, "--chunk-size")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"got {seed!r}; expected a non-negative integer", field="--seed")
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 10:
        raise UserError(f"got {temperature!r}; expected a number in [0, 10]", field="--temperature")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise UserError(f"got {top_p!r}; expected a number in (0, 1]", field="--top-p")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._") or "model"


def default_name(model: str, problems: str, temperature: float, samples: int) -> str:
    """``<model>_<problems>_t<T>_k<K>``, the naming of the embedded trace sets."""
    base = slug(model.rstrip("/").rsplit("/", 1)[-1])
    return f"{base}_{slug(problems)}_t{temperature:g}_k{samples}"


def _atomic_text(path: Path, lines: list[str]) -> None:
    write_text_atomic(path, "".join(lines))


def _record(result: GenResult, problem: Problem, grader: Grader) -> dict:
    """One committed query: numbers, finish reasons and short answers, graded here (main thread).

    A sample that hit the cap (``finish_reason == "length"``) is graded incorrect whatever it
    wrote, as in the public recordings: it never finished its answer within the cap.
    """
    samples = []
    for s in result.samples:
        answer, correct = grader.grade(s.text, problem.reference)
        samples.append(
            {
                "tokens": s.tokens,
                "finish_reason": s.finish_reason,
                "answer": short(answer),
                "correct": bool(correct and s.finish_reason != "length"),
            }
        )
    return {
        "query_id": result.query_id,
        "prompt_tokens": result.prompt_tokens,
        "max_tokens": result.max_tokens,
        "samples": samples,
    }


def _same_or_mixed(values: list):
    distinct = {json.dumps(v, sort_keys=True) for v in values}
    if len(distinct) == 1:
        return values[0]
    return "mixed across sessions: see 'sessions'"


def collect(
    problems: str,
    *,
    model: str | None = None,
    endpoint: str | None = None,
    name: str | None = None,
    out: str | os.PathLike | None = None,
    samples: int = 16,
    temperature: float = 0.7,
    top_p: float = 0.8,
    max_tokens: int = 4096,
    seed: int = 0,
    system: str | None = DEFAULT_SYSTEM,
    grader: str | None = None,
    revision: str | None = None,
    problems_dir: str | os.PathLike | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    dataset_name: str | None = None,
    limit: int | None = None,
    chunk_size: int = 128,
    restart: bool = False,
    tensor_parallel_size: int | None = None,
    max_num_seqs: int | None = None,
    max_model_len: int | None = None,
    max_num_batched_tokens: int | None = None,
    gpu_memory_utilization: float | None = None,
    dtype: str | None = None,
    concurrency: int = 64,
    retries: int = 5,
    retry_backoff: float = 1.0,
    request_timeout: float = 1800.0,
    api_key: str | None = None,
    gpu: str | None = None,
    tick_seconds: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> CollectResult:
    """Record ``samples`` completions of every problem and write a clearsim trace set.

    Exactly one of ``model`` (generate with vLLM on this machine) or ``endpoint`` (a running
    OpenAI-compatible server; ``model`` then names the served model if it serves several) is
    needed.  Rerunning with the same arguments resumes an interrupted collection; ``restart``
    discards an earlier checkpoint or result of the same name.  See ``clearsim traces collect
    --help`` for every argument.
    """
    say = log or (lambda _msg: None)
    # ------------------------------------------------------------- arguments
    if endpoint is None and not model:
        raise UserError("say what to sample from: --model NAME (vLLM here) or --endpoint URL",
                        field="--model")
    _check_sampling(samples, temperature, top_p, max_tokens, seed, chunk_size)
    engine_args = {
        "tensor_parallel_size": tensor_parallel_size,
        "max_num_seqs": max_num_seqs,
        "max_model_len": max_model_len,
        "max_num_batched_tokens": max_num_batched_tokens,
        "gpu_memory_utilization": gpu_memory_utilization,
        "dtype": dtype,
    }
    for key in ("tensor_parallel_size", "max_num_seqs", "max_model_len", "max_num_batched_tokens"):
        if engine_args[key] is not None:
            _positive_int(engine_args[key], "--" + key.replace("_", "-"))
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise UserError(f"got {gpu_memory_utilization!r}; expected a fraction in (0, 1]",
                        field="--gpu-memory-utilization")
    if endpoint is not None:
        set_engine = [k for k, v in engine_args.items() if v is not None]
        if set_engine or revision:
            flag = "--" + (set_engine[0] if set_engine else "revision").replace("_", "-")
            raise UserError("applies to --model only; with --endpoint set it on the server",
                            field=flag)
        _positive_int(concurrency, "--concurrency")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise UserError(f"got {retries!r}; expected a non-negative integer", field="--retries")
        if not retry_backoff >= 0:
            raise UserError(f"got {retry_backoff!r}; expected seconds >= 0",
                            field="--retry-backoff")
        if not request_timeout > 0:
            raise UserError(f"got {request_timeout!r}; expected seconds > 0",
                            field="--request-timeout")
    elif gpu is not None:
        raise UserError("--gpu names a remote server's GPU; with --model the GPU is detected",
                        field="--gpu")
    if not tick_seconds > 0:
        raise UserError(f"got {tick_seconds!r}; expected seconds > 0", field="--tick-seconds")
    if out is not None and Path(out).suffix != ".parquet":
        raise UserError(f"got {str(out)!r}; the trace file must end in .parquet", field="--out")
    if name is not None and not _NAME.fullmatch(name):
        raise UserError(f"got {name!r}; use letters, digits, '.', '_' or '-'", field="--name")

    # ------------------------------------------------------ problems, grader
    pset = load_problems(
        problems, problems_dir=problems_dir, question_field=question_field,
        answer_field=answer_field, id_field=id_field, dataset_name=dataset_name, limit=limit,
    )
    grader_spec = grader or pset.default_grader
    grade = make_grader(grader_spec)

    backend = None
    if endpoint is None:
        from traces.collect.vllm_backend import check_local_model, import_vllm  # noqa: PLC0415

        check_local_model(model)
        import_vllm()  # fail now, before any file is touched, if vLLM is missing
        model_name = model
    else:
        from traces.collect.endpoint import EndpointBackend  # noqa: PLC0415

        backend = EndpointBackend(
            endpoint, model=model, concurrency=concurrency, retries=retries,
            retry_backoff=retry_backoff, request_timeout=request_timeout, api_key=api_key, gpu=gpu,
        )
        model_name = backend.model

    # ------------------------------------------------------------ checkpoint
    if name is None:
        name = Path(out).stem if out is not None else default_name(
            model_name, pset.name, temperature, samples)
    trace_path = Path(out) if out is not None else user_dir() / f"{name}.parquet"
    stem = trace_path.name[: -len(".parquet")]
    samples_path = trace_path.with_name(f"{stem}.samples.jsonl")
    serving_dir = trace_path.with_name(f"{stem}.serving")
    work_dir = trace_path.with_name(f"{stem}.collect")
    if restart:
        shutil.rmtree(work_dir, ignore_errors=True)
        shutil.rmtree(serving_dir, ignore_errors=True)
        trace_path.unlink(missing_ok=True)
        samples_path.unlink(missing_ok=True)
    elif trace_path.exists() and not work_dir.exists():
        raise UserError(
            "a trace set is already there; choose another --name / --out, or pass --restart "
            "to collect it again",
            where=str(trace_path),
        )
    fingerprint = {
        "backend": "endpoint" if endpoint is not None else "vllm",
        "model": model_name,
        "revision": revision,
        "problems": pset.name,
        "problems_sha256": pset.content_hash,
        "limit": limit,
        "samples": samples,
        "temperature": temperature,
        "top_p": top_p,
        "max_tokens": max_tokens,
        "max_model_len": max_model_len,
        "seed": seed,
        "system": system or "",
        "grader": grader_spec,
    }
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(work_dir, fingerprint)
    resumed = len(ckpt.records)
    by_id = {p.query_id: p for p in pset.problems}
    unknown = set(ckpt.records) - set(by_id)
    if unknown:
        raise UserError(
            f"the checkpoint holds queries not in the problem set (e.g. {sorted(unknown)[0]}); "
            "pass --restart",
            where=str(work_dir),
        )
    remaining = [p for p in pset.problems if p.query_id not in ckpt.records]
    if resumed:
        say(f"resuming {name}: {resumed} of {len(pset.problems)} queries already recorded")

    # -------------------------------------------------------------- generate
    generated = 0
    if remaining:
        if backend is None:
            from traces.collect.vllm_backend import VllmBackend  # noqa: PLC0415

            say(f"loading {model_name} with vLLM")
            backend = VllmBackend(model_name, revision=revision, seed=seed, engine_args=engine_args)
        generated = _generate(
            backend, remaining, ckpt, grade, pset, serving_dir, fingerprint,
            samples=samples, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
            seed=seed, system=system, chunk_size=chunk_size, tick_seconds=tick_seconds,
            total=len(pset.problems), say=say,
        )
    elif backend is not None:
        backend.close()

    # ----------------------------------------------------------------- write
    records = [ckpt.records[p.query_id] for p in pset.problems]
    sessions = ckpt.sessions
    meta = {
        "format": "collect",
        "recorded_by": RECORDED_BY,
        "source": f"{RECORDED_BY}: {model_name} on {pset.name} "
                  f"({pset.source.get('hf_id') or Path(pset.source.get('path', '?')).name}, "
                  f"sha256 {pset.content_hash[:12]}), {fingerprint['backend']} backend",
        "licence": "numbers only, no problem or completion text; the model's and the problem "
                   "set's own licences govern their use",
        "model": model_name,
        "revision": revision,
        "revision_resolved": _same_or_mixed([s.get("revision_resolved") for s in sessions]),
        "backend": _same_or_mixed([s.get("backend") for s in sessions]),
        "decoding": f"T={temperature:g}, top_p={top_p:g}, {samples} samples, "
                    f"max {max_tokens} new tokens, seed {seed}",
        "sampling": {"n": samples, "temperature": temperature, "top_p": top_p,
                     "max_tokens": max_tokens, "seed": seed,
                     "seeds": "query seed = sha256(seed, query_id) mod 2^31-2^16; sample k uses "
                              "query seed + k"},
        "system_prompt": system or "",
        "chat_template": "the model's own (tokenizer chat template)",
        "problems": {**pset.source, "content_sha256": pset.content_hash,
                     "n": len(pset.problems)},
        "grader": grade.describe(),
        "vllm_version": _same_or_mixed([s.get("vllm_version") for s in sessions]),
        "gpu": _same_or_mixed([s.get("gpu") for s in sessions]),
        "max_model_len": _same_or_mixed([s.get("max_model_len") for s in sessions]),
        "date": sessions[0].get("started_at") if sessions else utc_now(),
        "finished_at": utc_now(),
        "sessions": sessions,
        "tokens": "completion tokens as generated by the engine: len(CompletionOutput.token_ids) "
                  "offline, usage.completion_tokens of a one-sample request from a server",
        "truncated": "finish_reason == 'length' (hit max_tokens, or the context window: see "
                     "per-query max_tokens); graded incorrect",
        "sidecar": samples_path.name,
        "serving": serving_dir.name,
    }
    trace_records = [
        {
            "query_id": p.query_id,
            "dataset": p.dataset,
            "level": p.level,
            "subject": p.subject,
            "prompt_tokens": rec["prompt_tokens"],
            "max_tokens": rec["max_tokens"],
            "samples": [
                {"tokens": s["tokens"], "correct": s["correct"],
                 "truncated": s["finish_reason"] == "length"}
                for s in rec["samples"]
            ],
        }
        for p, rec in zip(pset.problems, records)
    ]
    ts = TraceSet.from_records(name, meta, trace_records)
    _atomic_text(samples_path, [json.dumps(r, sort_keys=True) + "\n" for r in records])
    ts.write(trace_path)
    ckpt.remove()
    say(f"wrote {trace_path} ({ts.n_queries} queries x {samples} samples, "
        f"accuracy {ts.sample_correct.mean():.3f}, truncated {ts.sample_truncated.mean():.3f})")
    return CollectResult(name, trace_path, samples_path, serving_dir, ts, generated, resumed)


def _generate(
    backend, remaining, ckpt, grade, pset, serving_dir, fingerprint, *, samples, temperature,
    top_p, max_tokens, seed, system, chunk_size, tick_seconds, total, say,
) -> int:
    """One session: generate the remaining queries, committing every ``chunk_size`` of them."""
    prov = backend.provenance()
    session = ckpt.begin_session({**prov, "started_at": utc_now(), "committed": 0})
    run = ServingRun(
        serving_dir / f"session-{session + 1:02d}",
        {
            **backend.serving_meta(),
            "recorded_by": RECORDED_BY,
            "dataset_path": pset.source.get("path") or pset.source.get("hf_id"),
            "dataset_hash": pset.content_hash,
            "workload": {k: fingerprint[k] for k in ("samples", "temperature", "top_p",
                                                     "max_tokens", "seed", "problems")},
            "timing_source": (
                "vLLM RequestOutput.metrics (engine clocks); with n > 1 one row per query, the "
                "child request that finished last"
                if backend.kind == "vllm"
                else "client-side: queued_ts = scheduled_ts = send time; first/last token = "
                     "arrival of the first/last streamed token"
            ),
        },
        tick_seconds=tick_seconds,
    )
    sampler = MetricsSampler(backend.metrics_snapshot, run.add_tick, tick_seconds)
    sampler.start()
    requests = [
        GenRequest(p.query_id, build_messages(p.question, system), samples, max_tokens,
                   query_seed(seed, p.query_id), temperature, top_p)
        for p in remaining
    ]
    by_id = {p.query_id: p for p in remaining}
    buffer: list[dict] = []
    timings: list = []
    committed = 0
    t0 = time.monotonic()

    def flush() -> None:
        nonlocal committed, buffer, timings
        if not buffer:
            return
        run.add_requests(timings)
        ckpt.commit(buffer)
        committed += len(buffer)
        ckpt.update_session(session, committed=committed, finished_at=utc_now())
        done = ckpt.records.values()
        flat = [s for r in done for s in r["samples"]]
        say(
            f"{len(ckpt.records)}/{total} queries recorded "
            f"(accuracy {sum(s['correct'] for s in flat) / len(flat):.3f}, "
            f"truncated {sum(s['finish_reason'] == 'length' for s in flat) / len(flat):.3f}, "
            f"{time.monotonic() - t0:.0f} s this session)"
        )
        buffer, timings = [], []

    try:
        for result in backend.run(requests, chunk_size):
            buffer.append(_record(result, by_id[result.query_id], grade))
            timings.extend(result.timings)
            if len(buffer) >= chunk_size:
                flush()
    finally:
        # Whole queries already generated are kept even when the run stops here.
        try:
            flush()
        finally:
            sampler.stop()
            run.finish(timeseries_source=f"engine metrics every {tick_seconds:g} s: "
                                         f"{sampler.status}")
            backend.close()
    return committed
