"""Typed, frozen job configs (torch-free).

Every stage reads one resolved YAML file (written by the workflow) into a frozen
dataclass. Unknown keys and wrong types are errors that name the offending key path,
e.g. ``train.epochs: expected int, got 'ten'``.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the key path."""


class Schema(dict):
    """A config field's JSON-schema constraints (``minimum``, ``enum``, ``items``, ...),
    written once beside the field as ``Annotated[int, Schema(minimum=1)]``: the workflow's
    config schema (:func:`json_schema`) and the job-config check (:func:`check_ranges`) both
    read them."""


def _ge(n: float) -> Schema:
    return Schema(minimum=n)


def one_of(*values: str) -> Schema:
    return Schema(enum=list(values))


_POS = Schema(exclusiveMinimum=0)
_UNIT = Schema(minimum=0, maximum=1)
_BETAS = Schema(items={"minimum": 0, "exclusiveMaximum": 1})
# the constrained types of the fields below
Count = Annotated[int, _ge(1)]  # >= 1
Index = Annotated[int, _ge(0)]  # >= 0
NonNeg = Annotated[float, _ge(0)]
Positive = Annotated[float, _POS]
Unit = Annotated[float, _UNIT]  # in [0, 1]
Share = Annotated[float, Schema(exclusiveMinimum=0, maximum=1)]  # in (0, 1]
Betas = Annotated[tuple[float, float], _BETAS]


def per_gpu_batch(batch_size: int, gpus: int, nodes: int, accum_steps: int,
                  section: str) -> int:
    """Images one process reads per micro-step: ``batch_size`` (the effective batch) over
    max(gpus, 1) x nodes x accum_steps; a ConfigError naming ``section``'s keys when it
    does not divide."""
    parts = max(gpus, 1) * nodes * accum_steps
    if batch_size % parts:
        raise ConfigError(
            f"{section}.batch_size: {batch_size} does not divide into max({section}.gpus, 1) "
            f"x {section}.nodes x {section}.accum_steps = {max(gpus, 1)} x {nodes} x "
            f"{accum_steps} = {parts} equal micro-batches")
    return batch_size // parts


def check_world(world: int, gpus: int, nodes: int, section: str) -> None:
    """A stage's world size (torchrun's WORLD_SIZE) against its config's layout: with
    gpus >= 1 the launcher must have started gpus x nodes processes."""
    if gpus >= 1 and world != gpus * nodes:
        raise ConfigError(f"{section}.gpus x {section}.nodes = {gpus} x {nodes} = "
                          f"{gpus * nodes} processes, but this job runs {world} (WORLD_SIZE)")


@dataclass(frozen=True)
class VariantConfig:
    """The two PixMIM knobs (PixMIM is a variant, not a method).

    ``radius`` and ``adaptive_range`` are in the paper's unit, frequency bins at
    ``reference_size`` px; :meth:`model_kwargs` scales them to the job's input size.
    """

    # pixel | lowpass | highpass (Table 22) | adaptive (Table 21)
    target: Annotated[str, one_of("pixel", "lowpass", "highpass", "adaptive")] = "pixel"
    radius: Positive = 40.0  # filter radius in bins at reference_size; r=40 at 224: PixMIM Sec. 4.1
    # official (released code) | centered (paper Eq. 2-4)
    lowpass_mode: Annotated[str, one_of("official", "centered")] = "official"
    # learnable radius range: Table 21
    adaptive_range: Annotated[tuple[float, float], Schema(items=_POS)] = (20.0, 60.0)
    # rrc (MAE) | src (PixMIM Sec. 4.2) | cc | bg | resize (Table 5b)
    crop: Annotated[str, one_of("rrc", "src", "cc", "bg", "resize")] = "rrc"
    # the input size the radius is given at (the paper's, 224 px)
    reference_size: Annotated[int, _ge(16)] = 224
    scale_with_size: bool = True  # scale radius and range by img_size / reference_size

    def __post_init__(self) -> None:
        check_ranges(self, "variant")

    def model_kwargs(self, img_size: int) -> dict[str, Any]:
        """The model's target keywords at input size ``img_size``: the radius (and range)
        scaled to keep the paper's relative bandwidth (40 at 224 -> 11.4286 at 64)."""
        scale = img_size / self.reference_size if self.scale_with_size else 1.0
        return {"target": self.target, "radius": round(self.radius * scale, 4),
                "lowpass_mode": self.lowpass_mode,
                "adaptive_range": [round(r * scale, 4) for r in self.adaptive_range]}


