"""The one place that reads ``params.yaml``: a typed, validated, immutable parameter tree.

Unknown keys, wrong types and out-of-range values raise :class:`~pipeline.errors.ConfigError`
naming the file, the dotted key, the value given and what is allowed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")
CLASS_NAMES = ("normal", "benign", "malignant")
AUGMENTATIONS = (
    "grid_distortion",
    "rotate",
    "optical_distortion",
    "horizontal_flip",
    "vertical_flip",
    "elastic",
)
DEFAULT_BALANCERS = ("equal", "uncertainty", "gradnorm", "dwa", "atdwa", "stl", "mtcool")
"""``train.balancers`` when the file does not say: every balancer, the STL baseline and MT-CooL. The methods that exist
are the plug-ins of :mod:`pipeline.balancers`; their names and settings are checked there."""
TARGET_OF_KIND = {"binary_segmentation": "mask", "multiclass_segmentation": "tissue", "classification": "label"}
"""The array each kind of task learns: the binary mask, the tissue index mask or the class label."""
WOUND_LABEL = "wound"
"""The one class label of every record of a wound dataset."""
LAYOUTS_OF_WORKLOAD = {"busi": ("busi",), "wound": ("dfutissue", "fuseg")}
"""Dataset folder layouts each workload reads (the first is the default and the synthetic data's layout)."""
LAYOUT_TARGETS = {"busi": ("mask", "label"), "dfutissue": ("mask", "tissue"), "fuseg": ("mask",)}
"""The target arrays each layout provides: lesion or wound masks, tissue index masks, class labels (how a layout
is read: :mod:`pipeline.data.layouts`)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class MethodSettings(_Strict):
    """The settings of one plug-in method, ``balancer.<name>`` of ``params.yaml``; each balancer defines its own
    beside its code (:mod:`pipeline.balancers`), a method without settings uses this class as it is."""

    @classmethod
    def of(cls, params: Params, name: str) -> Self:
        """``params.balancer.<name>`` validated (absent: every default); a bad value raises :class:`ConfigError`
        naming the params file and the dotted key."""
        return cls.validated(params.balancer.get(name) or {}, params.source, ("balancer", name))

    @classmethod
    def validated(cls, values: Mapping[str, Any], source: str, where: tuple[str, ...]) -> Self:
        """``values`` validated; a bad one raises :class:`ConfigError` naming ``source`` and the key under
        ``where`` (e.g. ``("tune", "grid")``)."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_format_errors(source, exc, where)) from None


class SyntheticParams(_Strict):
    """Counts and size of the built-in BUSI-like synthetic dataset."""

    n_normal: int = Field(20, ge=0, le=100_000)
    n_benign: int = Field(60, ge=0, le=100_000)
    n_malignant: int = Field(40, ge=0, le=100_000)
    size: int = Field(128, ge=32, le=2048, description="side length of generated images (px)")


class WoundSyntheticParams(_Strict):
    """Counts and size of the built-in DFUTissue-layout synthetic wound set (:mod:`pipeline.data.wound_synthetic`)."""

    n_trainval: int = Field(96, ge=0, le=100_000, description="images of the TrainVal subset (trained, k-folded)")
    n_test: int = Field(24, ge=0, le=100_000, description="images of the Test subset (held out)")
    size: int = Field(128, ge=32, le=2048, description="side length of generated images (px)")


Channel = Annotated[int, Field(ge=0, le=255)]
"""One 8-bit colour channel."""


class TissueParams(_Strict):
    """One wound tissue type: index ``k`` of ``data.tissues`` (0-based) is mask value ``k + 1``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    colour: tuple[Channel, Channel, Channel] = Field(description="RGB of the tissue in figures (and synthetic images)")


DEFAULT_TISSUES = (
    TissueParams(name="slough", colour=(222, 196, 96)),
    TissueParams(name="granulation", colour=(180, 32, 44)),
    TissueParams(name="callus", colour=(236, 206, 196)),
    TissueParams(name="necrosis", colour=(48, 30, 24)),
)
"""DFUTissue's index order (1 fibrin/slough, 2 granulation, 3 callus/epithelium), then necrosis/eschar."""


class DataParams(_Strict):
    source: str = Field(
        "synthetic",
        description="'synthetic', a local folder, a .zip/.tar.gz archive or s3://bucket/prefix",
    )
    layout: str = Field("busi", description="a dataset folder layout: a key of LAYOUT_TARGETS")
    classes: tuple[Literal["normal", "benign", "malignant"], ...] = ("benign", "malignant")
    synthetic: SyntheticParams = SyntheticParams()
    synthetic_wound: WoundSyntheticParams = WoundSyntheticParams()
    tissues: tuple[TissueParams, ...] = Field(DEFAULT_TISSUES, description="wound tissue types, mask values 1..K")
    image_size: int = Field(64, ge=32, le=1024, description="side length after preprocess (px)")
    channels: Literal[1, 3] = 1
    workers: int = Field(2, ge=1, le=256, description="processes for preprocess/augment")

    @field_validator("layout")
    @classmethod
    def _known_layout(cls, v: str) -> str:
        if v not in LAYOUT_TARGETS:
            raise ValueError(f"must be one of {list(LAYOUT_TARGETS)}")
        return v

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"must be a multiple of 32 (the encoder downsamples 5 times), got {v}")
        return v

    @field_validator("tissues")
    @classmethod
    def _distinct_tissues(cls, v: tuple[TissueParams, ...]) -> tuple[TissueParams, ...]:
        names = [t.name for t in v]
        if not names or len(set(names)) != len(names) or "background" in names:
            raise ValueError(
                f"must name at least one tissue, distinct and not 'background' (mask value 0), got {names}"
            )
        return v

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v) or len(v) < 2:
            raise ValueError(f"must list at least two distinct classes of {CLASS_NAMES}, got {list(v)}")
        return tuple(c for c in CLASS_NAMES if c in v)


