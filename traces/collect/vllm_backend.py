"""Generate with the vLLM library on the local GPU(s) (``--model``).

What this relies on in vLLM's public API (checked against vLLM's source and docs with the search
tool; ``vllm/entrypoints/llm.py``, ``vllm/outputs.py``, ``vllm/v1/metrics/stats.py``,
``vllm/v1/metrics/reader.py``, ``vllm/v1/engine/parallel_sampling.py``):

* ``vllm.LLM(model=..., revision=..., seed=..., disable_log_stats=False, **engine_args)``.  The
  ``LLM`` class sets ``disable_log_stats=True`` unless told otherwise, and then returns no request
  metrics and refuses ``get_metrics()``, so it is passed ``False``.
* ``LLM.get_tokenizer()`` and the tokenizer's ``apply_chat_template(messages, tokenize=False,
  add_generation_prompt=True)`` then ``encode(text, add_special_tokens=False)``: exactly what
  ``LLM.chat`` does, done here so that the prompt length is known *before* generation and the cap
  can be fitted to the context window (``max_tokens <= max_model_len - prompt tokens``; vLLM
  rejects or cuts a request that does not fit, and Qwen2.5-Math-7B's window is 4096 tokens).
* ``LLM.generate([{"prompt_token_ids": ids}, ...], sampling_params=[SamplingParams(n=K,
  temperature=..., top_p=..., max_tokens=cap, seed=s), ...], use_tqdm=True)`` returning one
  ``RequestOutput`` per prompt, in order.
* ``RequestOutput.prompt_token_ids``, ``.outputs`` (``CompletionOutput.index``, ``.text``,
  ``.token_ids``, ``.finish_reason`` in ``{"stop", "length"}``) and ``.metrics``.  A sample's
  length is ``len(token_ids)``: the tokens the engine generated, never a re-tokenisation of the
  text (which differs, e.g. by the EOS token).
* ``RequestOutput.metrics``: in V1 a ``RequestStateStats`` (``arrival_time`` wall-clock;
  ``queued_ts``, ``scheduled_ts``, ``first_token_ts``, ``last_token_ts`` monotonic;
  ``num_generation_tokens``).  With ``n > 1`` vLLM V1 fans the request out into ``n`` child
  requests and the returned stats are those of the child that finished last, so each query yields
  one timing row (that child's), tagged ``n``.  V0's ``RequestMetrics`` (``arrival_time``,
  ``first_scheduled_time``, ``first_token_time``, ``last_token_time``) is read too.
* ``LLM.get_metrics()`` (Prometheus snapshot: gauges and counters with ``.name`` and ``.value``)
  for the load time series.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterator

from sim.foundation.errors import UserError
from traces.collect.backend import (
    FINISH_REASONS,
    GenRequest,
    GenResult,
    GenSample,
    RequestTiming,
)
from traces.collect.timing import snapshot_from
from traces.collect.tiny_model import check_model_dir


def import_vllm():
    try:
        import vllm  # noqa: PLC0415 - optional, GPU only
    except ImportError:
        raise UserError(
            "--model generates with vLLM on this machine's GPU, and vLLM is not installed: "
            "pip install 'clearsim[collect]' on a GPU machine, or collect from a running "
            "server with --endpoint http://HOST:PORT/v1",
            field="--model",
        ) from None
    return vllm


def check_local_model(model: str) -> None:
    """A ``--model`` that is a path must be a model folder: one line, not vLLM's traceback."""
    if Path(model).expanduser().exists() or model.startswith((".", "/", "~")):
        check_model_dir(Path(model).expanduser())


def _attr_path(obj, *paths: str):
    """The first attribute path that resolves (vLLM moves config objects between versions)."""
    for path in paths:
        cur = obj
        try:
            for part in path.split("."):
                cur = cur() if part == "()" else getattr(cur, part)
            return cur
        except Exception:  # noqa: BLE001 - best effort, version dependent
            continue
    return None


def gpu_info() -> dict:
    """The local GPU(s) for provenance: torch's view, else nvidia-smi's names, else unknown."""
    try:
        import torch  # noqa: PLC0415 - installed with vLLM

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return {
                "device_name": torch.cuda.get_device_name(0),
                "device_count": torch.cuda.device_count(),
                "device_total_memory_bytes": int(props.total_memory),
                "device_capability": "{}.{}".format(*torch.cuda.get_device_capability(0)),
                "torch_version": torch.__version__,
                "cuda_version": torch.version.cuda,
            }
    except Exception:  # noqa: BLE001 - fall through to nvidia-smi
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20, check=True,
            ).stdout.split("\n")
            names = [n.strip() for n in out if n.strip()]
            if names:
                return {"device_name": names[0], "device_count": len(names)}
        except (OSError, subprocess.SubprocessError):
            pass
    return {"device_name": None, "device_count": None}


def timing_from_metrics(request_id: str, prompt_tokens: int, metrics, n: int, fallback_out: int):
    """A :class:`RequestTiming` from V1 ``RequestStateStats`` or V0 ``RequestMetrics``; else None."""
    if metrics is None:
        return None
    if hasattr(metrics, "queued_ts"):  # V1
        fields = (
            metrics.arrival_time, metrics.queued_ts, metrics.scheduled_ts,
            metrics.first_token_ts, metrics.last_token_ts,
        )
        out_toks = getattr(metrics, "num_generation_tokens", None) or fallback_out
    elif hasattr(metrics, "first_scheduled_time"):  # V0: all wall-clock
        fields = (
            metrics.arrival_time, metrics.arrival_time, metrics.first_scheduled_time,
            metrics.first_token_time, metrics.last_token_time,
        )
        out_toks = fallback_out
    else:
        return None
    if any(f is None for f in fields):
        return None
    arrival, queued, scheduled, first, last = (float(f) for f in fields)
    return RequestTiming(
        request_id, prompt_tokens, int(out_toks), arrival, queued, scheduled, first, last, n
    )


