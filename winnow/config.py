"""The run configuration: one pydantic model per section, one section per pipeline stage.

Every model forbids unknown keys, so a typo in a YAML file fails before any data moves,
with the YAML path of the bad key (``load_config`` formats pydantic's error locations).
Field descriptions double as the README's config reference (``winnow config reference``).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from winnow.core.config import InputSpec, Section, ShardingConfig, TokenizerConfig
from winnow.core.tokens.config import TokenOutputConfig
from winnow.stages.decontaminate.config import DecontaminateConfig
from winnow.stages.dedup.config import DedupConfig
from winnow.stages.extract.config import ExtractConfig
from winnow.stages.filter.config import FilterConfig
from winnow.stages.inject.config import InjectConfig
from winnow.stages.langid.config import LangIdConfig
from winnow.stages.mix.config import MixConfig
from winnow.stages.normalize.config import NormalizeConfig
from winnow.stages.order.config import OrderConfig
from winnow.stages.pack.config import PackConfig
from winnow.stages.pii.config import PiiConfig
from winnow.stages.review.config import ReviewConfig
from winnow.stages.score.config import ScoreConfig
from winnow.stages.score.soft_labels import SoftLabelConfig
from winnow.stages.select.config import SelectConfig
from winnow.stages.tag.config import TagConfig


class ReportConfig(Section):
    """The run report (report.html) and dataset card (DATASET_CARD.md) written beside the manifest."""

    enabled: bool = Field(True, description="Write report.html and DATASET_CARD.md with every run.")
    samples_per_bucket: int = Field(
        3, ge=0, le=50, description="Example documents shown for kept and for each removal reason / rejecting stage."
    )
    max_rows: int = Field(
        200_000,
        gt=0,
        description="Rows read per output kind for the plots (whole row groups, in shard order); "
        "bounds the driver's memory on big corpora.",
    )
    title: str | None = Field(None, description="Dataset name for the report and card; defaults to the output dir.")
    license: str | None = Field(None, description="License of the curated dataset, stated in the dataset card.")
    source_licenses: dict[str, str] = Field(
        default_factory=dict,
        description="License of each input, by input `name` or path glob, stated in the dataset card.",
    )


class OutputConfig(Section):
    """Where and how results are written."""

    dir: str = Field(
        "winnow-out", description="Output directory (local or any Beam filesystem); relative to the working directory."
    )
    shards: ShardingConfig = Field(default_factory=ShardingConfig, description="Shard sizing for kept documents.")
    write_removed: bool = Field(True, description="Write filtered and duplicate documents to `removed/`.")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Run report and dataset card.")
    tokens: TokenOutputConfig = Field(
        default_factory=TokenOutputConfig, description="Training-ready token files (Megatron, MDS, Parquet)."
    )
    soft_labels: SoftLabelConfig = Field(
        default_factory=SoftLabelConfig,
        description="A small LM's top-k next-token distribution on the packed contexts of the token output, as "
        "the Parquet table `soft_labels/` (SALT's distillation phase, docs/salt.md#soft-labels).",
    )


class RunnerConfig(Section):
    """Beam runner settings; any other Beam option passes through the CLI unchanged."""

    runner: str = Field("FnApiRunner", description="Beam runner. FnApiRunner runs locally without downloading Prism.")
    direct_num_workers: int = Field(0, ge=0, description="Local workers; 0 means one per CPU core.")
    direct_running_mode: Literal["auto", "in_memory", "multi_threading", "multi_processing"] = Field(
        "auto",
        description="Local running mode. `auto`: one in-memory process unless the run has a stage with heavy "
        "per-document work (extract, filter, pii, score, tag, order) and more input than `auto_in_memory_mb`, "
        "then one worker process per core (`multi_processing`).",
    )
    auto_in_memory_mb: float = Field(
        20.0,
        ge=0,
        description="With `direct_running_mode: auto`: input files (bytes on disk) up to this size run in one "
        "in-memory process even with heavy stages, where worker start-up would cost more than it saves.",
    )
    options: list[str] = Field(
        default_factory=list, description="Extra Beam pipeline options, e.g. ['--project=p', '--region=r']."
    )


class WinnowConfig(Section):
    """A whole winnow run."""

    inputs: list[InputSpec] = Field(default_factory=list, description="Input corpora.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Output location and sharding.")
    runner: RunnerConfig = Field(default_factory=RunnerConfig, description="Beam runner.")
    seed: int = Field(0, description="Seed for every random choice; same input + config + seed = same bytes.")
    tokenizer: TokenizerConfig = Field(
        default_factory=TokenizerConfig, description="Tokenizer for `n_tokens`, token budgets and packing."
    )
    extract: ExtractConfig = Field(default_factory=ExtractConfig, description="Stage `extract`.")
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig, description="Stage `normalize`.")
    langid: LangIdConfig = Field(default_factory=LangIdConfig, description="Stage `langid`.")
    filter: FilterConfig = Field(default_factory=FilterConfig, description="Stage `filter`.")
    pii: PiiConfig = Field(default_factory=PiiConfig, description="Stage `pii`.")
    review: ReviewConfig = Field(default_factory=ReviewConfig, description="Stage `review` (human review decisions).")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Stage `dedup`.")
    decontaminate: DecontaminateConfig = Field(
        default_factory=DecontaminateConfig, description="Stage `decontaminate`."
    )
    score: ScoreConfig = Field(default_factory=ScoreConfig, description="Stage `score`.")
    tag: TagConfig = Field(default_factory=TagConfig, description="Stage `tag`.")
    select: SelectConfig = Field(default_factory=SelectConfig, description="Stage `select`.")
    mix: MixConfig = Field(default_factory=MixConfig, description="Stage `mix`.")
    inject: InjectConfig = Field(
        default_factory=InjectConfig, description="Stage `inject` (Copyright Traps; runs after `inject.after`)."
    )
    order: OrderConfig = Field(default_factory=OrderConfig, description="Stage `order`.")
    pack: PackConfig = Field(default_factory=PackConfig, description="Stage `pack`.")

    @model_validator(mode="before")
    @classmethod
    def _migrate_order_packing(cls, data: Any) -> Any:
        # winnow < 0.2 nested packing in the order stage as `order.packing`; it is the `pack` stage now.
        if not isinstance(data, dict) or not isinstance(data.get("order"), dict) or "packing" not in data["order"]:
            return data
        if "pack" in data:
            raise ValueError("both `order.packing` (deprecated) and `pack` are set; keep only `pack`")
        warnings.warn(
            "config key `order.packing` is deprecated: it is the top-level `pack` section now (migrated for this run)",
            FutureWarning,
            stacklevel=2,
        )
        order = dict(data["order"])
        packing = order.pop("packing")
        return {**data, "order": order, "pack": packing}

    @model_validator(mode="after")
    def _pack_follows_order(self) -> WinnowConfig:
        # Unset, `pack` runs whenever `order` does (packing used to be part of `order`); mode none: never.
        if self.pack.enabled is None or self.pack.mode == "none":
            self.pack.enabled = self.order.enabled and self.pack.mode != "none"
        return self

    @model_validator(mode="after")
    def _review_follows_decisions(self) -> WinnowConfig:
        # Unset, `review` runs whenever there is a decisions sheet to apply.
        if self.review.enabled is None:
            self.review.enabled = self.review.decisions is not None
        return self

    @model_validator(mode="after")
    def _one_source_of_repeats(self) -> WinnowConfig:
        # Both stages write `epoch`; mix would see select's repeats as new documents and could
        # break its repetition cap, so only one of them may repeat documents in a run.
        if self.select.enabled and self.select.upsample and self.mix.enabled:
            raise ValueError("select.upsample and mix repeat documents independently; enable only one of them")
        if self.pack.enabled and self.pack.mode == "dd" and self.mix.enabled and self.mix.schedule:
            raise ValueError(
                "pack.mode `dd` does not separate the phases of mix.schedule yet; use `concat` "
                "(contexts never cross a phase) or run each phase's shard set through DD separately"
            )
        ingenious = self.select.enabled and self.select.rule == "ingenious"
        if ingenious and self.mix.enabled:
            raise ValueError(
                "select.rule `ingenious` writes its rounds as phases and repeats documents across them; "
                "mix would treat the repeats as new documents: disable mix"
            )
        if ingenious and self.pack.enabled and self.pack.mode == "dd":
            raise ValueError("pack.mode `dd` does not separate INGENIOUS rounds (phases) yet; use `concat`")
        return self

    @model_validator(mode="after")
    def _soft_labels_have_contexts(self) -> WinnowConfig:
        # Soft labels belong to the exact contexts a trainer reads: those of the token output.
        if self.output.soft_labels.enabled and not (
            self.output.tokens.formats and self.pack.enabled and self.pack.mode == "concat"
        ):
            raise ValueError(
                "output.soft_labels labels the packed contexts of the token output: it needs output.tokens.formats "
                "and the pack stage in mode `concat`"
            )
        return self

    def content_hash(self) -> str:
        """Hash of the settings that affect output bytes (runner settings excluded)."""
        payload = self.model_dump(mode="json", exclude={"runner"})
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the bad key's YAML path."""