class SplitParams(_Strict):
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    k_folds: int = Field(2, ge=2, le=20)


class AugmentParams(_Strict):
    """Offline augmentation of the training split; copy ``i`` of an image applies transform ``i mod n``."""

    copies_per_image: int = Field(2, ge=0, le=100)
    transforms: tuple[Literal[AUGMENTATIONS], ...] = AUGMENTATIONS  # type: ignore[valid-type]
    rotate_limit: float = Field(45.0, ge=0.0, le=180.0, description="degrees")

    @field_validator("transforms")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(f"must name at least one of {AUGMENTATIONS}")
        return v


class TaskParams(_Strict):
    """One task: a head of the model, the target array it learns and its loss."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["binary_segmentation", "multiclass_segmentation", "classification"]
    target: Literal["mask", "tissue", "label"]
    num_classes: int | None = Field(
        None, ge=2, description="multiclass tasks; null = background + data.tissues (classification: data.classes)"
    )


class ModelParams(_Strict):
    name: str = Field("ssc_resnet34", description="a network of pipeline.models (checked there)")
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    width: int = Field(
        64,
        ge=8,
        le=256,
        multiple_of=4,
        description="base width of ssc_resnet34 (64 = standard ResNet-34; smaller for CPU runs), top-level channels "
        "of unet (64 = the original U-Net); swin_unetr's feature_size is 3/4 of it in multiples of 12 "
        "(16 -> 12, 64 -> 48); attention_unet ignores it",
    )
    pretrained_encoder: str | None = Field(
        None, description="torchvision-format ResNet-34 state_dict (local path or URI)"
    )

    @model_validator(mode="after")
    def _pretrained_needs_standard_width(self) -> ModelParams:
        if self.pretrained_encoder is not None and self.width != 64:
            raise ValueError(f"pretrained_encoder needs model.width = 64 (ResNet-34 weights), got {self.width}")
        return self


class TrainParams(_Strict):
    balancers: tuple[str, ...] = Field(DEFAULT_BALANCERS, description="methods of pipeline.balancers (checked there)")
    folds: tuple[int, ...] | None = Field(None, description="folds to train; null = all")
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    early_stopping_patience: int = Field(15, ge=1)
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    plateau_patience: int = Field(5, ge=0)
    num_threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = torch default")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto",
        description="mixed precision of the forward pass; auto = bf16 where the hardware has it natively, else off "
        "(see pipeline/runtime/compute_format.py)",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="NHWC weights and images (fastest cuDNN/oneDNN kernels); auto = on when amp runs bf16"
    )
    deterministic: bool = Field(
        False,
        description="CUDA: deterministic algorithms only (no cuDNN autotuning, no TF32); the CPU is deterministic anyway",
    )

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        """YAML 1.1 (PyYAML, DVC) reads an unquoted ``amp: off`` as ``False``: that means ``off``."""
        return "off" if v is False else v

    @field_validator("balancers")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"must list at least one balancer, each once, got {list(v)}")
        return v


class RayParams(_Strict):
    """Where and how wide the Ray Train jobs run."""

    address: str | None = Field(None, description="Ray cluster address; null = $RAY_ADDRESS, else a local Ray")
    num_workers: int = Field(1, ge=1, le=1024, description="Ray Train workers (DDP ranks) per training job")
    cpus_per_worker: int = Field(1, ge=1)
    use_gpu: Literal["auto", "yes", "no"] = "auto"
    max_failures: int = Field(2, ge=-1, description="worker failures tolerated per job (-1 = unlimited)")
    storage_path: str = Field("ray_results", description="Ray Train storage (local folder or s3://)")
    sync_batchnorm: bool = Field(False, description="SyncBatchNorm across GPU workers (CUDA only)")
    collective_timeout_s: int = Field(
        600,
        ge=10,
        description="a collective (all-reduce) that waits longer fails the job (Ray Train's default: 1800 s)",
    )


class TrackingParams(_Strict):
    """MLflow tracking."""

    uri: str | None = Field(None, description="tracking URI; null = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    experiment: str = Field("mtl-pipeline", min_length=1)
    log_models: bool = True
    system_metrics: bool = True
    outage_s: float = Field(
        300.0,
        ge=0.0,
        description="seconds the stages wait out an unreachable tracking server (retrying with back-off) "
        "before failing; per-epoch metrics are kept meanwhile and training goes on",
    )


TUNE_RULES = ("min_std", "min_mean_val_loss", "max_mean_<task>.<metric>")


class TuneSelectionParams(_Strict):
    """How the sweep picks its configuration from the per-(γ, T0, window) table of fold statistics."""

    rule: str = Field("min_std", description=f"one of {TUNE_RULES}")
    metric: str = Field(
        "lesion.dice",
        description="min_std: the figure whose std across folds is minimised (val_loss or <task>.<metric>)",
    )
    tie_tolerance: float = Field(
        1e-3, ge=0.0, description="min_std: stds within this of the lowest tie; the lower mean val loss wins"
    )

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        if v in ("min_std", "min_mean_val_loss") or (v.startswith("max_mean_") and "." in v):
            return v
        raise ValueError(f"must be one of {list(TUNE_RULES)}, e.g. 'max_mean_lesion.dice'")


class AshaParams(_Strict):
    """ASHA early stopping of hopeless trials; a trial's time unit is one trained fold."""

    enabled: bool = False
    grace_period: int = Field(1, ge=1, description="folds every trial trains before it can be stopped")
    reduction_factor: int = Field(2, ge=2)


