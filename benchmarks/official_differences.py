"""Measures each difference between this project's GDAS search and the official code's.

Checks, each printed as one line of figures and written to ``--json``:

* ``schedules``: the learning rate and temperature of every epoch (ours:
  ``tau_at`` and timm's cosine scheduler; official: ``benchmarks/official.py``).
* ``same_weights``: our supernet and the official ``TinyNetworkGDAS`` with
  our weights copied in, on one batch, one Gumbel noise draw turned into each
  side's own sample: the loss, the weight gradients (weight step: the sample
  cut from the logits) and the logits' gradient (arch step). Any difference in
  the ops, the macro, the BN settings or the straight-through estimator shows
  here.
* ``macro_bn``: the official model with its stem, reduction-block and head BNs
  tracking running statistics (as shipped) against the same model with batch
  statistics only (this project's layout): train-mode outputs and gradients,
  then eval-mode outputs.
* ``clip`` (``--clip-epochs E``, slow): an official search whose weight clip
  sees the weights only, against the same seed's official search as shipped
  (``--reference`` search.json of ``official_comparison.py``, same config):
  derived cell and final probabilities. The clip's per-epoch statistics of
  the shipped search are in that file (``clip``).

Usage::

    python benchmarks/official_differences.py --json runs/official_differences.json
    python benchmarks/official_differences.py --clip-epochs 40 \\
        --reference runs/official_comparison/official-seed0/search.json --json runs/official_clip.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without an install
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import search_spaces  # noqa: E402,F401  (registers the spaces)
from benchmarks.official import (INSTALL_HINT, OFFICIAL_OPS, build_official, import_official, official_lr,  # noqa: E402
                                 official_tau)
from benchmarks.official_comparison import DEFAULT_OVERRIDES, FIXED_OVERRIDES, search_official  # noqa: E402
from nas.sampling.architecture import ArchSample  # noqa: E402
from nas.cli.build import build_searcher  # noqa: E402
from nas.cli.run_command import guarded_main  # noqa: E402
from nas.config import build_config, diff_configs, load_config  # noqa: E402
from nas.utils.errors import UserError  # noqa: E402
from nas.sampling.gumbel import sample_gumbel, tau_at  # noqa: E402


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 when both are zero)."""
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / scale if scale > 0 else (a - b).abs().max().item()


def _flat_grads(params) -> torch.Tensor:
    """Every gradient flattened, zeros for parameters without one (ops that did not run)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])


def check_schedules(cfg) -> dict:
    """Largest difference of the per-epoch learning rate and temperature over the whole search."""
    from nas.engine.search import build_optimizers
    s = cfg.search
    supernet = search_spaces.get("nb201").build_supernet(C=4, N=1)
    opt, _, scheduler = build_optimizers(supernet, s)
    lr_diff = tau_diff = 0.0
    for epoch in range(s.epochs):
        scheduler.step(epoch)
        lr_diff = max(lr_diff, abs(opt.param_groups[0]["lr"] - official_lr(epoch, s.epochs, s.lr, s.lr_min)))
        tau_diff = max(tau_diff, abs(tau_at(s.tau_schedule, epoch, s.epochs, s.tau_max, s.tau_min)
                                     - official_tau(epoch, s.epochs, s.tau_max, s.tau_min)))
    return {"epochs": s.epochs, "max_lr_difference": lr_diff, "max_tau_difference": tau_diff}


def copy_weights(ours: nn.Module, official: nn.Module) -> int:
    """Copies our supernet's weights (not the logits) into the official model, parameter by parameter.

    Both list their parameters in the same order (stem, cells with edges in
    row order and ops in column order, reduction blocks, head BN, classifier);
    every shape is checked. Returns the number of tensors copied.
    """
    mine = [p for name, p in ours.named_parameters() if not name.startswith("architecture")]
    theirs = [p for name, p in official.named_parameters() if name != "arch_parameters"]
    if len(mine) != len(theirs):
        raise RuntimeError(f"{len(mine)} weight tensors in ours, {len(theirs)} in the official model")
    with torch.no_grad():
        for a, b in zip(mine, theirs):
            if a.shape != b.shape:
                raise RuntimeError(f"shape {tuple(a.shape)} against {tuple(b.shape)}")
            b.copy_(a)
    return len(mine)


def official_forward(net: nn.Module, x: torch.Tensor, hardwts: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``TinyNetworkGDAS.forward`` after its sampling lines, with a given sample (its own code path otherwise)."""
    feature = net.stem(x)
    for cell in net.cells:
        feature = cell.forward_gdas(feature, hardwts, index) if hasattr(cell, "forward_gdas") else cell(feature)
    out = net.global_pooling(net.lastact(feature))
    return net.classifier(out.view(out.size(0), -1))