@dataclass(frozen=True)
class DataConfig:
    root: str = "results/data/synth"  # ImageFolder root holding train/ and val/
    masks_root: str | None = None  # foreground masks (masks_root/<split>/<wnid>/<name>.png)
    img_size: int = 224  # network input size in px
    num_classes: int = 1000  # label space: ImageNet-1k indices
    bad_images: str = "fail"  # unreadable / truncated image: fail (name it) | skip (and count)
    synth_index_map: bool = True  # map wnid folder names to ImageNet-1k indices via timm's list


@dataclass(frozen=True)
class EvalConfig:
    """Robustness and shape-bias evaluation sets (real-dataset folder layouts)."""

    imagenet_c: str | None = None  # <root>/<corruption>/<severity 1-5>/<wnid>/*
    imagenet_a: str | None = None  # <root>/<wnid>/* (200-class subset)
    imagenet_r: str | None = None  # <root>/<wnid>/* (200-class subset)
    imagenet_sketch: str | None = None  # <root>/<wnid>/* (1000 classes)
    cue_conflict: str | None = None  # <root>/<shape>/<shape><i>-<texture><j>.png (Geirhos)
    batch_size: int = 64
    num_workers: int = 0
    max_batches: int = 0  # batches read per set (0: all; a dress rehearsal's cap)


@dataclass(frozen=True)
class TrainConfig:
    """The shared training loop's knobs (pretrain, linear probe)."""

    epochs: Count = 1
    warmup_epochs: NonNeg = 0.0
    batch_size: Count = 64  # per optimizer step, all processes and accumulation together
    accum_steps: Count = 1
    # The job's layout: `nodes` x `gpus` processes (one per GPU; gpus 0: one process on
    # `device`), started by the workflow's launcher (pixmim.workflow.launch); each process
    # reads batch_size / (max(gpus, 1) x nodes x accum_steps) images per micro-step.
    nodes: Count = 1
    gpus: Index = 0
    base_lr: Positive = 1.5e-4  # lr = base_lr * batch_size / 256: MAE Sec. A.1
    min_lr: NonNeg = 0.0
    weight_decay: NonNeg = 0.05
    betas: Betas = (0.9, 0.95)  # MAE pretraining AdamW betas: MAE Table 8
    momentum: Unit = 0.9  # LARS momentum (linear probe): MAE Table 9
    optimizer: Annotated[str, one_of("adamw", "lars")] = "adamw"  # adamw | lars
    # lr after the warm-up: half-cosine to min_lr (MAE; PixMIM Tables 7-11)
    schedule: Annotated[str, one_of("cosine")] = "cosine"
    seed: Index = 0
    num_workers: Index = 0
    # cpu | cuda | cuda:N | mps
    device: Annotated[str, Schema(pattern="^(cpu|cuda(:[0-9]+)?|mps)$")] = "cpu"
    # fp32 | bf16 (autocast) | fp16 (autocast + grad scaler)
    precision: Annotated[str, one_of("fp32", "bf16", "fp16")] = "fp32"
    compile: bool = False  # torch.compile the model's training forward
    clip_grad: Annotated[float | None, _POS] = None
    log_every: Count = 10  # optimizer steps between step-level metrics and host syncs
    eval_every: Count = 1  # epochs between validations (linear probe)
    # linear probe: 0 = frozen features of a fresh augmentation every epoch (MAE's protocol);
    # K = features of K augmented views computed once, epoch e reading view e mod K
    feature_views: Index = 0
    ckpt_every_steps: Index = 0  # resume checkpoint every N optimizer steps (0: off)
    ckpt_every_minutes: NonNeg = 10.0  # ... and/or every N minutes of wall time (0: off)
    # Step caps of a dress rehearsal (config/rehearsal.yaml), 0: none. With the schedule
    # (epochs, warm-up, lr) kept, the loop stops after max_steps optimizer steps, as if that
    # epoch were the last; each validation reads at most max_eval_batches batches.
    max_steps: Index = 0
    max_eval_batches: Index = 0

    def __post_init__(self) -> None:
        """Ranges (the workflow schema checks them too; this covers a job config given to
        ``python -m pixmim`` directly)."""
        check_ranges(self, "train")
        per_gpu_batch(self.batch_size, self.gpus, self.nodes, self.accum_steps, "train")


@dataclass(frozen=True)
class MonitorConfig:
    """What a pretraining watches while it learns (``pretrain.monitor`` in the workflow
    config; :mod:`pixmim.stages.monitor`): a k-NN top-1 of the encoder's probe features and
    reconstructions of fixed validation images, each every N epochs and at the last."""

    knn_every: Index = 0  # epochs between k-NN evaluations, and the last epoch (0: off)
    knn_bank: Count = 512  # labelled training images whose features are the bank
    knn_queries: Count = 512  # validation images classified against it
    knn_k: Count = 20  # neighbours: DINO eval_knn.py (Caron et al. 2021, Sec. 4.1)
    knn_temperature: Positive = 0.07  # vote weight exp(sim / T): DINO eval_knn.py
    recon_every: Index = 0  # epochs between reconstruction figures, and the last (0: off)
    recon_images: Count = 4  # validation images per figure (its rows)
    seed: Index = 0  # draws the images of both (the same for every run and seed)

    def __post_init__(self) -> None:
        check_ranges(self, "monitor")