class VllmBackend:
    """Offline generation with ``vllm.LLM``, one ``generate`` call per chunk of problems."""

    kind = "vllm"

    def __init__(self, model: str, *, revision: str | None, seed: int, engine_args: dict) -> None:
        check_local_model(model)
        self._vllm = import_vllm()
        self.model = model
        self.revision = revision
        self.engine_kwargs = {
            "model": model,
            "revision": revision,
            "seed": seed,
            "disable_log_stats": False,
            **{k: v for k, v in engine_args.items() if v is not None},
        }
        self.llm = self._vllm.LLM(**self.engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = _attr_path(
            self.llm,
            "llm_engine.model_config.max_model_len",
            "llm_engine.get_model_config.().max_model_len",
            "model_config.max_model_len",
        )

    # ------------------------------------------------------------------ info
    def _resolved_revision(self) -> str | None:
        """The commit of the weights vLLM loaded from the local Hugging Face cache, if any."""
        try:
            from huggingface_hub import snapshot_download  # noqa: PLC0415 - comes with vLLM

            path = snapshot_download(self.model, revision=self.revision, local_files_only=True)
            return str(path).rstrip("/").rsplit("/", 1)[-1]
        except Exception:  # noqa: BLE001 - a local model folder, or no cache: not known
            return None

    def provenance(self) -> dict:
        return {
            "backend": "vllm (offline LLM.generate)",
            "model": self.model,
            "revision": self.revision,
            "revision_resolved": self._resolved_revision(),
            "vllm_version": getattr(self._vllm, "__version__", None),
            "gpu": gpu_info(),
            "max_model_len": self.max_model_len,
        }

    def serving_meta(self) -> dict:
        sched = _attr_path(self.llm, "llm_engine.vllm_config.scheduler_config")
        cache = _attr_path(self.llm, "llm_engine.vllm_config.cache_config")
        engine = {k: v for k, v in self.engine_kwargs.items() if k != "disable_log_stats"}
        for key, obj in (("max_num_seqs", sched), ("max_num_batched_tokens", sched)):
            if engine.get(key) is None and getattr(obj, key, None) is not None:
                engine[key] = getattr(obj, key)
        engine.setdefault("max_model_len", self.max_model_len)
        meta = {
            "model": self.model,
            "vllm_version": getattr(self._vllm, "__version__", None),
            "engine_kwargs": engine,
            "hardware": gpu_info(),
        }
        if cache is not None and getattr(cache, "num_gpu_blocks", None):
            meta["kv_cache"] = {
                "num_gpu_blocks": cache.num_gpu_blocks,
                "block_size": getattr(cache, "block_size", None),
                "gpu_memory_utilization": getattr(cache, "gpu_memory_utilization", None),
                "enable_prefix_caching": getattr(cache, "enable_prefix_caching", None),
            }
        return meta

    def metrics_snapshot(self) -> dict | None:
        get = getattr(self.llm, "get_metrics", None)
        if get is None:
            return None
        return snapshot_from((m.name, m.value) for m in get() if hasattr(m, "value"))

    # -------------------------------------------------------------- generate
    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _cap(self, req: GenRequest, prompt_len: int) -> int:
        if self.max_model_len is None:
            return req.max_tokens
        room = int(self.max_model_len) - prompt_len
        if room < 1:
            raise UserError(
                f"the prompt of {req.query_id} has {prompt_len} tokens, which fills the "
                f"model's {self.max_model_len}-token context; raise --max-model-len",
                field="--max-model-len",
            )
        return min(req.max_tokens, room)

    def run(self, requests: list[GenRequest], chunk_size: int) -> Iterator[GenResult]:
        SamplingParams = self._vllm.SamplingParams
        for start in range(0, len(requests), chunk_size):
            chunk = requests[start : start + chunk_size]
            prompts, params, caps = [], [], []
            for req in chunk:
                ids = self._prompt_ids(req.messages)
                cap = self._cap(req, len(ids))
                prompts.append({"prompt_token_ids": ids})
                caps.append(cap)
                params.append(
                    SamplingParams(
                        n=req.n,
                        temperature=req.temperature,
                        top_p=req.top_p,
                        max_tokens=cap,
                        seed=req.seed,
                    )
                )
            outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=True)
            if len(outputs) != len(chunk):
                raise RuntimeError(
                    f"vLLM returned {len(outputs)} outputs for {len(chunk)} prompts"
                )
            for req, cap, out in zip(chunk, caps, outputs):
                yield self._result(req, cap, out)

    def _result(self, req: GenRequest, cap: int, out) -> GenResult:
        completions = sorted(out.outputs, key=lambda c: c.index)
        if len(completions) != req.n:
            raise RuntimeError(
                f"vLLM returned {len(completions)} samples for {req.query_id}, asked {req.n}"
            )
        samples = []
        for c in completions:
            reason = None if c.finish_reason is None else str(c.finish_reason)
            if reason not in FINISH_REASONS:
                raise RuntimeError(
                    f"vLLM finished sample {c.index} of {req.query_id} with reason {reason!r}; "
                    "expected 'stop' or 'length'"
                )
            samples.append(GenSample(c.index, c.text, len(c.token_ids), reason))
        prompt_tokens = len(out.prompt_token_ids)
        timing = timing_from_metrics(
            req.query_id, prompt_tokens, getattr(out, "metrics", None), req.n,
            fallback_out=max(s.tokens for s in samples),
        )
        return GenResult(
            req.query_id, prompt_tokens, cap, samples, [timing] if timing is not None else []
        )

    def close(self) -> None:
        self.llm = None
