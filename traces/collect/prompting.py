"""The conversation sent for each problem, and the per-query sampling seed.

The default system prompt is Qwen2.5-Math's own chain-of-thought prompt ("Please reason step by
step, and put your final answer within \\boxed{}."), so the grader's ``\\boxed{}`` extraction finds
the answer.  The chat template is the model's own: the vLLM backend renders it with the model's
tokenizer, the endpoint backend lets the server apply it.

Seeds are per query, derived from the run seed and the query id (not from its position in a
batch), so a resumed or re-chunked collection samples every query exactly as an uninterrupted one
would.  Sample ``k`` of a query uses ``seed + k``: that is what vLLM itself does with
``SamplingParams(n=K, seed=s)`` (``ParentRequest._get_child_sampling_params`` gives child ``k``
the seed ``s + k``), so the endpoint backend's K single-sample requests draw the same streams as
the offline backend's one ``n=K`` request.
"""

from __future__ import annotations

import hashlib

DEFAULT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

#: Query seeds stay below 2**31 with room for ``seed + k`` children.
_SEED_SPAN = 2**31 - 2**16


def build_messages(question: str, system: str | None = DEFAULT_SYSTEM) -> list[dict]:
    """OpenAI-style chat messages: the system prompt (unless empty) and the question."""
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": question})
    return messages


def query_seed(seed: int, query_id: str) -> int:
    """A stable 31-bit seed for one query of a run."""
    digest = hashlib.sha256(f"{seed}\x00{query_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _SEED_SPAN