@dataclass(frozen=True)
class FinetuneConfig:
    """End-to-end fine-tuning knobs (PixMIM Table 9 / MAE Table 11); timm implementations."""

    layer_decay: Share = 0.75  # layer-wise lr decay (paper 0.75; released configs 0.65)
    drop_path: Unit = 0.1  # stochastic depth rate
    global_pool: Annotated[str, one_of("avg", "token")] = "avg"  # avg (MAE fine-tuning) | token
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"  # RandAugment (9, 0.5)
    mixup: NonNeg = 0.8
    cutmix: NonNeg = 1.0
    smoothing: Unit = 0.1  # label smoothing
    reprob: Unit = 0.25  # random erasing probability
    fraction: Share = 1.0  # class-balanced share of the training set (few-shot: 0.01, 0.1)
    subset_seed: Index = 0  # seed of the few-shot subset draw

    def __post_init__(self) -> None:
        check_ranges(self, "finetune")


@dataclass(frozen=True)
class DenseConfig:
    """ADE20K segmentation (UperNet) / COCO detection (Mask R-CNN) through OpenMMLab.

    Defaults are the paper's segmentation recipe (PixMIM Table 12); the workflow resolves
    the paper / released recipes and the detection values (Tables 14/15) into these keys.
    """

    root: str | None = None  # ADE20K (ADEChallengeData2016) or COCO root; embedded scenes too
    # paper | released (the recipe the keys below came from)
    recipe: Annotated[str, one_of("paper", "released")] = "paper"
    iters: Count = 160000  # training iterations (paper seg: 160k at batch 16)
    val_interval: Count = 16000  # iterations between validations (and checkpoints)
    batch_size: Count = 16  # images per iteration, all GPUs together
    accum_steps: Count = 1  # micro-batches per iteration (mmengine's accumulative_counts)
    nodes: Count = 1  # the job's layout, as TrainConfig's
    gpus: Index = 0
    lr: Positive = 2e-4  # AdamW lr (paper seg 2e-4, ConvMAE 3e-4; det 8e-5 / 1e-4)
    layer_decay: Share = 0.75  # layer-wise lr decay (paper 0.75; ConvMAE det 0.85)
    weight_decay: NonNeg = 0.05  # AdamW weight decay (seg 0.05, det 0.1)
    optimizer: Annotated[str, one_of("adamw")] = "adamw"  # AdamW (Tables 12-15)
    betas: Betas = (0.9, 0.999)
    warmup_iters: Index = 1500  # linear warm-up (paper seg: 1500)
    # cosine (paper) | poly (released seg) | step (released det)
    schedule: Annotated[str, one_of("cosine", "poly", "step")] = "cosine"
    drop_path: Unit = 0.1  # stochastic depth (paper: 0.1)
    # seg: training crop = backbone size; det: input size (LSJ 1024)
    crop_size: Annotated[int, _ge(16)] = 512
    # seg resize scale (long, short) before the crop
    scale: Annotated[tuple[int, int], Schema(items=_ge(16))] = (2048, 512)
    # random rescale (seg 0.5-2; det LSJ 0.1-2)
    ratio_range: Annotated[tuple[float, float], Schema(items=_POS)] = (0.5, 2.0)
    # runs per job, seeded train.seed * runs + i; the job reports their mean (paper Sec. 5:
    # segmentation averaged over two runs)
    runs: Count = 1
    window_size: Index = 14  # det: ViTDet attention window in tokens (0: global everywhere)
    score_thr: Unit = 0.05  # det: minimum class score kept at test time (mmdet/ViTDet 0.05)
    # det: RPN proposals kept per image, training and test (mmdet's Mask R-CNN: 1000)
    proposals: Count = 1000
    # det: RoIs sampled per training image for the box and mask heads (mmdet: 512, 1/4 positive)
    rois_per_image: Count = 512
    # seg UPerHead channels / det FPN channels (256 at paper scale)
    head_channels: Annotated[int, _ge(8)] = 512
    num_workers: Index = 2
    # A dress rehearsal's caps (0: none): training stops after max_iters iterations with
    # the schedule of `iters` kept; validation and test read at most max_eval_images images.
    max_iters: Index = 0
    max_eval_images: Index = 0

    def __post_init__(self) -> None:
        check_ranges(self, "dense")
        per_gpu_batch(self.batch_size, self.gpus, self.nodes, self.accum_steps, "dense")

    def seeds(self, seed: int) -> tuple[int, ...]:
        """The seeds of the ``runs`` runs of the job of run seed ``seed`` (disjoint across
        run seeds)."""
        return tuple(seed * self.runs + i for i in range(self.runs))