class TuneParams(_Strict):
    """The Ray Tune grid over the settings of one method; every trial trains every fold of ``train.folds``."""

    balancer: str = Field("atdwa", description="the method swept (a balancer of pipeline.balancers, checked there)")
    grid: dict[str, tuple[int | float, ...]] = Field(
        default_factory=lambda: {"gamma": (0.2, 0.5, 0.8), "t0": (1.0, 2.0), "window": (3,)},
        description="values per setting of balancer.<tune.balancer>; every combination is a trial",
    )
    epochs: int | None = Field(None, ge=1, description="epochs per fold in the sweep; null = train.epochs")
    max_concurrent_trials: int = Field(1, ge=1, description="trials trained at once (each takes one training job)")
    selection: TuneSelectionParams = TuneSelectionParams()
    asha: AshaParams = AshaParams()

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, tuple[int | float, ...]]) -> dict[str, tuple[int | float, ...]]:
        if not v:
            raise ValueError("the grid is empty; give at least one setting and its values")
        for key, values in v.items():
            if not values:
                raise ValueError(f"{key}: no values; give at least one")
            if len(set(values)) != len(values):
                raise ValueError(f"{key}: values must be distinct, got {list(values)}")
        return v


class EvaluateParams(_Strict):
    """The evaluate and report stages: paired tests of every balancer against ``equal``, contour figure."""

    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="significance level of the paired tests")
    holm: bool = Field(True, description="Holm-correct each task's p-values across the balancers compared")
    contour_images: int = Field(4, ge=1, le=16, description="test images in the report's contour figure")


METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
"""``<task>.<metric>``, e.g. ``lesion.dice``: a metric of the evaluation of one task."""


def _metric_names(names: tuple[str, ...]) -> tuple[str, ...]:
    bad = [n for n in names if not METRIC_NAME.match(n)]
    if bad:
        raise ValueError(f"{bad} are not <task>.<metric> names (e.g. lesion.dice, diagnosis.accuracy)")
    return names


