"""The refresh state directory: which inputs were processed and which texts were accepted.

Layout (local or any Beam filesystem)::

    state.json                committed state, sealed by a SHA-256 of its content
    state.json.prev           the state before the last commit (for recovery)
    hashes/vNNNN/part-*.parquet   text_hash, id, version of every document accepted by version N
    minhash/                  MinHash band index (``dedup.minhash.index_dir``) when near-dedup is on
    _staging/vNNNN/           the version in flight: accepted hashes written by its pipeline
    .lock                     held (flock) by the running refresh; local state dirs only

``state.json`` is replaced atomically (temp + rename) as the last step of a refresh: that
replace is the commit. Everything a crashed refresh left behind for an uncommitted version is
discarded or resumed by the next one. A state file that does not parse or whose seal does not
match stops the refresh before anything is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from winnow.beam.write import atomic_write_bytes

STATE_FILE = "state.json"
PREVIOUS_STATE_FILE = "state.json.prev"
HASHES = "hashes"
MINHASH_INDEX = "minhash"
STAGING = "_staging"
LOCK_FILE = ".lock"
FORMAT = "winnow-refresh-state"
FORMAT_VERSION = 1

ACCEPTED_SCHEMA = pa.schema(
    [
        pa.field("text_hash", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("version", pa.int32(), nullable=False),
    ],
    metadata={b"winnow.schema": b"accepted_hashes", b"winnow.schema_version": b"1"},
)


class StateError(RuntimeError):
    """The state directory cannot be used as it is; the message says why and how to recover."""


@dataclass(frozen=True)
class InputFingerprint:
    """One processed input file: path, size and content hash (SHA-256, or the object store's checksum)."""

    path: str
    source: str
    size: int
    digest: str

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.path, self.size, self.digest)


@dataclass
class VersionRecord:
    """A committed output version."""

    version: int
    dir: str
    inputs: list[InputFingerprint]
    counts: dict[str, Any]
    config_hash: str
    manifest_sha256: str
    hash_files: list[dict[str, Any]] = field(default_factory=list)
    index_files: list[str] = field(default_factory=list)


@dataclass
class RefreshState:
    output_dir: str | None = None
    versions: list[VersionRecord] = field(default_factory=list)

    @property
    def last_version(self) -> int:
        return self.versions[-1].version if self.versions else 0

    def processed(self) -> set[tuple[str, int, str]]:
        return {fp.key for version in self.versions for fp in version.inputs}

    def hash_paths(self, state_dir: str) -> list[str]:
        return [FileSystems.join(state_dir, f["file"]) for v in self.versions for f in v.hash_files]

    def to_json(self) -> dict[str, Any]:
        return {"output_dir": self.output_dir, "versions": [asdict(v) for v in self.versions]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RefreshState:
        versions = []
        for item in data["versions"]:
            inputs = [InputFingerprint(**fp) for fp in item.pop("inputs")]
            versions.append(VersionRecord(inputs=inputs, **item))
        return cls(output_dir=data.get("output_dir"), versions=versions)


def _seal(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


def load_state(state_dir: str) -> RefreshState:
    """The committed state, or an empty one for a new state dir. Raises ``StateError`` if unusable."""
    path = FileSystems.join(state_dir, STATE_FILE)
    if not FileSystems.exists(path):
        leftovers = [p for p in (HASHES, PREVIOUS_STATE_FILE) if FileSystems.exists(FileSystems.join(state_dir, p))]
        if leftovers:
            raise StateError(
                f"{path} is missing but {state_dir} holds {', '.join(leftovers)}: the state was deleted or moved. "
                f"Nothing was changed. Restore state.json (or copy {PREVIOUS_STATE_FILE} to it) and rerun."
            )
        return RefreshState()
    raw = _read_bytes(path)
    recovery = (
        f"Nothing was changed: no output, hash or index file was touched. The state before the last commit is "
        f"{FileSystems.join(state_dir, PREVIOUS_STATE_FILE)}; copy it over {STATE_FILE} and rerun to redo the "
        "versions committed after it from their inputs (they come out the same when the inputs are unchanged)."
    )
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise StateError(f"state file {path} is corrupt or truncated ({len(raw)} bytes; {error}). {recovery}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StateError(f"{path} is not a winnow refresh state file. {recovery}")
    if document.get("format_version") != FORMAT_VERSION:
        raise StateError(
            f"{path} has state format {document.get('format_version')}; this winnow reads format {FORMAT_VERSION}"
        )
    payload = document.get("state")
    if not isinstance(payload, dict) or document.get("sha256") != _seal(payload):
        raise StateError(f"state file {path} fails its checksum (edited or partly written). {recovery}")
    try:
        return RefreshState.from_json(payload)
    except (KeyError, TypeError) as error:
        raise StateError(f"state file {path} has an unexpected structure ({error!r}). {recovery}") from None


def save_state(state_dir: str, state: RefreshState) -> None:
    """Commit: keep the previous state as ``state.json.prev``, then atomically replace ``state.json``."""
    path = FileSystems.join(state_dir, STATE_FILE)
    if FileSystems.exists(path):
        atomic_write_bytes(FileSystems.join(state_dir, PREVIOUS_STATE_FILE), _read_bytes(path))
    payload = state.to_json()
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "sha256": _seal(payload), "state": payload}
    atomic_write_bytes(path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode())


def fingerprint(path: str, source: str) -> InputFingerprint:
    """Size and content hash of an input file.

    Local files are hashed (SHA-256, one sequential read). On object stores the store's own
    content checksum is used (GCS: MD5/CRC32C from the object metadata), so a refresh over
    terabytes does not download them on the driver just to see whether they are new.
    """
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    if "://" in path:
        try:
            return InputFingerprint(path, source, size, f"store:{FileSystems.checksum(path)}")
        except Exception:  # a filesystem without checksums: fall back to reading the file
            pass
    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return InputFingerprint(path, source, size, f"sha256:{digest.hexdigest()}")


@contextlib.contextmanager
def state_lock(state_dir: str) -> Iterator[None]:
    """One refresh at a time per local state dir (the kernel drops the lock if the process dies).

    Object stores have no such lock: the scheduler must not overlap runs (Airflow
    ``max_active_runs=1``, ``flock`` around cron).
    """
    if "://" in state_dir:
        yield
        return
    import fcntl  # lazy: POSIX-only lock

    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, LOCK_FILE), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError(f"another winnow refresh is running on {state_dir} (it holds {LOCK_FILE})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