@dataclass(frozen=True)
class ReleasedConfig:
    """A released checkpoint that a pretraining job imports instead of training (the config
    key ``checkpoints``; README "Released checkpoints"). ``name`` empty: the job trains."""

    name: str = ""
    file: str = ""  # the fetched file (the fetch_checkpoint rule's output)
    source: str = ""  # where it was fetched from (a path or URL)
    checksum: str | None = None  # as published: sha256:<hex> or md5:<hex prefix>
    format: str = ""  # its layout: mae | openmmlab | timm | ... (the family's formats)
    kind: str = "pretrained"
    published: dict[str, Any] = field(default_factory=dict)  # table column -> authors' number


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str = "sqlite:///results/mlflow/mlflow.db"  # MLFLOW_TRACKING_URI overrides
    experiment: str = "pixmim-bench"
    enabled: bool = True


@dataclass(frozen=True)
class JobConfig:
    """One job of one stage for one experiment."""

    experiment: str  # experiment id: {method}-{target}{radius}-{crop}_{arch}_{epochs}e
    stage: str
    method: str = "mae"
    arch: str = "vit_cpu_patch8_64"
    # pretraining (and the frequency analysis) only: downstream stages read the variant and
    # the masking from the checkpoint's metadata
    mask_ratio: float = 0.75  # MAE Sec. 4 (75% masking)
    norm_pix_loss: bool = True  # MAE Sec. A.1, per-patch normalised target
    variant: VariantConfig = field(default_factory=VariantConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    pretrain_dir: str | None = None  # downstream stages: the pretraining output folder
    finetune_dir: str | None = None  # robustness / shape bias: the fine-tune output folder
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    tags: dict[str, str] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()  # modules declaring this job's method or stage (non built-in)
    options: dict[str, Any] = field(default_factory=dict)  # a plugin stage's own config section
    released: ReleasedConfig = field(default_factory=ReleasedConfig)  # pretraining: imported
    monitor: MonitorConfig = field(default_factory=MonitorConfig)  # pretraining only


_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _field_schema(tp: Any) -> dict[str, Any]:
    """JSON schema of one annotation (``Annotated`` constraints merged in)."""
    extra: dict[str, Any] = {}
    if typing.get_origin(tp) is Annotated:
        tp, *marks = typing.get_args(tp)
        for m in marks:
            extra.update(m)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        out = _field_schema(inner[0])
        out["type"] = [out["type"], "null"]
    elif origin is tuple:
        item = _field_schema(args[0])
        out = {"type": "array", "items": {**item, **extra.pop("items", {})}}
        if not (len(args) == 2 and args[1] is Ellipsis):
            out.update(minItems=len(args), maxItems=len(args))
    else:
        out = {"type": _JSON_TYPES[tp]}
    out.update(extra)
    return out


def json_schema(cls: type, exclude: tuple[str, ...] = (), required: tuple[str, ...] = (),
                only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The JSON schema of a config dataclass's fields (types, ranges, enums), for the
    workflow config's sections: one source for every range and enum."""
    hints = typing.get_type_hints(cls, include_extras=True)
    props = {f.name: _field_schema(hints[f.name]) for f in dataclasses.fields(cls)
             if f.name not in exclude and (only is None or f.name in only)}
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = list(required)
    return out


@functools.cache
def _validator(cls: type) -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(json_schema(cls))


def check_ranges(cfg: Any, section: str) -> None:
    """Check a config dataclass's values against its fields' ``Schema`` constraints."""
    errors = _validator(type(cfg)).iter_errors(to_dict(cfg))
    err = next(iter(sorted(errors, key=lambda e: list(e.absolute_path))), None)
    if err is not None:
        key = ".".join(str(p) for p in err.absolute_path)
        raise ConfigError(f"{section}.{key}: {err.message}")


def _check(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it; raise naming ``path``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(arg, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[int, ...]
            if not isinstance(value, list | tuple):
                raise ConfigError(f"{path}: expected a list, got {value!r}")
            return tuple(_check(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_check(a, v, f"{path}[{i}]")
                     for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        if typing.get_args(tp)[1] is str:
            return {str(k): str(v) for k, v in value.items()}
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{path}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build the frozen dataclass ``cls`` from a nested mapping, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{where}: unknown key (allowed: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        if f.name in data:
            kwargs[f.name] = _check(hints[f.name], data[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists) of a config dataclass, ready for YAML."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def load_job_config(path: str | Path) -> JobConfig:
    """Read and validate a resolved job config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with path.open() as f:
        data = yaml.safe_load(f)
    try:
        return from_dict(JobConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
