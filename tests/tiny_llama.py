"""A tiny randomly initialised LlamaForCausalLM saved as a local checkpoint (reference mode), for tests that
need a causal LM's plumbing but not its knowledge: it uses the bundled tokenizer, so the run tokenizer and
the LM give every token the same id (soft labels accept it)."""

from __future__ import annotations

from pathlib import Path


def build_tiny_llama(folder: Path) -> Path:
    """A 2-layer, 32-wide Llama with the bundled BPE, written to ``folder`` (seeded: the same weights each time)."""
    import torch  # lazy: the optional `lm` extra, only for the tests that use a causal LM
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # lazy: as above

    from winnow.core.models import resolve_model_path
    from winnow.core.tokenizer import BUNDLED_TOKENIZER

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(resolve_model_path(BUNDLED_TOKENIZER)),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