def _yaml_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<root>"


def format_validation_error(error: ValidationError, origin: str) -> str:
    lines = [f"invalid config {origin}:"]
    for problem in error.errors():
        path = _yaml_path(problem["loc"])
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def parse_config(data: Any, origin: str = "<dict>", base_dir: Path | None = None) -> WinnowConfig:
    """Validate a parsed YAML/JSON mapping; relative input paths resolve against ``base_dir``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {origin}: the top level must be a mapping, got {type(data).__name__}")
    try:
        # Sections that name files (mixture tables, review decisions) resolve and check them against base_dir.
        config = WinnowConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, origin)) from None
    if base_dir is not None:
        for spec in config.inputs:
            spec.paths = [_resolve(path, base_dir) for path in spec.paths]
    return config


def _resolve(path: str, base_dir: Path) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return str((base_dir / path).resolve())


def load_config(path: str | Path) -> WinnowConfig:
    """Read and validate a YAML config file, or a bundled preset by name (``winnow presets``).

    A preset's relative paths (its inputs, files it names) resolve against the working directory,
    where the user's data is, not against the package folder the preset ships in.
    """
    path = Path(path)
    if not path.exists():
        preset = preset_path(str(path))
        if preset is None:
            known = ", ".join(list_presets()) or "none"
            raise ConfigError(f"config file not found: {path} (bundled presets: {known})")
        return _load_yaml(preset, origin=f"preset {preset.stem}", base_dir=Path.cwd())
    return _load_yaml(path, origin=str(path), base_dir=path.resolve().parent)


def _load_yaml(path: Path, origin: str, base_dir: Path) -> WinnowConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"config {origin} is not valid YAML: {error}") from None
    return parse_config(data, origin=origin, base_dir=base_dir)


def presets_dir() -> Path:
    """Bundled recipes: ``winnow/data/presets/<name>.yaml``."""
    return Path(__file__).resolve().parent / "data" / "presets"


def preset_path(name: str) -> Path | None:
    """The bundled preset called ``name`` (a bare name, no folder or suffix), if there is one."""
    if not name or "/" in name or "\\" in name or name.endswith((".yaml", ".yml")):
        return None
    candidate = presets_dir() / f"{name}.yaml"
    return candidate if candidate.is_file() else None


def list_presets() -> dict[str, str]:
    """{name: first comment line} of every bundled preset."""
    found = {}
    for path in sorted(presets_dir().glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        found[path.stem] = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
    return found


def default_config_path() -> Path:
    """The bundled default config, which runs the whole pipeline on the bundled sample."""
    return Path(__file__).resolve().parent / "data" / "default.yaml"


def config_to_yaml(config: WinnowConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
