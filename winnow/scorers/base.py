"""The scorer contract and the registry of model backends, Beam-free.

A scorer is anything with a ``name``, a ``version`` (for provenance: it changes when the model
bytes change), the ``columns`` it writes with their Arrow types, and ``score(texts)`` that maps a
batch of texts to one array per column. Keeping it this small is what lets one Beam DoFn
(``winnow.transforms.score``) run any model, and lets tests and benches call a scorer on a
plain list. Backends register under a name (``register_backend``); a config entry names its
backend and ``build_scorer`` constructs it. Models load from a local path, from this package
(``winnow:`` paths) or from any Beam filesystem (copied to a local cache), never from a model hub.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DATA = PACKAGE_ROOT / "data"
PACKAGE_PREFIX = "winnow:"  # winnow:models/x.ftz = <package>/data/models/x.ftz
PACKAGE_ROOT_PREFIX = "package:"  # package:data/models/x.ftz = <package>/data/models/x.ftz
_HUB_PREFIXES = ("hf://", "hf:", "huggingface://", "http://", "https://")


@dataclass(frozen=True)
class ScoreColumn:
    """An output column: its name in the document and its Arrow type."""

    name: str
    type: pa.DataType = field(default_factory=pa.float32)

    def field(self) -> pa.Field:
        return pa.field(self.name, self.type)


@runtime_checkable
class Scorer(Protocol):
    """A model that scores a batch of texts into named columns, one value per text."""

    name: str
    version: str
    columns: tuple[ScoreColumn, ...]

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]: ...


def texts_of(batch: pa.RecordBatch | pa.Table | Sequence[str], text_column: str = "text") -> list[str]:
    """The texts of an Arrow batch (its ``text_column``) or of a plain sequence; nulls become ''."""
    if isinstance(batch, pa.RecordBatch | pa.Table):
        return [t if t is not None else "" for t in batch.column(text_column).to_pylist()]
    return [t if t is not None else "" for t in batch]


def score_batch(
    scorer: Scorer, batch: pa.RecordBatch | pa.Table | Sequence[str], text_column: str = "text"
) -> pa.RecordBatch:
    """Score an Arrow batch (or list of texts) into a RecordBatch of the scorer's columns."""
    texts = texts_of(batch, text_column)
    out = checked_scores(scorer, scorer.score(texts), len(texts))
    arrays = [pa.array(out[c.name], type=c.type) for c in scorer.columns]
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema([c.field() for c in scorer.columns]))


def checked_scores(scorer: Scorer, out: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The scorer's output, verified: every declared column, one value per text."""
    checked = {}
    for column in scorer.columns:
        if column.name not in out:
            raise ValueError(f"scorer {scorer.name} returned no column {column.name!r}")
        values = np.asarray(out[column.name])
        if values.shape != (n,):
            raise ValueError(f"scorer {scorer.name} column {column.name!r} has shape {values.shape}, expected ({n},)")
        checked[column.name] = values
    return checked


# --- model files ---------------------------------------------------------------------------


def package_file(path: str) -> Path | None:
    """The package-data file ``path`` names (``winnow:…``, ``package:…`` or package-relative), if any.

    Package data exists on every worker that installed the wheel or runs the image, so such a
    path is valid on any runner; absolute paths never count (the package sits elsewhere there).
    """
    if path.startswith(PACKAGE_PREFIX):
        candidate = PACKAGE_DATA / path[len(PACKAGE_PREFIX) :].lstrip("/")
    elif path.startswith(PACKAGE_ROOT_PREFIX):
        candidate = PACKAGE_ROOT / path[len(PACKAGE_ROOT_PREFIX) :].lstrip("/")
    elif os.path.isabs(path) or "://" in path:
        return None
    else:
        candidate = PACKAGE_ROOT / path
    return candidate if candidate.exists() else None


def resolve_model_path(path: str | os.PathLike[str], cache_dir: str | None = None) -> Path:
    """A local path for a model (call it in ``DoFn.setup``): a local file, package data, or a
    ``gs://``/``s3://`` file copied once into ``cache_dir``.

    Hub names and URLs are refused: nothing is downloaded from a model hub at run time.
    """
    text = os.fspath(path)
    if text.startswith(_HUB_PREFIXES):
        raise ValueError(f"model path {text!r} is a hub name or URL; download the model yourself and give its path")
    if "://" in text:
        local = _copy_remote(text, cache_dir)
    else:
        local = Path(text).expanduser()
        if text.startswith((PACKAGE_PREFIX, PACKAGE_ROOT_PREFIX)) or not local.exists():
            local = package_file(text) or local
    if not local.exists():
        raise FileNotFoundError(f"model not found: {text} ({local})")
    return local


def _copy_remote(uri: str, cache_dir: str | None) -> Path:
    from apache_beam.io.filesystems import FileSystems

    folder = Path(cache_dir or os.path.join(tempfile.gettempdir(), "winnow-models"))
    folder.mkdir(parents=True, exist_ok=True)
    local = folder / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}-{uri.rsplit('/', 1)[-1]}"
    if not local.exists():
        partial = local.with_suffix(local.suffix + f".part{os.getpid()}")
        with FileSystems.open(uri) as source, open(partial, "wb") as target:
            while chunk := source.read(1 << 22):
                target.write(chunk)
        partial.replace(local)
    return local


def file_digest(path: str | os.PathLike[str]) -> str:
    """Short content hash of a model file or directory, the ``version`` of scorers built from it."""
    import xxhash

    digest = xxhash.xxh64()
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


# --- registry --------------------------------------------------------------------------------

BackendFactory = Callable[[Any], Scorer]
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register ``factory(entry) -> Scorer`` under ``name`` (the config's ``backend`` value)."""

    def decorate(factory: BackendFactory) -> BackendFactory:
        _BACKENDS[name] = factory
        return factory

    return decorate


def backends() -> list[str]:
    import winnow.scorers.backends  # noqa: F401  (registers the built-in backends)

    return sorted(_BACKENDS)


def build_scorer(entry: Any) -> Scorer:
    """Construct the scorer a config entry (``winnow.schemas.score.ScorerEntry``) describes."""
    import winnow.scorers.backends  # noqa: F401

    if entry.backend not in _BACKENDS:
        raise ValueError(f"unknown scorer backend {entry.backend!r}; known: {', '.join(sorted(_BACKENDS))}")
    scorer = _BACKENDS[entry.backend](entry)
    if not isinstance(scorer, Scorer):
        raise TypeError(f"backend {entry.backend!r} built {type(scorer).__name__}, which is not a Scorer")
    return scorer


class ScorerFactory:
    """A picklable zero-argument callable that builds a scorer from its config entry (for DoFn.setup)."""

    def __init__(self, entry: Any):
        self.entry = entry

    def __call__(self) -> Scorer:
        return build_scorer(self.entry)
