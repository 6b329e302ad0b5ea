"""Where model files come from: package data, a local path, or a copy of a remote file; never a model hub."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import xxhash

PACKAGE_ROOT = Path(__file__).resolve().parent.parent

PACKAGE_DATA = PACKAGE_ROOT / "data"

PACKAGE_PREFIX = "winnow:"  # winnow:models/x.ftz = <package>/data/models/x.ftz

PACKAGE_ROOT_PREFIX = "package:"  # package:data/models/x.ftz = <package>/data/models/x.ftz

_HUB_PREFIXES = ("hf://", "hf:", "huggingface://", "http://", "https://")


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
    from apache_beam.io.filesystems import FileSystems  # lazy: remote model paths only; core stays Beam-free

    folder = cache_root(cache_dir) / "models"
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

    digest = xxhash.xxh64()
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def cache_root(cache_dir: str | None = None) -> Path:
    """Where copies of remote models are kept: ``cache_dir``, else $WINNOW_CACHE, else ~/.cache/winnow."""
    root = cache_dir or os.environ.get("WINNOW_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "winnow")
    return Path(root)
