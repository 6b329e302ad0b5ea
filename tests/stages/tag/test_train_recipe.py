"""The tagger training recipe's weighting and label-offset helpers (``scripts/train_tagger.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from winnow.core.evaluation import macro_f1

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "train_tagger.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("train_tagger_recipe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_balanced_weights_scale_each_class_by_its_rarity(recipe) -> None:
    targets = np.array([0, 0, 0, 1])  # mean class count 2: class 0 × (2/3)^p, class 1 × 2^p
    confidence = np.array([0.5, 1.0, 1.0, 0.8])
    np.testing.assert_allclose(recipe.example_weights(confidence, "flat, balanced^1", targets), [2 / 3] * 3 + [2])
    np.testing.assert_allclose(
        recipe.example_weights(confidence, "confidence, balanced^2", targets),
        [0.5 * 4 / 9, 4 / 9, 4 / 9, 0.8 * 4],
    )
    np.testing.assert_allclose(recipe.example_weights(confidence, "flat", targets), 1.0)


def test_offsets_raise_macro_f1_and_stay_zero_when_nothing_improves(recipe) -> None:
    # label 1 is always second best by 0.3: only an offset on it can make it win for its own rows
    truth = np.array([0, 0, 0, 1, 1, 2, 2])
    logits = np.zeros((7, 3))
    logits[np.arange(7), truth] = 1.0
    logits[truth == 1] = [1.0, 0.7, 0.0]
    offsets = recipe.macro_f1_offsets(logits, truth, 3)
    assert offsets[1] - offsets[0] > 0.3 and offsets[2] == 0  # label 1 up or label 0 down; label 2 untouched
    assert macro_f1(truth, np.argmax(logits + offsets, axis=1), 3)[0] == 1.0
    clean = np.eye(3)[truth]
    np.testing.assert_array_equal(recipe.macro_f1_offsets(clean, truth, 3), 0.0)
