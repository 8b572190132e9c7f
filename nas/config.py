"""Typed run configuration: YAML -> dataclasses, dotted CLI overrides, validation.

Every check happens here, before any work, and a problem is a one-line
``UserError`` naming the key (and the closest valid key for a typo).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .sampling.architecture import MODES
from .cost.objective import CostConfig
from .data.loader_choice import LOADERS, TRANSFORMS
from .utils.errors import UserError
from .sampling.gumbel import TAU_SCHEDULES
from .sampling.estimators import ESTIMATORS, STRAIGHT_THROUGH
from .layers.gates import GATE_RULES
from .utils.limits import (MAX_ARCH_SAMPLES, MAX_SELECT_POOL, MAX_SELECT_SAMPLES, MAX_SELECT_SWEEPS, MAX_BATCH, MAX_CELLS, MAX_CHANNELS, MAX_GUMBEL_RAO_SAMPLES, MAX_IMAGE_SIZE, MAX_SEED,
                           MAX_SYNTHETIC, MAX_SYNTHETIC_BYTES)
from .utils.yamlio import YAMLRefused, brief, flatten, load_yaml, read_user_yaml

DATASETS = ("digits", "digits_clutter", "digits_clutter_large", "cifar10", "cifar100", "imagefolder", "synthetic")


@dataclass
class DataConfig:
    """Where the images come from and how they are split and batched."""

    dataset: str = "digits"       # digits | digits_clutter | digits_clutter_large | cifar10 | cifar100 | imagefolder | synthetic
    root: str = "data"            # dataset folder (cifar*, imagefolder)
    download: bool = False        # let torchvision fetch CIFAR into root
    split: float = 0.5            # fraction of the training set used for weights; the rest is val
    batch_size: int = 64
    num_workers: int = 0          # DataLoader workers (imagefolder only)
    augment: bool = True          # random crop (+ flip where the dataset allows it)
    cutout: int = 0               # cutout square side in pixels (0: off; DARTS evaluation uses 16)
    image_size: int = 32          # imagefolder resize / synthetic size
    test_split: float = 0.1       # imagefolder without train/ and val/: fraction held out as the test set
    skip_bad_images: bool = False  # imagefolder: leave out unreadable images (counted) instead of refusing them
    synthetic_size: int = 256     # images in the synthetic set
    synthetic_classes: int = 4
    device_resident: bool = True  # keep tensor datasets on the training device (no DataLoader)
    loader: str = "auto"          # imagefolder: auto | memory | stream (auto: stream above 2 GiB decoded; docs/data.md)
    transform: str = "auto"       # imagefolder: auto | fixed | timm (auto: timm's from image_size 128 up)


@dataclass
class ModelConfig:
    """The search space and its supernet."""

    space: str = "nb201"
    mode: str = "gdas"            # gdas | snas | darts
    C: int = 16                   # channels of the first stage
    N: int = 5                    # cells per stage (DARTS: normal cells per stage, 3N + 2 cells in all)
    derivation: str = ""          # how the genotype is derived; "" = the space's default (see README)
    max_skip: int = -1            # derivation cap: skip connections per cell (-1: no cap)
    max_parameter_free: int = -1  # derivation cap: pooling + skip edges per cell (-1: no cap)
    exclude_zero: bool = False    # never derive the space's zero op (declared by its traits; DARTS's convention)
    derive_exclude: list = field(default_factory=list)  # further op names never derived
    edge_normalization: bool = False  # PC-DARTS: learned weights on each node's inputs (darts space)
    gdas_gate: str = ""           # GDAS logit gradient: all_ops | sampled_op | "" (the space's)
    bn_layout: str = "official"   # supernet BNs: official (as the papers' code) | batch_stats (eval with batch stats)


@dataclass
class SearchConfig:
    """The bilevel search loop (GDAS defaults)."""

    epochs: int = 250
    warmup_epochs: int = 0        # epochs of weight steps only
    bilevel: bool = True          # False: SNAS single level (weights and logits from the same batch)
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    grad_clip: float = 5.0        # max grad norm of the weights; 0 disables
    arch_lr: float = 3e-4
    arch_betas: list = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    arch_grad_clip: float = 0.0   # max grad norm of the logits; 0 disables
    arch_samples: int = 1         # architectures per arch step, each on the whole arch batch (M passes)
    aux_skip: bool = False        # DARTS-: skip path (identity / factorized reduce) on each edge, beta 1 -> 0
    sdarts_epsilon: float = 0.0   # SDARTS-RS: final radius of the weight step's noise (0: off; 0.3 published)
    tau_schedule: str = "linear"  # linear | exponential | cosine | constant
    tau_max: float = 10.0
    tau_min: float = 0.1
    estimator: str = "straight_through"  # logit gradient of a gdas sample: straight_through | gumbel_rao | reinmax
    gumbel_rao_samples: int = 10  # gumbel_rao: conditional Gumbel draws K averaged per sample (1: straight-through)
    eval_every: int = 1           # evaluate the derived genotype on val every K epochs (0: only at the end)
    checkpoint_every: int = 0     # also checkpoint every K steps inside an epoch (0: at epoch ends only)
    on_nonfinite: str = "stop"    # stop | skip: what a non-finite loss or gradient does
    progress: bool = True         # progress bar when stderr is a terminal
    amp: bool = False             # bf16 autocast for the weight step's forward on CUDA (arch step stays fp32)
    channels_last: bool = False   # NHWC activations and weights (often faster convolutions)
    tensorboard: bool = False     # also log to RUN_DIR/tensorboard (needs the tensorboard package)
    report: bool = True           # write the PNG report (RUN_DIR/report) at the end; needs matplotlib
    settle_probability: float = 0.5    # an edge settles with top probability >= this (nas/settling.py)
    settle_epochs_fraction: float = 0.25  # ... and its derived op unchanged for this fraction of the epochs so far
    shrink_every: int = 0         # progressive shrinking: drop each edge's least probable op every K epochs (0: off)
    shrink_to: int = 1            # ... until this many derivable ops remain per edge
    shrink_start: int = 0         # ... the first drop ends epoch shrink_start + shrink_every
    shrink_by: str = "logits"     # ... the op dropped: least probable (logits) | lowest marginal accuracy (op_marginals)
    sample_excluded: bool = True  # False: ops never derived (model.exclude_zero, derive_exclude) are never sampled
    select: str = "logits"        # the final cell: logits (derive them) | op_marginals (supernet accuracy per op)
                                  # | local_search (op_marginals' cell, then coordinate ascent on whole cells)
                                  # | proxy_top (the supernet's best of the cells a zero-cost proxy ranks highest)
    select_samples: int = 6       # op_marginals, local_search: architectures drawn per (edge, op)
    select_sweeps: int = 2        # local_search: passes over the edges at most
    select_proxy: str = "synflow" # proxy_top: the data-free zero-cost proxy (synflow | params; nas/engine/zero_cost.py)
    select_pool: int = 4096       # proxy_top: cells it scores (every derivable cell when there are at most this many)
    select_top: int = 64          # proxy_top: of those, the proxy's best that the supernet judges
    nb201_benchmark: str = ""     # NATS-Bench topology file/dir: look up each epoch's derived cell (nb201; "": off)


SELECTIONS = ("logits", "op_marginals", "local_search", "proxy_top")  # search.select: how the final cell is chosen (nas/engine/selection.py)
SELECT_PROXIES = ("synflow", "params")  # search.select_proxy: data-free proxies (nas/engine/zero_cost.py DATA_FREE)
SHRINK_MEASURES = ("logits", "op_marginals")  # search.shrink_by: which op an edge drops (nas/sampling/shrinking.py)


@dataclass
class TrainConfig:
    """Retraining a discrete network from scratch (``train_final.py``; defaults: NAS-Bench-201's protocol)."""

    epochs: int = 200
    lr: float = 0.1
    lr_min: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    grad_clip: float = 0.0        # max grad norm; 0 disables
    label_smoothing: float = 0.0
    auxiliary_weight: float = 0.0  # DARTS: 0.4 (adds the auxiliary head); 0 disables
    drop_path_prob: float = 0.0   # DARTS: 0.2, ramped linearly from 0 over the epochs
    amp: bool = True              # bf16 autocast on CUDA (ignored on the CPU)
    eval_every: int = 1           # test every K epochs (0: only at the end)
    checkpoint_every: int = 0     # also checkpoint every K steps (0: at epoch ends only)
    progress: bool = True
    val_split: float = 0.0        # fraction of the training set held out (fixed seed) for val_acc; 0: none


@dataclass
class Config:
    """A whole run."""

    seed: int = 0
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    deterministic: bool = False   # torch.use_deterministic_algorithms (bit-exact CPU reruns)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cost: CostConfig = field(default_factory=CostConfig)

    def to_dict(self) -> dict:
        """Plain nested dict (what ``config.yaml`` holds)."""
        return dataclasses.asdict(self)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Checks ``value`` against the field type ``tp``; ints are accepted for floats."""
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key {key!r} must be a number, got {brief(value)}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond a float's range
            number = math.inf
        if not math.isfinite(number):  # inf/nan pass every range check and then poison the run
            raise UserError(f"config key {key!r} must be a finite number, got {brief(value)}")
        return number
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key {key!r} must be an integer, got {brief(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key {key!r} must be true or false, got {brief(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"config key {key!r} must be a string, got {brief(value)}")
        return value
    if tp is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {key!r} must be a list, got {brief(value)}")
        return list(value)
    return value


def _unknown(key: str, valid: list[str]) -> UserError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], [v.rsplit(".", 1)[-1] for v in valid], n=1)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
    return UserError(f"unknown config key {brief(key)}{hint}")


# Keys that no longer exist -> what to use instead. A removed key at 0 (off, as every resolved
# config.yaml of an older run holds it) is dropped; any other value is refused.
REMOVED_KEYS = {
    "search.perturb_logits": "it added noise to the logits, which is not SDARTS-RS; use search.sdarts_epsilon "
                             "(noise on the softmax weights, clipped and renormalised; 0.3 published)",
}


def _merge(obj: Any, values: dict, prefix: str = "") -> None:
    """Writes a nested dict onto a dataclass instance, checking keys and types."""
    if not isinstance(values, dict):
        raise UserError(f"config section {prefix.rstrip('.') or 'top level'!r} must be a mapping, got {brief(values)}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in fields(obj)]
    for key, value in values.items():
        full = f"{prefix}{key}" if isinstance(key, str) else f"{prefix}{brief(key)}"
        if full in REMOVED_KEYS:
            if not isinstance(value, bool) and value == 0:
                continue
            raise UserError(f"config key {full!r} was removed: {REMOVED_KEYS[full]}")
        if key not in names:
            raise _unknown(full, [f"{prefix}{n}" for n in names])
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(full, value, hints[key]))


def _check(cfg: Config) -> None:
    """Range and choice checks, each naming its key."""
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise UserError(f"config key {key!r} {what}")

    def in_range(value: int, low: int, high: int, key: str) -> None:
        need(low <= value <= high, key, f"must be in [{low}, {high:,}], got {brief(value)}")
    d, m, s, t = cfg.data, cfg.model, cfg.search, cfg.train
    need(0 <= cfg.seed <= MAX_SEED, "seed", f"must be in [0, 2**32 - 1], got {brief(cfg.seed)}")
    need(d.dataset in DATASETS, "data.dataset", f"must be one of {', '.join(DATASETS)}, got {brief(d.dataset)}")
    need(0.0 < d.split < 1.0, "data.split", f"must be in (0, 1), got {d.split}")
    in_range(d.batch_size, 1, MAX_BATCH, "data.batch_size")
    in_range(d.num_workers, 0, 256, "data.num_workers")
    in_range(d.cutout, 0, MAX_IMAGE_SIZE, "data.cutout")
    in_range(d.image_size, 4, MAX_IMAGE_SIZE, "data.image_size")
    need(0.0 < d.test_split < 1.0, "data.test_split", f"must be in (0, 1), got {d.test_split}")
    in_range(d.synthetic_size, 2, MAX_SYNTHETIC, "data.synthetic_size")
    in_range(d.synthetic_classes, 2, 1000, "data.synthetic_classes")
    need(d.loader in LOADERS, "data.loader", f"must be one of {', '.join(LOADERS)}, got {brief(d.loader)}")
    need(d.transform in TRANSFORMS, "data.transform", f"must be one of {', '.join(TRANSFORMS)}, got {brief(d.transform)}")
    if d.dataset != "imagefolder":
        need(d.loader != "stream", "data.loader", f"=stream applies to data.dataset=imagefolder only, not "
             f"{brief(d.dataset)} (held in memory); set data.loader=auto")
        need(d.transform != "timm", "data.transform", f"=timm applies to data.dataset=imagefolder only, not "
             f"{brief(d.dataset)}; set data.transform=auto")
    need(not (d.loader == "memory" and d.transform == "timm"), "data.loader",
         "=memory cannot apply data.transform=timm (timm crops the full-size files); set data.loader=stream "
         "(or auto), or data.transform=fixed")
    if d.dataset == "synthetic":  # the set is built in memory at once (uint8, 3 channels, train + test)
        need(2 * d.synthetic_size * 3 * d.image_size ** 2 <= MAX_SYNTHETIC_BYTES, "data.synthetic_size",
             f"x data.image_size^2 asks for {2 * d.synthetic_size * 3 * d.image_size ** 2 / 2**30:.1f} GiB of "
             f"images; at most {MAX_SYNTHETIC_BYTES // 2**30} GiB: lower data.synthetic_size or data.image_size")
    need(m.mode in MODES, "model.mode", f"must be one of {', '.join(MODES)}, got {brief(m.mode)}")
    need(m.gdas_gate in ("", *GATE_RULES), "model.gdas_gate",
         f"must be empty (the space's default) or one of {', '.join(GATE_RULES)}, got {brief(m.gdas_gate)}")
    in_range(m.C, 1, MAX_CHANNELS, "model.C")
    in_range(m.N, 1, MAX_CELLS, "model.N")
    need(m.bn_layout in ("official", "batch_stats"), "model.bn_layout",
         f"must be official or batch_stats, got {brief(m.bn_layout)}")
    need(s.epochs >= 1, "search.epochs", f"must be >= 1, got {s.epochs}")
    need(0 <= s.warmup_epochs, "search.warmup_epochs", f"must be >= 0, got {s.warmup_epochs}")
    for key in ("lr", "lr_min", "momentum", "weight_decay", "grad_clip", "arch_lr", "arch_weight_decay",
                "arch_grad_clip"):
        need(getattr(s, key) >= 0, f"search.{key}", f"must be >= 0, got {getattr(s, key)}")
    need(s.momentum < 1, "search.momentum", f"must be in [0, 1), got {s.momentum}")
    need(s.sdarts_epsilon == 0 or s.sdarts_epsilon >= 0.03, "search.sdarts_epsilon",
         f"must be 0 (off) or >= 0.03 (its ramp starts at 0.03; 0.3 published), got {s.sdarts_epsilon}")
    need(m.max_skip >= -1, "model.max_skip", f"must be >= -1 (-1: no cap), got {m.max_skip}")
    need(m.max_parameter_free >= -1, "model.max_parameter_free", f"must be >= -1 (-1: no cap), got {m.max_parameter_free}")
    need(all(isinstance(name, str) for name in m.derive_exclude), "model.derive_exclude",
         f"must be a list of op names, got {brief(m.derive_exclude)}")
    need(s.lr_min <= s.lr, "search.lr_min", f"must be <= search.lr ({s.lr}), got {s.lr_min}")
    need(len(s.arch_betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in s.arch_betas),
         "search.arch_betas", f"must be two numbers in [0, 1), got {brief(s.arch_betas)}")
    need(s.tau_schedule in TAU_SCHEDULES, "search.tau_schedule",
         f"must be one of {', '.join(TAU_SCHEDULES)}, got {brief(s.tau_schedule)}")
    need(s.tau_max > 0, "search.tau_max", f"must be > 0, got {s.tau_max}")
    need(s.tau_min > 0, "search.tau_min", f"must be > 0, got {s.tau_min}")
    need(s.tau_min <= s.tau_max, "search.tau_min", f"must be <= search.tau_max ({s.tau_max}), got {s.tau_min}")
    need(s.estimator in ESTIMATORS, "search.estimator",
         f"must be one of {', '.join(ESTIMATORS.names())}, got {brief(s.estimator)}")
    need(s.estimator == STRAIGHT_THROUGH or m.mode == "gdas", "search.estimator",
         f"{s.estimator} estimates the gradient of a hard sample, which only model.mode=gdas draws (got "
         f"{brief(m.mode)}); set search.estimator={STRAIGHT_THROUGH} or model.mode=gdas")
    in_range(s.gumbel_rao_samples, 1, MAX_GUMBEL_RAO_SAMPLES, "search.gumbel_rao_samples")
    in_range(s.arch_samples, 1, MAX_ARCH_SAMPLES, "search.arch_samples")
    need(s.arch_samples == 1 or (m.mode == "gdas" and s.bilevel), "search.arch_samples",
         f"draws several hard architectures per arch step, which only the bilevel gdas search does (got "
         f"model.mode={brief(m.mode)}, search.bilevel={s.bilevel}); set search.arch_samples=1")
    need(s.checkpoint_every >= 0, "search.checkpoint_every", f"must be >= 0, got {s.checkpoint_every}")
    need(s.on_nonfinite in ("stop", "skip"), "search.on_nonfinite", f"must be stop or skip, got {brief(s.on_nonfinite)}")
    need(s.eval_every >= 0, "search.eval_every", f"must be >= 0, got {s.eval_every}")
    need(0 < s.settle_probability <= 1, "search.settle_probability",
         f"must be in (0, 1] (a top op probability), got {s.settle_probability}")
    need(s.shrink_every >= 0, "search.shrink_every", f"must be >= 0 (epochs between drops; 0: off), got {s.shrink_every}")
    need(s.shrink_to >= 1, "search.shrink_to", f"must be >= 1 (ops each edge keeps), got {s.shrink_to}")
    need(s.shrink_start >= 0, "search.shrink_start", f"must be >= 0 (epochs before shrinking), got {s.shrink_start}")
    need(s.shrink_by in SHRINK_MEASURES, "search.shrink_by",
         f"must be one of {', '.join(SHRINK_MEASURES)}, got {brief(s.shrink_by)}")
    need(0 <= s.settle_epochs_fraction <= 1, "search.settle_epochs_fraction",
         f"must be in [0, 1] (a fraction of the epochs so far), got {s.settle_epochs_fraction}")
    need(s.select in SELECTIONS, "search.select", f"must be one of {', '.join(SELECTIONS)}, got {brief(s.select)}")
    in_range(s.select_samples, 1, MAX_SELECT_SAMPLES, "search.select_samples")
    in_range(s.select_sweeps, 1, MAX_SELECT_SWEEPS, "search.select_sweeps")
    need(s.select_proxy in SELECT_PROXIES, "search.select_proxy",
         f"must be one of {', '.join(SELECT_PROXIES)}, got {brief(s.select_proxy)}")
    in_range(s.select_pool, 1, MAX_SELECT_POOL, "search.select_pool")
    in_range(s.select_top, 1, MAX_SELECT_POOL, "search.select_top")
    need(s.select == "logits" or s.shrink_every == 0 or s.shrink_to > 1, "search.select",
         f"{s.select} compares the ops an edge still holds at the end, but search.shrink_to={s.shrink_to} leaves one; "
         "set search.shrink_every=0 or search.shrink_to=2 or more")
    need(not s.nb201_benchmark or m.space == "nb201", "search.nb201_benchmark",
         f"names a NAS-Bench-201 (NATS-Bench topology) benchmark, which scores only space nb201, not {brief(m.space)}; "
         "set search.nb201_benchmark='' or model.space=nb201")
    need(t.epochs >= 1, "train.epochs", f"must be >= 1, got {t.epochs}")
    for key in ("lr", "lr_min", "momentum", "weight_decay", "grad_clip", "auxiliary_weight"):
        need(getattr(t, key) >= 0, f"train.{key}", f"must be >= 0, got {getattr(t, key)}")
    need(t.momentum < 1, "train.momentum", f"must be in [0, 1), got {t.momentum}")
    need(t.lr_min <= t.lr, "train.lr_min", f"must be <= train.lr ({t.lr}), got {t.lr_min}")
    need(0 <= t.label_smoothing < 1, "train.label_smoothing", f"must be in [0, 1), got {t.label_smoothing}")
    need(0 <= t.drop_path_prob < 1, "train.drop_path_prob", f"must be in [0, 1), got {t.drop_path_prob}")
    need(t.eval_every >= 0, "train.eval_every", f"must be >= 0, got {t.eval_every}")
    need(t.checkpoint_every >= 0, "train.checkpoint_every", f"must be >= 0, got {t.checkpoint_every}")
    need(0.0 <= t.val_split < 1.0, "train.val_split", f"must be in [0, 1), got {t.val_split}")
    cfg.cost.validate()
    need(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"), "device",
         f"must be auto, cpu, cuda or cuda:N, got {brief(cfg.device)}")


def parse_override(text: str) -> tuple[str, Any]:
    """Splits ``key=value``; the value is read as YAML (``5``, ``0.1``, ``true``, ``[0.5, 0.9]``)."""
    if "=" not in text:
        raise UserError(f"override {brief(text)} is not key=value (e.g. search.epochs=5)")
    key, raw = text.split("=", 1)
    try:
        value = load_yaml(raw) if raw.strip() else ""  # plain data only: no aliases or duplicate keys, bounded
    except YAMLRefused as e:  # an alias or a duplicate key: refused, not read as a string
        raise UserError(f"override {brief(key.strip())}: {e.problem}") from None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _nest(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def read_yaml(path: str | Path) -> dict:
    """Reads a YAML mapping; ``UserError`` for a missing file or a syntax error (with its line)."""
    path = Path(path)
    data = read_user_yaml(path, "config file", missing="pass --config with a YAML file (see configs/)")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}")
    return data


# Keys whose values suit one space only (its width and depth, its op names and derivation rules,
# options only some spaces take, a benchmark or latency table measured on it). A config file's values
# for them are left out when a command-line override switches ``model.space`` to another space.
SPACE_SPECIFIC_KEYS = ("model.C", "model.N", "model.derivation", "model.derive_exclude", "model.edge_normalization",
                       "model.bn_layout", "search.nb201_benchmark", "cost.table")


def _overridden_space(overrides: list[str] | tuple) -> str | None:
    """The ``model.space`` the last override naming it sets (None when none does)."""
    space = None
    for text in overrides:
        if isinstance(text, str) and text.split("=", 1)[0].strip() == "model.space":
            space = parse_override(text)[1]
    return space


def without_space_specific_keys(values: dict, overrides: list[str] | tuple = ()) -> dict:
    """``values`` less its ``SPACE_SPECIFIC_KEYS`` when an override switches ``model.space`` away from
    the space ``values`` configures (its ``model.space``, else the default's); else ``values`` itself.

    ``configs/quickstart.yaml model.space=mobilenet`` thus does not carry nb201's ``model.N`` or a
    ``derive_exclude`` naming nb201's ops into the mobilenet run (each falls back to its default).
    """
    model = values.get("model") if isinstance(values, dict) else None
    file_space = model.get("space", ModelConfig.space) if isinstance(model, dict) else ModelConfig.space
    space = _overridden_space(overrides)
    if space is None or space == file_space:
        return values
    kept = {section: dict(v) if isinstance(v, dict) else v for section, v in values.items()}
    for key in SPACE_SPECIFIC_KEYS:
        section, name = key.split(".")
        if isinstance(kept.get(section), dict):
            kept[section].pop(name, None)
    return kept


def build_config(values: dict | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Builds a validated ``Config`` from a nested dict and ``key=value`` overrides.

    An override that switches ``model.space`` drops the dict's space-specific keys first
    (``without_space_specific_keys``).
    """
    cfg = Config()
    _merge(cfg, without_space_specific_keys(values or {}, overrides))
    for text in overrides:
        key, value = parse_override(text)
        _merge(cfg, _nest(key, value))
    _check(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Loads a YAML config file (or the defaults when ``path`` is None) and applies overrides."""
    return build_config(read_yaml(path) if path is not None else {}, overrides)


def diff_configs(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return sorted(k for k in fa if fa[k] != fb.get(k))