def check_same_weights(cfg, tau: float = 1.0, seed: int = 0) -> dict:
    """Ours and the official model with equal weights, logits, batch and Gumbel noise: losses and gradients."""
    torch.manual_seed(seed)
    searcher = build_searcher(cfg, out_dir=None, log=lambda m: None)
    ours, data = searcher.supernet, searcher.data
    official = build_official(cfg.model.C, cfg.model.N, data.num_classes, in_channels=data.in_channels)
    copied = copy_weights(ours, official)
    logits = ours.architecture.logits["cell"]
    with torch.no_grad():
        logits.normal_(0.0, 1.0)  # logits of a search in progress, not the 1e-3 start
        official.arch_parameters.copy_(logits)
    x, y = next(data.train.epoch(0))
    noise = sample_gumbel(logits.shape, generator=torch.Generator().manual_seed(seed))
    ours.train()
    official.train()
    result = {"weight_tensors": copied, "tau": tau}
    # Ours: gumbel_softmax_sample's formula with this noise.
    soft = torch.softmax((logits + noise) / tau, dim=-1)
    index = (logits.detach() + noise).argmax(-1)
    hard = torch.zeros_like(soft).scatter_(-1, index[:, None], 1.0) + (soft - soft.detach())
    sample = ArchSample({"cell": hard}, {"cell": index.tolist()})
    # The official lines: log_softmax(alpha) + gumbels, over tau, softmax, argmax of probs.
    alpha = official.arch_parameters
    probs = F.softmax((alpha.log_softmax(dim=1) + noise) / tau, dim=1)
    o_index = probs.max(-1, keepdim=True)[1]
    hardwts = torch.zeros_like(probs).scatter_(-1, o_index, 1.0) - probs.detach() + probs
    result["same_sample"] = bool((o_index[:, 0] == index).all())
    # Weight step: ours cuts the sample from the logits; the official backward also reaches alpha.
    loss_ours = F.cross_entropy(ours.forward_sample(x, sample.detach()), y)
    loss_ours.backward()
    loss_off = F.cross_entropy(official_forward(official, x, hardwts, o_index), y)
    loss_off.backward()
    g_ours = _flat_grads(p for n, p in ours.named_parameters() if not n.startswith("architecture"))
    g_off = _flat_grads(official.get_weights())
    result["weight_step"] = {"loss_ours": loss_ours.item(), "loss_official": loss_off.item(),
                             "max_rel_weight_grad_difference": _max_rel(g_ours, g_off),
                             "weight_grad_norm": g_off.norm().item(),
                             "official_logit_grad_norm": official.arch_parameters.grad.norm().item()}
    # Arch step on a val batch: gradient of the logits only.
    xv, yv = next(data.val.epoch(0))
    ours.zero_grad(set_to_none=True)
    official.zero_grad(set_to_none=True)
    for p in ours.weight_parameters():
        p.requires_grad_(False)
    loss_ours = F.cross_entropy(ours.forward_sample(xv, sample), yv)
    (g_ours_a,) = torch.autograd.grad(loss_ours, logits)
    probs = F.softmax((alpha.log_softmax(dim=1) + noise) / tau, dim=1)
    hardwts = torch.zeros_like(probs).scatter_(-1, o_index, 1.0) - probs.detach() + probs
    loss_off = F.cross_entropy(official_forward(official, xv, hardwts, o_index), yv)
    (g_off_a,) = torch.autograd.grad(loss_off, alpha)
    result["arch_step"] = {"loss_ours": loss_ours.item(), "loss_official": loss_off.item(),
                           "max_rel_logit_grad_difference": _max_rel(g_ours_a, g_off_a),
                           "logit_grad_norm": g_off_a.norm().item()}
    return result


