"""Config -> objects: the one place that translates a ``Config`` into constructor arguments."""
from __future__ import annotations

import inspect
import random
from dataclasses import replace
from pathlib import Path

import torch

from ..config import Config
from ..cost.objective import CostObjective
from ..spaces.derive import check_exclusions
from ..engine.distributed import DistContext, init_distributed
from ..utils.errors import UserError
from ..spaces.genotype import load_genotype
from ..engine.search import Searcher
from ..spaces.space import get_space
from ..engine.train import FinalTrainer
from ..data import VAL_SPLIT_SEED, SearchData, TensorLoader, build_search_data, hold_out, load_dataset


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``UserError`` if CUDA is asked for and absent.

    Under ``torchrun`` each process takes the GPU of its local rank.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank:
        name = f"cuda:{local_rank}"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device={name!r} but CUDA is not available here; use device=cpu (or auto)")
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise UserError(f"device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device(name)


def _input_size(builder, image_size: int) -> dict:
    # Spaces whose layout depends on the image size (mobilenet: CIFAR or ImageNet strides) take it.
    return {"input_size": image_size} if "input_size" in inspect.signature(builder).parameters else {}


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seeds torch, Python and NumPy; optionally asks torch for deterministic kernels."""
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np
        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _load(cfg: Config, train: bool):
    d = cfg.data
    return load_dataset(d.dataset, root=d.root, train=train, download=d.download, image_size=d.image_size,
                        synthetic_size=d.synthetic_size, synthetic_classes=d.synthetic_classes,
                        seed=cfg.seed, num_workers=d.num_workers, test_split=d.test_split,
                        skip_bad_images=d.skip_bad_images)


def build_search_data_from_config(cfg: Config, device: torch.device, ctx: DistContext | None = None,
                                  log=None) -> SearchData:
    """Loads the configured training set and splits it for the search (``log``: where to say what it holds)."""
    d, ctx = cfg.data, ctx or DistContext()
    images = _load(cfg, train=True)
    if log is not None and ctx.is_main:
        log(f"training images: {images.source}")
    data_device = device if d.device_resident else torch.device("cpu")
    return build_search_data(images, d.split, d.batch_size, augment=d.augment, seed=cfg.seed, device=data_device,
                             rank=ctx.rank, world_size=ctx.world_size)


def build_searcher(cfg: Config, out_dir: str | Path | None = None, log=print) -> Searcher:
    """Builds data, supernet and loop for a validated config."""
    ctx = init_distributed(cfg.device)
    device = resolve_device(cfg.device, ctx.local_rank)
    space = get_space(cfg.model.space)
    if cfg.model.derivation and cfg.model.derivation not in space.derivation_rules:
        raise UserError(f"config key 'model.derivation' must be one of {', '.join(space.derivation_rules)} "
                        f"for {space.name}, got {cfg.model.derivation!r}")
    check_exclusions(space, cfg.model.derive_exclude)
    extra = {}
    if cfg.model.edge_normalization:
        if "edge_normalization" not in inspect.signature(space.build_supernet).parameters:
            raise UserError(f"config key 'model.edge_normalization' is not available in the {space.name} space "
                            "(only darts has it); set model.edge_normalization=false")
        extra["edge_normalization"] = True
    # Each space's build_supernet declares what it takes (its default GDAS gate is its own).
    for key, name, value, fix in (("gdas_gate", "model.gdas_gate", cfg.model.gdas_gate, "leave it empty"),
                                  ("aux_skip", "search.aux_skip", cfg.search.aux_skip, "set search.aux_skip=false")):
        if value:
            if key not in inspect.signature(space.build_supernet).parameters:
                raise UserError(f"config key {name!r} is not available in the {space.name} space; {fix}")
            extra[key] = value
    if cfg.model.bn_layout != "official":
        if "bn_layout" not in inspect.signature(space.build_supernet).parameters:
            raise UserError(f"config key 'model.bn_layout' is not available in the {space.name} space "
                            "(nb201 and darts have it); set model.bn_layout=official")
        extra["bn_layout"] = cfg.model.bn_layout
    seed_everything(cfg.seed, cfg.deterministic)
    # An image folder's training images may exclude a held-out test split or unreadable files: say which.
    data = build_search_data_from_config(cfg, device, ctx, log=log if cfg.data.dataset == "imagefolder" else None)
    torch.manual_seed(cfg.seed)  # the supernet's initial weights do not depend on how the data was built
    supernet = space.build_supernet(mode=cfg.model.mode, num_classes=data.num_classes, C=cfg.model.C,
                                    N=cfg.model.N, in_channels=data.in_channels,
                                    **_input_size(space.build_supernet, data.image_size), **extra).to(device)
    cost = CostObjective.from_config(cfg.cost, supernet, (data.in_channels, data.image_size, data.image_size))
    searcher = Searcher(supernet, space, data, cfg.search, seed=cfg.seed, out_dir=out_dir, log=log,
                        derivation=cfg.model.derivation, max_skip=cfg.model.max_skip,
                        max_parameter_free=cfg.model.max_parameter_free, dist=ctx, cost=cost,
                        derive_exclude=cfg.model.derive_exclude)
    searcher.run_config = cfg.to_dict()  # checkpoints record it; resuming under another config is refused
    return searcher


def build_final_trainer(cfg: Config, genotype_path: str | Path | tuple, out_dir: str | Path | None = None,
                        log=print):
    """Builds the discrete network of a genotype, its data and its training loop.

    Args:
        genotype_path: A genotype file, or a ``(space, genotype)`` pair already resolved
            (``nas.spaces.genotype.resolve_genotype``).

    Returns:
        ``(trainer, space, genotype)``.

    Raises:
        UserError: if the genotype belongs to another space than ``model.space``.
    """
    ctx = init_distributed(cfg.device)
    device = resolve_device(cfg.device, ctx.local_rank)
    if isinstance(genotype_path, tuple):
        (space, genotype), where = genotype_path, "--genotype"
    else:
        (space, genotype), where = load_genotype(genotype_path), repr(str(genotype_path))
    if space.name != cfg.model.space:
        raise UserError(f"{where} holds a {space.name} genotype but the config searches "
                        f"{cfg.model.space!r}; set model.space={space.name} (and its model.C/model.N)")
    seed_everything(cfg.seed, cfg.deterministic)
    d, t = cfg.data, cfg.train
    train_set, test_set = _load(cfg, train=True), _load(cfg, train=False)
    val_set = None
    if t.val_split > 0:  # the same images for every seed and cell (VAL_SPLIT_SEED), never trained on
        kept, held = hold_out(train_set.labels, t.val_split, VAL_SPLIT_SEED)
        if len(held) == 0 or len(kept) == 0:
            raise UserError(f"train.val_split={t.val_split} of the {len(train_set):,} training images leaves an "
                            "empty training or validation part; choose another train.val_split")
        share = f"{t.val_split * 100:g}%"
        val_set = replace(train_set.subset(held), source=f"{train_set.source}: the held-out {share} "
                                                         f"validation part (seed {VAL_SPLIT_SEED}), {len(held):,} images")
        train_set = replace(train_set.subset(kept), source=f"{train_set.source}, less the held-out {share} "
                                                           f"validation part: {len(kept):,} images")
    data_device = device if d.device_resident else torch.device("cpu")
    shard = dict(device=data_device, rank=ctx.rank, world_size=ctx.world_size)
    train = TensorLoader(train_set, d.batch_size, shuffle=True, augment=d.augment, seed=cfg.seed,
                         cutout=d.cutout, **shard)
    test = TensorLoader(test_set, max(d.batch_size, 256), shuffle=False, augment=False, drop_last=False, **shard)
    val = None if val_set is None else TensorLoader(val_set, max(d.batch_size, 256), shuffle=False, augment=False,
                                                    drop_last=False, **shard)
    torch.manual_seed(cfg.seed)
    network = space.build_network(genotype, num_classes=train_set.num_classes, C=cfg.model.C, N=cfg.model.N,
                                  in_channels=train_set.images.shape[1], auxiliary=t.auxiliary_weight > 0,
                                  drop_path_prob=t.drop_path_prob,
                                  **_input_size(space.build_network, train_set.images.shape[-1]))
    trainer = FinalTrainer(network.to(device), train, test, t, out_dir=out_dir, log=log, dist=ctx, val=val)
    trainer.run_config = cfg.to_dict()
    trainer.test_set = test_set.source
    trainer.val_set = val_set.source if val_set is not None else ""
    if ctx.is_main:
        log(f"training images: {train_set.source}")
        log(f"test images: {test_set.source}")
        if val_set is not None:
            log(f"validation images: {val_set.source}")
    return trainer, space, genotype
