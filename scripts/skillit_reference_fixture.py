"""Record the released Skill-it! online mixture updates on random graphs and loss histories.

Loads ``trainer/mw_trainer.py`` from a checkout of HazyResearch/skill-it (commit 807b3bf) and runs
its real ``MWTrainer.train`` with the model, data, evaluator and logging replaced by stand-ins: the
evaluator returns losses from a prepared history (one value per skill and checkpoint), the
training set records every mixture it is given. Inputs and the recorded mixtures go to
``tests/data/mix/skillit_reference.json.gz`` for the parity test. Nothing of the reference is copied.
Needs numpy and pandas (the trainer aggregates losses with pandas); torch and wandb are stubbed.

    python scripts/skillit_reference_fixture.py --reference path/to/skill-it
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pandas as pd


def install_stubs() -> None:
    torch = types.ModuleType("torch")
    torch.is_tensor = lambda value: False
    nn = types.ModuleType("torch.nn")
    utils = types.ModuleType("torch.nn.utils")
    utils.clip_grad_norm_ = lambda parameters, norm: None
    torch.nn, nn.utils = nn, utils
    wandb = types.ModuleType("wandb")
    wandb.log = lambda *args, **kwargs: None
    tqdm = types.ModuleType("tqdm")

    class Bar:
        def __init__(self, iterable: object) -> None:
            pass

        def update(self, n: int) -> None:
            pass

    tqdm.tqdm = Bar
    sys.modules.update({"torch": torch, "torch.nn": nn, "torch.nn.utils": utils, "wandb": wandb, "tqdm": tqdm})


class Recorder:
    """Stands in for the training set: keeps every mixture the trainer sets."""

    def __init__(self) -> None:
        self.mixtures: list[list[float]] = []

    def set_proportions(self, args: object, weights: np.ndarray) -> None:
        w = np.array(weights, dtype=np.float64)
        self.mixtures.append((w / w.sum()).tolist())


def trainer_package(recorder: Recorder) -> None:
    package = types.ModuleType("trainer")
    package.__path__ = []
    base = types.ModuleType("trainer.trainer")
    base.AbstractTrainer = type("AbstractTrainer", (), {})
    helpers = types.ModuleType("trainer.utils")

    def get_steps(args: argparse.Namespace) -> tuple[int, int]:
        return int(args.max_steps / args.num_ckpts), args.max_steps

    class Optimizer:
        def step(self) -> None:
            pass

    def aggregate_task_category(frame: pd.DataFrame) -> pd.Series:
        total = frame["loss"].apply(sum).sum()
        count = frame["loss"].apply(len).sum()
        return pd.Series({"task_loss": total / count}, index=["task_loss"])

    helpers.get_steps = get_steps
    helpers.create_optimizer_scheduler = lambda model, lr, steps: (Optimizer(), Optimizer())
    helpers.aggregate_task_category = aggregate_task_category
    helpers.get_train_dataloader = lambda *args: [{"x": 0}] * 10**6
    helpers.get_train_dataset = lambda args, logger, tokenizer: recorder
    helpers.get_tokenized_train_dataset = lambda args, data, n: None
    helpers.log_val_loss_per_skill = lambda logger, losses: None
    sys.modules.update({"trainer": package, "trainer.trainer": base, "trainer.utils": helpers})


class Value:
    def __init__(self, value: float) -> None:
        self.value = value

    def numpy(self) -> float:
        return self.value


class Evaluator:
    """Returns the prepared losses of checkpoint 0, 1, 2, … in call order."""

    def __init__(self, history: np.ndarray) -> None:
        self.history = history
        self.calls = 0

    def evaluate(self, data: object, counter: int, weights: object, output_idxs: object) -> dict[int, list[Value]]:
        row = self.history[min(self.calls, len(self.history) - 1)]
        self.calls += 1
        return {j: [Value(float(v))] for j, v in enumerate(row)}


class Model:
    def __call__(self, **batch: object) -> object:
        loss = types.SimpleNamespace(mean=lambda: types.SimpleNamespace(backward=lambda: None))
        return types.SimpleNamespace(loss=loss)

    def parameters(self) -> list[object]:
        return []

    def zero_grad(self) -> None:
        pass

    def train(self) -> None:
        pass


def load_trainer(root: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("trainer.mw_trainer", root / "trainer" / "mw_trainer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "trainer"
    spec.loader.exec_module(module)
    return module


def random_case(rng: np.random.Generator, i: int) -> dict:
    k = int(rng.integers(2, 7))
    kind = i % 10
    binary = kind in (0, 1, 2, 7)
    if binary:
        graph = np.eye(k, dtype=int)
        graph[rng.random((k, k)) < 0.35] = 1
        np.fill_diagonal(graph, 1)
    else:
        graph = np.round(rng.random((k, k)) * (rng.random((k, k)) < 0.6), 3)
        np.fill_diagonal(graph, 1.0)
        graph[rng.random((k, k)) < 0.1] = 1.0  # exact ones off the diagonal become 0.5
    lone = kind == 7
    if lone:  # make skill 0 isolated
        graph[0, :] = 0
        graph[:, 0] = 0
        graph[0, 0] = 1
        if graph[1:, 1:].sum() == k - 1:
            graph[1, 2 % k if k > 2 else 1] = 1
    ckpts_per_round = int(rng.integers(1, 4))
    rounds = int(rng.integers(2, 7))
    case = {
        "k": k,
        "graph": graph.tolist(),
        "graph_is_binary": binary,
        "eta": float(rng.choice([0.1, 0.2, 0.5, 1.0, 2.0])),
        "window": int(rng.integers(1, 6)),
        "update_steps": 10 * ckpts_per_round,
        "ckpt_steps": 10,
        "rounds": rounds,
        "normalize_loss": kind in (3, 9),
        "eta_schedule": kind in (4, 9),
        "dynamic_lambda": kind in (5, 9),
        "initialize_loss": kind == 6,
        "ignore_lone_nodes": lone,
        "prior": np.round(rng.random(k) + 0.2, 3).tolist() if kind in (7, 8) else None,
        "target_mask": None,
    }
    if kind == 2 and k >= 3:
        mask = [1] * k
        mask[int(rng.integers(0, k))] = 0
        case["target_mask"] = mask
    m = k if case["target_mask"] is None else sum(case["target_mask"])
    base = rng.uniform(1.0, 4.0, k)
    decay = rng.uniform(0.0, 0.15, k)
    steps = rounds * ckpts_per_round + 2
    history = np.array([base * np.exp(-decay * t) + rng.normal(0, 0.02, k) for t in range(steps)])
    case["history"] = np.round(history, 6).tolist()
    case["eval_skills"] = m
    return case


def run_case(module: types.ModuleType, recorder: Recorder, case: dict, folder: Path) -> list[list[float]]:
    recorder.mixtures.clear()
    k = case["k"]
    graph = np.array(case["graph"])
    graph_path = None
    if not case["graph_is_binary"]:
        graph_path = str(folder / "graph.npy")
        np.save(graph_path, graph.astype(float))
    args = argparse.Namespace(
        k=k,
        graph=graph.astype(int).flatten().tolist() if case["graph_is_binary"] else None,
        graph_path=graph_path,
        ignore_lone_nodes=case["ignore_lone_nodes"],
        target_mask="".join(str(v) for v in case["target_mask"]) if case["target_mask"] else None,
        mw_prior=case["prior"],
        mw_init=None,
        ni_test=False,
        initialize_loss=case["initialize_loss"],
        eta=case["eta"],
        eta_schedule=case["eta_schedule"],
        normalize_loss=case["normalize_loss"],
        dynamic_lambda=case["dynamic_lambda"],
        mw_window=case["window"],
        update_steps=case["update_steps"],
        max_steps=case["update_steps"] * case["rounds"],
        num_ckpts=case["rounds"] * case["update_steps"] // case["ckpt_steps"],
        batch_size=1,
        lr=0.0,
        task_name="lego",
        slicer=None,
        curriculum=False,
    )
    logger = types.SimpleNamespace(info=lambda *a, **kw: None)
    evaluator = Evaluator(np.array(case["history"]))
    validation = types.SimpleNamespace(get_tokenized_dataset=lambda: (None, None))
    module.MWTrainer().train(args, logger, None, Model(), validation, evaluator)
    return list(recorder.mixtures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="root of a skill-it checkout")
    parser.add_argument("--out", type=Path, default=Path("tests/data/mix/skillit_reference.json.gz"))
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    install_stubs()
    recorder = Recorder()
    trainer_package(recorder)
    module = load_trainer(args.reference)
    rng = np.random.default_rng(20230725)
    records, failed = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        i = 0
        while len(records) < args.count:
            case = random_case(rng, i)
            i += 1
            try:
                case["mixtures"] = run_case(module, recorder, case, Path(tmp))
            except AssertionError:  # the lone-node branch asserts an exact float sum of 1
                failed += 1
                continue
            records.append(case)
    payload = {
        "source": "HazyResearch/skill-it@807b3bf7b11970f3a6fb6201cb37dcc1a3335f00 trainer/mw_trainer.py",
        "note": "mixtures[t] = the proportions the trainer set for round t (normalised)",
        "skipped_cases": failed,
        "cases": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(args.out, "wb", mtime=0) as raw, io.TextIOWrapper(raw, encoding="utf-8") as handle:
        json.dump(payload, handle, separators=(",", ":"))
    print(f"wrote {len(records)} cases to {args.out} ({failed} skipped: reference assertion)")


if __name__ == "__main__":
    main()