def check_macro_bn(cfg, seed: int = 0) -> dict:
    """The official model with running statistics in stem, reduction blocks and head, against batch statistics."""
    torch.manual_seed(seed)
    searcher = build_searcher(cfg, out_dir=None, log=lambda m: None)
    data = searcher.data
    torch.manual_seed(seed)
    shipped = build_official(cfg.model.C, cfg.model.N, data.num_classes, in_channels=data.in_channels)
    batch_only = build_official(cfg.model.C, cfg.model.N, data.num_classes, in_channels=data.in_channels,
                                macro_bn_track=False)
    batch_only.load_state_dict({k: v for k, v in shipped.state_dict().items()
                                if k in batch_only.state_dict()}, strict=True)
    with torch.no_grad():  # every edge nor_conv_3x3: a sample whose output depends on every BN
        for net in (shipped, batch_only):
            net.arch_parameters.zero_()
            net.arch_parameters[:, OFFICIAL_OPS.index("nor_conv_3x3")] = 30.0
    x, y = next(data.train.epoch(0))
    out = {}
    for mode in ("train", "eval"):
        getattr(shipped, mode)()
        getattr(batch_only, mode)()
        torch.manual_seed(seed + 1)  # the same Gumbel draw inside both forwards
        _, a = shipped(x)
        torch.manual_seed(seed + 1)
        _, b = batch_only(x)
        entry = {"max_rel_output_difference": _max_rel(b, a)}
        if mode == "train":
            F.cross_entropy(a, y).backward()
            F.cross_entropy(b, y).backward()
            ga, gb = _flat_grads(shipped.parameters()), _flat_grads(batch_only.parameters())
            entry["max_rel_grad_difference"] = _max_rel(gb, ga)
        out[mode] = entry
    return out


def check_clip(cfg, reference: Path, log) -> dict:
    """An official search clipping the weights only, against the shipped one of the same seed and config."""
    record = json.loads(reference.read_text())
    changed = diff_configs(build_config(record["config"]), cfg)
    if changed:
        raise UserError(f"{str(reference)!r} was searched with another config ({', '.join(changed[:4])} differ)")
    torch.manual_seed(cfg.seed)
    weights_only = search_official(cfg, log, clip_arch=False)
    p_ref, p_new = torch.tensor(record["probabilities"]), torch.tensor(weights_only["probabilities"])
    return {"seed": cfg.seed, "epochs": cfg.search.epochs, "genotype_shipped": record["genotype"],
            "genotype_weights_only": weights_only["genotype"],
            "same_genotype": record["genotype"] == weights_only["genotype"],
            "max_probability_difference": (p_ref - p_new).abs().max().item(),
            "clip_weights_only_run": weights_only["clip"], "search_time": weights_only["search_time"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/official_differences.py",
                                description="Measures the differences between ours and the official GDAS search.")
    p.add_argument("--search-config", default="configs/quickstart.yaml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip-epochs", type=int, default=0, help="run the clip check with this many epochs (slow)")
    p.add_argument("--reference", help="search.json of the shipped official search (official_comparison.py)")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--debug", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def run(args) -> int:
    if import_official() is None:
        raise UserError(f"the official GDAS code is not installed; {INSTALL_HINT} to compare against it")
    torch.set_num_threads(args.threads)
    overrides = [*DEFAULT_OVERRIDES, *args.overrides, *FIXED_OVERRIDES, f"seed={args.seed}"]
    cfg = load_config(args.search_config, overrides)
    results = {"config": args.search_config, "overrides": overrides}
    if args.clip_epochs:
        if not args.reference:
            raise UserError("--clip-epochs needs --reference, the shipped official search.json of the same config")
        cfg = load_config(args.search_config, [*overrides, f"search.epochs={args.clip_epochs}"])
        results["clip"] = check_clip(cfg, Path(args.reference), log=lambda m: print(m, file=sys.stderr, flush=True))
    else:
        results["schedules"] = check_schedules(cfg)
        results["same_weights"] = check_same_weights(cfg, seed=args.seed)
        results["macro_bn"] = check_macro_bn(cfg, seed=args.seed)
    for key, value in results.items():
        if isinstance(value, dict):
            print(f"{key}: {json.dumps(value)}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return guarded_main(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