class RegistryParams(_Strict):
    """MLflow model registry: what the ``promote`` stage registers, and when it becomes champion.

    ``package``: ``fold`` registers the (balancer, fold) checkpoint with the best ``primary`` score on
    *validation*; ``ensemble`` registers the k fold checkpoints of ``train.folds`` of the balancer with
    the best mean over folds of that score, as one model that averages their probabilities. The
    candidate takes the ``champion`` alias when its ``primary`` score on the test split beats the
    current champion's (each re-evaluated as registered, fold model or ensemble, on the same split) by
    at least ``min_improvement`` and no metric of ``floors`` is below its floor. Metric names are
    ``<task>.<metric>`` of the configured tasks.
    """

    model_name: str = Field("mtl-busi", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    package: Literal["fold", "ensemble"] = "ensemble"
    primary: tuple[str, ...] = ("lesion.dice", "diagnosis.accuracy")
    min_improvement: float = Field(
        0.005, ge=0.0, le=1.0, description="primary score (mean of metrics in 0..1) the candidate must gain"
    )
    floors: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: {"lesion.dice": 0.5, "diagnosis.accuracy": 0.6},
        description="lowest test value allowed per metric",
    )

    @field_validator("primary")
    @classmethod
    def _distinct_metrics(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"must list distinct <task>.<metric> names, at least one, got {list(v)}")
        return _metric_names(v)

    @field_validator("floors")
    @classmethod
    def _floor_names(cls, v: dict[str, float]) -> dict[str, float]:
        _metric_names(tuple(v))
        return v

    def metric_names(self) -> tuple[str, ...]:
        """Every metric the gate reads: the primary ones, then the floored ones."""
        return tuple(dict.fromkeys((*self.primary, *self.floors)))


DEFAULT_TASKS = (
    TaskParams(name="lesion", kind="binary_segmentation", target="mask"),
    TaskParams(name="diagnosis", kind="classification", target="label"),
)


WORKLOAD_DEFAULTS: dict[str, dict[str, Any]] = {
    "busi": {},
    "wound": {
        "data": {"layout": "dfutissue", "channels": 3},
        "tasks": [
            {"name": "wound", "kind": "binary_segmentation", "target": "mask"},
            {"name": "tissue", "kind": "multiclass_segmentation", "target": "tissue"},
        ],
        "model": {"name": "attention_unet"},
        "tune": {"selection": {"metric": "tissue.dice"}},
        "registry": {
            "model_name": "wing-mtl",
            "primary": ["wound.dice", "tissue.dice"],
            "floors": {"wound.dice": 0.5, "tissue.dice": 0.3},
        },
    },
}
"""What ``workload: <name>`` sets where the params file does not say: layout, tasks, model, selection and gate.

``busi`` (breast lesion segmentation + benign/malignant diagnosis) is the field defaults below; ``wound``
is WING-MTL: wound-region and tissue-type segmentation of wound photographs with an Attention U-Net.
"""


WHOLE_VALUES = ("floors", "grid")
"""Mappings that :func:`deep_merge` replaces rather than merges: an override that gives ``registry.floors`` sets
the floors, merging key by key would keep floors of tasks it does not configure; one that gives ``tune.grid``
sets the grid, which may be over another method's settings."""


