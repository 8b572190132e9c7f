"""Config -> objects: the one place that translates a ``Config`` into constructor arguments."""
from __future__ import annotations

import random
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from ..config import Config
from ..cost.objective import CostObjective
from ..spaces.derive import derive_exclusions
from ..engine.distributed import DistContext, init_distributed
from ..utils.errors import UserError
from ..spaces.genotype import load_genotype
from ..engine.search import Searcher
from ..spaces.registry import SEARCH_SPACES
from ..spaces.space import SearchSpace, get_space
from ..engine.train import FinalTrainer
from ..data import VAL_SPLIT_SEED, SearchData, build_search_data, hold_out, make_loader, open_dataset


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


# Config key -> the builder argument it sets. A space receives exactly the arguments it declares
# (``SearchSpace.supernet_arguments`` / ``network_arguments``); a key whose argument it lacks must
# keep its default, or the run is refused with a one-line error naming the key and the space.
SUPERNET_KEYS = (("model.C", "C"), ("model.N", "N"), ("model.edge_normalization", "edge_normalization"),
                 ("model.gdas_gate", "gdas_gate"), ("search.aux_skip", "aux_skip"), ("model.bn_layout", "bn_layout"))
NETWORK_KEYS = (("model.C", "C"), ("model.N", "N"), ("train.auxiliary_weight", "auxiliary"),
                ("train.drop_path_prob", "drop_path_prob"))


def _value(cfg: Config, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _text(value) -> str:
    return "true" if value is True else "false" if value is False else "''" if value == "" else str(value)


def space_arguments(cfg: Config, space: SearchSpace, network: bool = False, image_size: int | None = None) -> dict:
    """The builder arguments of ``space`` that the config sets, exactly those the space declares.

    Args:
        cfg: The validated config.
        space: The chosen space.
        network: ``build_network``'s arguments (else ``build_supernet``'s).
        image_size: The images' side, passed as ``input_size`` to a space that declares it.

    Raises:
        UserError: for a key set away from its default whose argument the space does not take.
    """
    declared = space.network_arguments if network else space.supernet_arguments
    default = Config()
    args = {}
    for key, arg in NETWORK_KEYS if network else SUPERNET_KEYS:
        value = _value(cfg, key)
        if arg == "auxiliary":  # the weight of the auxiliary loss switches the head on
            value = value > 0
        if arg in declared:
            args[arg] = value
        elif _value(cfg, key) != _value(default, key):
            have = [n for n in SEARCH_SPACES.names()
                    if arg in getattr(SEARCH_SPACES.get(n), "network_arguments" if network else "supernet_arguments")]
            where = (f" (only {have[0]} has it)" if len(have) == 1 else
                     f" ({', '.join(have[:-1])} and {have[-1]} have it)" if have else "")
            raise UserError(f"config key {key!r} is not available in the {space.name} space{where}; "
                            f"set {key}={_text(_value(default, key))}")
    if image_size is not None and "input_size" in declared:  # mobilenet: CIFAR or ImageNet strides
        args["input_size"] = image_size
    return args


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
    # An ImageSet held in memory, or a FileSet streamed from disk (data.loader, data.transform; docs/data.md).
    return open_dataset(d.dataset, root=d.root, train=train, download=d.download, image_size=d.image_size,
                        synthetic_size=d.synthetic_size, synthetic_classes=d.synthetic_classes,
                        seed=cfg.seed, num_workers=d.num_workers, test_split=d.test_split,
                        skip_bad_images=d.skip_bad_images, loader=d.loader, transform=d.transform)


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
    exclude = derive_exclusions(space, cfg.model.derive_exclude, cfg.model.exclude_zero)
    space_arguments(cfg, space)  # a setting the space does not take fails before any work
    seed_everything(cfg.seed, cfg.deterministic)
    # An image folder's training images may exclude a held-out test split or unreadable files: say which.
    data = build_search_data_from_config(cfg, device, ctx, log=log if cfg.data.dataset == "imagefolder" else None)
    torch.manual_seed(cfg.seed)  # the supernet's initial weights do not depend on how the data was built
    supernet = space.build_supernet(mode=cfg.model.mode, num_classes=data.num_classes, in_channels=data.in_channels,
                                    **space_arguments(cfg, space, image_size=data.image_size)).to(device)
    cost = CostObjective.from_config(cfg.cost, supernet, (data.in_channels, data.image_size, data.image_size))
    build_network = None
    if cfg.search.select == "proxy_top":  # its zero-cost proxy scores each cell's stand-alone network
        network_arguments = space_arguments(cfg, space, network=True, image_size=data.image_size)
        build_network = partial(space.build_network, num_classes=data.num_classes, in_channels=data.in_channels,
                                **network_arguments)

    searcher = Searcher(supernet, space, data, cfg.search, seed=cfg.seed, out_dir=out_dir, log=log,
                        derivation=cfg.model.derivation, max_skip=cfg.model.max_skip,
                        max_parameter_free=cfg.model.max_parameter_free, dist=ctx, cost=cost,
                        derive_exclude=exclude, build_network=build_network)
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
    get_space(cfg.model.space)  # a user's space (module:Attribute) is imported as the config names it
    if isinstance(genotype_path, tuple):
        (space, genotype), where = genotype_path, "--genotype"
    else:
        (space, genotype), where = load_genotype(genotype_path), repr(str(genotype_path))
    if space.name != cfg.model.space:
        raise UserError(f"{where} holds a {space.name} genotype but the config searches "
                        f"{cfg.model.space!r}; set model.space={space.name} (and its model.C/model.N)")
    space_arguments(cfg, space, network=True)  # a setting the space does not take fails before any work
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
    train = make_loader(train_set, d.batch_size, shuffle=True, augment=d.augment, seed=cfg.seed,
                         cutout=d.cutout, **shard)
    test = make_loader(test_set, max(d.batch_size, 256), shuffle=False, augment=False, drop_last=False, **shard)
    val = None if val_set is None else make_loader(val_set, max(d.batch_size, 256), shuffle=False, augment=False,
                                                    drop_last=False, **shard)
    torch.manual_seed(cfg.seed)
    network = space.build_network(genotype, num_classes=train_set.num_classes, in_channels=train_set.image_shape[0],
                                  **space_arguments(cfg, space, network=True, image_size=train_set.image_shape[-1]))
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
