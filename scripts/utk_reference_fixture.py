"""Record the released Untie-the-Knots corruption on random packed samples, for the parity test.

Loads ``gpt_dataset_utk.py`` from a checkout of rgtjf/Untie-the-Knots (commit 21736a5) with its
Megatron/torch imports stubbed (the corruption functions need only numpy), runs the dataset's two
steps per sample (draw the chunk-count law row, then ``denoise_text_multi_hop``) and writes inputs
and outputs to ``tests/data/pack/utk_reference.json.gz``. Nothing of the reference is copied.

    python scripts/utk_reference_fixture.py --reference path/to/gpt_dataset_utk.py
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KNOTS = [101, 102, 103, 104, 105, 106]
SORT_TOKENS = [201, 202, 203, 204, 205]
EOD = 0


class CharTokenizer:
    """The stand-in tokenizer both sides use: one id per character."""

    def tokenize(self, text: str) -> list[int]:
        return [1000 + ord(c) for c in text]


def load_reference(path: Path) -> types.ModuleType:
    for name in ("torch", "megatron", "megatron.core", "megatron.core.datasets", "megatron.core.datasets.gpt_dataset"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torch"].Tensor = object  # only used in a type annotation at import time
    stub = sys.modules["megatron.core.datasets.gpt_dataset"]

    @dataclass
    class GPTDatasetConfig:
        def __post_init__(self) -> None:
            pass

    stub.GPTDataset = type("GPTDataset", (), {})
    stub.GPTDatasetConfig = GPTDatasetConfig
    stub._get_ltor_masks_and_position_ids = None
    spec = importlib.util.spec_from_file_location("utk_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_sample(rng: np.random.Generator, length: int) -> list[int]:
    """Documents of random lengths (ids 300–999) separated by EOD, cut to ``length`` tokens."""
    out: list[int] = []
    if rng.random() < 0.5:  # start inside a document, as a packed sample often does
        out.extend([*rng.integers(300, 1000, int(rng.integers(1, 30))).tolist(), EOD])
    while len(out) < length:
        out.extend([*rng.integers(300, 1000, int(rng.integers(1, 90))).tolist(), EOD])
    return out[:length]


def cases(seed: int, count: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    laws = [[0.0, 0.0, 1.0], [0.0, 0.5, 0.5], [0.2, 0.3, 0.5], [0.0, 1.0, 0.0]]
    out = []
    for i in range(count):
        hop = i % 25 == 24
        law = [0.0, 0.0, 0.3, 0.7] if hop else laws[i % len(laws)]
        out.append(
            {
                "index": int(rng.integers(0, 1_000_000)),
                "probability": [0.3, 0.8, 1.0][i % 3],
                "law": law,
                "knots": KNOTS[: 2 * (len(law) - 1)],
                "preserve": bool(i % 2),
                "length_sampler": bool((i // 2) % 2) and not hop,
                "sort": bool((i // 4) % 2),
                "tokens": random_sample(rng, int(rng.integers(2500, 4000)) if hop else int(rng.integers(20, 300))),
            }
        )
    return out


def run_case(module: types.ModuleType, case: dict, seed: int = 47) -> list[int]:
    rng = module.create_rng_with_seed_and_idx(seed, case["index"])
    plain = [1.0] + [0.0] * (len(case["law"]) - 1)
    row = rng.choice([plain, case["law"]], 1, p=[1.0 - case["probability"], case["probability"]])[0]
    out = module.denoise_text_multi_hop(
        np.array(case["tokens"], dtype=np.int64),
        rng,
        EOD,
        case["knots"],
        row,
        case["length_sampler"],
        False,
        case["preserve"],
        CharTokenizer(),
        case["sort"],
        SORT_TOKENS,
    )
    return out.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="gpt_dataset_utk.py of the released code")
    parser.add_argument("--out", type=Path, default=Path("tests/data/pack/utk_reference.json.gz"))
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    module = load_reference(args.reference)
    records = cases(seed=20240907, count=args.count)
    for case in records:
        case["output"] = run_case(module, case)
    payload = {
        "source": "rgtjf/Untie-the-Knots@21736a5843b7d3d0d4ca3b3a6f82d2c228afa06b gpt_dataset_utk.py",
        "corruption_rng_seed": 47,
        "eod": EOD,
        "sort_tokens": SORT_TOKENS,
        "tokenizer": "one id per character: 1000 + ord(c)",
        "cases": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(args.out, "wb", mtime=0) as raw, io.TextIOWrapper(raw, encoding="utf-8") as handle:
        json.dump(payload, handle, separators=(",", ":"))
    print(f"wrote {len(records)} cases to {args.out}")


if __name__ == "__main__":
    main()