class Params(_Strict):
    """The whole validated ``params.yaml``."""

    seed: int = Field(42, ge=0)
    workload: Literal["busi", "wound"] = "busi"
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    augment: AugmentParams = AugmentParams()
    tasks: tuple[TaskParams, ...] = DEFAULT_TASKS
    model: ModelParams = ModelParams()
    balancer: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="each method's settings by name, validated by the method (MethodSettings)"
    )
    train: TrainParams = TrainParams()
    ray: RayParams = RayParams()
    tracking: TrackingParams = TrackingParams()
    tune: TuneParams = TuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    registry: RegistryParams = RegistryParams()
    _source: str = PrivateAttr("params")

    @property
    def source(self) -> str:
        """Where these params were read (the file, or the file and overlay), for error messages."""
        return self._source

    @model_validator(mode="before")
    @classmethod
    def _workload_defaults(cls, raw: Any) -> Any:
        """Fill what the file leaves out from :data:`WORKLOAD_DEFAULTS` of its ``workload``."""
        if not isinstance(raw, dict) or raw.get("workload", "busi") not in WORKLOAD_DEFAULTS:
            return raw
        return deep_merge(WORKLOAD_DEFAULTS[raw.get("workload", "busi")], raw)

    @model_validator(mode="after")
    def _check_workload(self) -> Params:
        layouts = LAYOUTS_OF_WORKLOAD[self.workload]
        if self.data.layout not in layouts:
            raise ValueError(f"data.layout = {self.data.layout!r}: workload {self.workload!r} reads {list(layouts)}")
        provided = LAYOUT_TARGETS[self.data.layout]
        for t in self.tasks:
            if t.target not in provided:
                raise ValueError(
                    f"tasks.{t.name}: data.layout {self.data.layout!r} has no {t.target!r} targets "
                    f"(it provides {list(provided)})"
                )
        return self

    @model_validator(mode="after")
    def _check_tasks(self) -> Params:
        names = [t.name for t in self.tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"tasks: names must be distinct and at least one task given, got {names}")
        for t in self.tasks:
            wanted = TARGET_OF_KIND[t.kind]
            if t.target != wanted:
                raise ValueError(f"tasks.{t.name}: kind {t.kind!r} needs target {wanted!r}, got {t.target!r}")
            tissue_classes = len(self.data.tissues) + 1
            if t.kind == "multiclass_segmentation" and t.num_classes not in (None, tissue_classes):
                raise ValueError(
                    f"tasks.{t.name}: num_classes = {t.num_classes}, but background + data.tissues "
                    f"{[x.name for x in self.data.tissues]} are {tissue_classes} classes"
                )
        if self.train.folds is not None:
            bad = [f for f in self.train.folds if not 0 <= f < self.split.k_folds]
            if bad:
                raise ValueError(f"train.folds: {bad} outside 0..{self.split.k_folds - 1} (split.k_folds)")
        selection = self.tune.selection
        for field, value in (("rule", selection.rule), ("metric", selection.metric)):
            task = value.removeprefix("max_mean_").split(".", 1)[0]
            if "." in value and task not in names:
                raise ValueError(f"tune.selection.{field} = {value!r}: no task {task!r}; tasks are {names}")
        if selection.metric != "val_loss" and "." not in selection.metric:
            raise ValueError(f"tune.selection.metric = {selection.metric!r}: expected 'val_loss' or '<task>.<metric>'")
        return self

    @model_validator(mode="after")
    def _check_registry_metrics(self) -> Params:
        names = [t.name for t in self.tasks]
        for key, metrics in (("registry.primary", self.registry.primary), ("registry.floors", self.registry.floors)):
            unknown = [m for m in metrics if m.split(".", 1)[0] not in names]
            if unknown:
                raise ValueError(f"{key}: {unknown} name tasks that are not configured; tasks are {names}")
        return self

    @property
    def record_classes(self) -> tuple[str, ...]:
        """The class labels ingest gives records: ``data.classes`` for BUSI; the wound layouts have no
        classes, so every record is ``wound``."""
        return self.data.classes if "label" in LAYOUT_TARGETS[self.data.layout] else (WOUND_LABEL,)

    @property
    def folds(self) -> tuple[int, ...]:
        """The folds the train stage trains."""
        return self.train.folds if self.train.folds is not None else tuple(range(self.split.k_folds))


def _format_errors(source: str, exc: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (*prefix, *err["loc"])) or "<root>"
        value = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        lines.append(f"{source}: {key}{shown}: {msg}")
    return "; ".join(lines)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in; nested mappings merge (but :data:`WHOLE_VALUES`), other
    values replace."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in WHOLE_VALUES:
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping; a missing file, bad YAML or a non-mapping raises ConfigError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a raw mapping into :class:`Params`; ``source`` names it in error messages."""
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None
    params._source = source
    return params


def load_params(path: Path = DEFAULT_PARAMS) -> Params:
    """Read and validate ``params.yaml``."""
    return parse_params(read_yaml(path), str(path))


def with_overlay(params: Params, path: Path, balancer: str) -> Params:
    """``params`` with the overlay ``overrides.<balancer>`` of the YAML file ``path`` merged in.

    The tune stage writes such a file (``reports/tuned_params.yaml``) so that a balancer's final
    training uses the tuned values; a balancer without an entry trains with ``params`` unchanged.
    """
    overrides = read_yaml(path).get("overrides")
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: expected a mapping 'overrides' of balancer name to params overlay")
    overlay = overrides.get(balancer) or {}
    if not isinstance(overlay, dict):
        raise ConfigError(f"{path}: overrides.{balancer} must be a mapping, got {type(overlay).__name__}")
    return parse_params(deep_merge(params.model_dump(mode="json"), overlay), f"{path} (overrides.{balancer})")
