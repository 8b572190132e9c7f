"""The search loop: weight steps, architecture steps, schedules, metrics and checkpoints.

One iteration (bilevel, as GDAS):
    draw two samples (one host transfer; the logits do not change in between)
    weight step: CE(x_train) under sample 1, SGD on the weights only
    arch step:   CE(x_val) under sample 2, Adam on the logits only
Single level (SNAS): one sample and one backward on the train batch update both.

The loop sees the supernet only through ``arch_parameters()``,
``weight_parameters()``, ``forward_sample`` and ``architecture``. Its position
(epoch, step inside the epoch) is part of every checkpoint, so a run stopped
anywhere resumes onto the same batches, samples and results.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.utils import distribute_bn

from ..sampling.architecture import ArchSample
from ..layers.batch_statistics import batch_statistics
from ..layers.choice import ChoiceLayer
from ..spaces.derive import derive_with_caps
from .checkpoint import rng_state, set_rng_state
from ..config import SearchConfig
from ..cost.objective import CostObjective
from ..data import SearchData, TensorLoader
from .distributed import DistContext, average_gradients, broadcast_module
from .evaluation import evaluate_classifier
from ..spaces.genotype import GENOTYPE, genotype_record, save_genotype
from ..sampling.gumbel import tau_at
from .loop import EpochLoop, cosine_scheduler
from ..sampling.sdarts import epsilon_at
from ..spaces.space import SearchSpace
from ..layers.supernet import Supernet
from . import selection, settling, zero_cost
from ..sampling import shrinking

PROXY_INIT_SEED = 0  # search.select=proxy_top scores each cell's network at this initialisation
_SUMS = ("loss", "correct", "arch_loss", "arch_correct")


def build_optimizers(supernet: Supernet, s: SearchConfig):
    """SGD on the weights (never the logits), Adam on the logits, cosine schedule for the weights."""
    weight_opt = torch.optim.SGD(supernet.weight_parameters(), lr=s.lr, momentum=s.momentum,
                                 nesterov=s.nesterov and s.momentum > 0, weight_decay=s.weight_decay)
    arch_opt = torch.optim.Adam(supernet.arch_parameters(), lr=s.arch_lr, betas=tuple(s.arch_betas),
                                weight_decay=s.arch_weight_decay)
    scheduler = cosine_scheduler(weight_opt, s.epochs, s.lr_min)
    return weight_opt, arch_opt, scheduler


class Searcher(EpochLoop):
    """Runs a search and owns its run directory (files, checkpoints and resume: ``nas.engine.loop``).

    Args:
        supernet: The supernet, already on its device.
        space: Its search space (for deriving and formatting genotypes).
        data: Loaders for the weight and arch steps and for evaluation.
        settings: Loop hyper-parameters (a ``SearchConfig``; its defaults are GDAS's).
        seed: Seeds the Gumbel sampler's generator (and the draws of ``search.select=op_marginals``).
        out_dir: Run directory (checkpoint, metrics, genotype); None writes nothing.
        log: Where epoch summaries go (``print`` by default).
        derivation: The space's derivation rule (None: its default).
        max_skip, max_parameter_free: Derivation caps per cell (-1: none; see ``nas.spaces.derive``).
        derive_exclude: Op names never derived (e.g. ``["none"]``).
        dist: This process's place in a multi-process run (None: a single process).
        cost: A cost-aware objective added to the architecture's loss (None: plain cross-entropy).
        build_network: Builds the stand-alone network of a genotype, for ``search.select=proxy_top``'s
            zero-cost proxy (``nas.cli.build.build_searcher`` passes the space's, with the search's settings).
    """

    checkpoint_key = "arch_optimizer"
    wrong_checkpoint = "is not a search checkpoint (train_final.py wrote it?)"
    epochs_key = "search.epochs"
    divergence_hint = "lower {key} or set search.on_nonfinite=skip"
    # Bits of the non-finite flag: which step of an iteration failed, and whether the arch step's loss
    # itself was non-finite (its forward sees finite logits, so then the weights are to blame).
    WEIGHT_STEP, ARCH_STEP, ARCH_LOSS = 1, 2, 4

    def __init__(self, supernet: Supernet, space: SearchSpace, data: SearchData,
                 settings: SearchConfig | None = None, seed: int = 0, out_dir: str | Path | None = None,
                 log: Callable[[str], None] = print, derivation: str | None = None,
                 max_skip: int = -1, max_parameter_free: int = -1, dist: DistContext | None = None,
                 cost: CostObjective | None = None, derive_exclude: Sequence[str] = (),
                 build_network: Callable[[Any], nn.Module] | None = None):
        self.s = settings or SearchConfig()
        super().__init__(self.s.epochs, self.s.checkpoint_every, out_dir, log, dist)
        self.supernet, self.space, self.data = supernet, space, data
        self.cost = cost
        self.build_network = build_network
        if self.s.select == "proxy_top" and build_network is None:
            raise ValueError("search.select=proxy_top needs build_network (the stand-alone network of a genotype)")
        self.max_skip, self.max_parameter_free = max_skip, max_parameter_free
        self.derive_exclude = tuple(derive_exclude)
        if self.dist.enabled:
            broadcast_module(supernet)  # same weights and logits everywhere, whatever each rank's init did
        self.derivation = derivation or None
        if self.s.shrink_every > 0 or not self.s.sample_excluded:  # candidate masks, before any state dict
            shrinking.enable(supernet.architecture)
        if not self.s.sample_excluded:  # search only what can be derived: excluded ops are never sampled
            shrinking.mask_ops(supernet.architecture, self.derive_exclude)
        self.weight_params = supernet.weight_parameters()
        self.arch_params = supernet.arch_parameters()
        self.weight_opt, self.arch_opt, self.scheduler = build_optimizers(supernet, self.s)
        self.amp = self.s.amp and next(supernet.parameters()).device.type == "cuda"
        if self.s.channels_last:
            supernet.to(memory_format=torch.channels_last)
        self.choice_layers = [m for m in supernet.modules() if isinstance(m, ChoiceLayer)]
        self._weights_trainable = True
        # BN running statistics (official layouts): a skipped step must not leave them changed.
        self._bn_stats = [b for n, b in supernet.named_buffers()
                          if n.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")]
        supernet.architecture.seed(seed)
        self.seed = seed
        self._selected = None  # the genotype search.select (op_marginals, local_search, proxy_top) chose (None: logits)
        # The logit gradient of each gdas sample (nas.sampling.estimators); every sample draws it, the weight
        # step's too (its extra gumbel_rao draws cost a few hundred random numbers), so the draws do not
        # depend on which sample trains the logits.
        self._estimator = {"estimator": self.s.estimator, "estimator_samples": self.s.gumbel_rao_samples}
        self._never_derived_ops: set[str] | None = None  # ops derivation never picks (found when first asked)
        self.benchmark = None  # NAS-Bench-201 lookup of each epoch's derived cell (search.nb201_benchmark)
        if self.s.nb201_benchmark:
            from search_spaces.nb201_benchmark import NB201Benchmark
            self.benchmark = NB201Benchmark(self.s.nb201_benchmark)

    def derive(self, probabilities: dict[str, torch.Tensor]):
        """The genotype of these probabilities under the configured rule and caps."""
        return derive_with_caps(self.space, probabilities, self.derivation, self.max_skip, self.max_parameter_free,
                                self.derive_exclude)

    def network(self) -> nn.Module:
        return self.supernet

    def steps_per_epoch(self) -> int:
        return len(self.data.train)

    def divergence_key(self, nonfinite: list[str], flags: int = 0) -> str:
        """``search.lr`` when the weights (or the weight step) went non-finite, else ``search.arch_lr``.

        The arch step never changes the weights, so non-finite weights always
        come from a weight step; and an arch loss that is non-finite although
        the logits it sampled from were finite comes from weights an update
        made huge.
        """
        arch_ids = {id(p) for p in self.arch_params}
        logit_names = {n for n, p in self.supernet.named_parameters() if id(p) in arch_ids}
        weights_bad = any(n not in logit_names for n in nonfinite)
        if weights_bad or flags & (self.WEIGHT_STEP | self.ARCH_LOSS) or not (flags & self.ARCH_STEP or nonfinite):
            return f"search.lr ({self.s.lr:g})"
        return f"search.arch_lr ({self.s.arch_lr:g})"

    # ----------------------------------------------------------------- steps
    def _train_weights(self, flag: bool) -> None:
        """Turns the weights' gradients on or off (off in the arch step: its backward then skips them)."""
        if flag != self._weights_trainable:
            for p in self.weight_params:
                p.requires_grad_(flag)
            self._weights_trainable = flag

    def _forward(self, x: torch.Tensor, y: torch.Tensor, sample: ArchSample, amp: bool = False):
        """Loss and correct count under ``sample``; ``amp``: bf16 autocast (the weight step only).

        A logit's gradient is a small difference of large inner products (``<g, op(x)>``
        against ``g.sum()`` or another op's): in bf16 it came out 2-56% wrong (relative L2,
        docs/gradient_rules.md), so every step that trains the logits runs in float32.
        """
        if self.s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = self.supernet.forward_sample(x, sample)
        logits = logits.float()
        return F.cross_entropy(logits, y), (logits.argmax(1) == y).sum()

    def _backward(self, loss: torch.Tensor, weights: bool, arch: bool) -> torch.Tensor:
        """Backward, cross-rank gradient averaging, weight clipping; returns the step's finite flag."""
        loss.backward()
        finite = torch.isfinite(loss)
        if self.dist.enabled:  # one all-reduce: the gradients plus every rank's loss flag
            params = (self.weight_params if weights else []) + (self.arch_params if arch else [])
            finite = average_gradients(params, self.dist.world_size, extra=(~finite).float()) == 0
        ok = finite
        if weights:  # clip (or just measure) the weight gradient norm; a non-finite norm flags the step
            clip = self.s.grad_clip if self.s.grad_clip > 0 else float("inf")
            ok = ok & torch.isfinite(nn.utils.clip_grad_norm_(self.weight_params, clip))
        if arch:
            if self.s.arch_grad_clip > 0:
                nn.utils.clip_grad_norm_(self.arch_params, self.s.arch_grad_clip)
            for p in self.arch_params:
                if p.grad is not None:
                    ok = ok & torch.isfinite(p.grad).all()
        return ok

    def _step_unless_skipped(self, optimizers, ok: torch.Tensor) -> torch.Tensor:
        """Steps ``optimizers`` and returns 0, or (skip mode, a non-finite step) leaves them and returns 1."""
        # `stop` defers the check to the next host transfer (no extra sync);
        # `skip` must decide now, at the cost of one synchronisation per step.
        if self.s.on_nonfinite == "skip" and not bool(ok):
            return torch.ones((), dtype=torch.long, device=ok.device)
        for opt in optimizers:
            opt.step()
        return torch.zeros((), dtype=torch.long, device=ok.device)

    def sample(self) -> ArchSample:
        """One sample at the current tau, its logit gradient by the configured estimator (``search.estimator``)."""
        return self.supernet.architecture.sample(self.supernet.mode, self.supernet.tau, **self._estimator)

    def weight_step(self, x: torch.Tensor, y: torch.Tensor, sample: ArchSample | None = None):
        """One SGD step on the weights; returns (loss, correct, finite flag, skipped) as tensors."""
        self._train_weights(True)
        sample = sample or self.sample()
        loss, correct = self._forward(x, y, sample.detach(), amp=self.amp)  # the logits learn nothing here
        self.weight_opt.zero_grad(set_to_none=True)
        ok = self._backward(loss, weights=True, arch=False)
        return loss.detach(), correct, ok, self._step_unless_skipped([self.weight_opt], ok)

    def arch_step(self, x: torch.Tensor, y: torch.Tensor, sample: ArchSample | list[ArchSample] | None = None):
        """One Adam step on the logits in float32 (even with amp); the weights get no gradient (backward skips them).

        ``sample`` may be a list of M samples (``search.arch_samples``): each runs on the whole
        batch and the step follows their mean loss, so the part of the logit gradient's variance
        that comes from which ops were sampled falls by M, for M forward and backward passes.
        (Splitting the batch into M chunks, one sample each, costs one pass but was measured to
        leave that variance as it was: tests/test_arch_samples.py, docs/search_quality.md.)
        """
        self._train_weights(False)
        samples = sample if isinstance(sample, list) else [sample or self.sample()]
        losses, corrects = [], []
        for one in samples:
            one_loss, one_correct = self._forward(x, y, one)
            if self.cost is not None:  # FLOPs / params / latency term, differentiable through the sample
                one_loss = self.cost.loss(one_loss, one)
            losses.append(one_loss)
            corrects.append(one_correct)
        # One sample: its loss and count as they are; M samples: their means (the count a float).
        loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
        correct = corrects[0] if len(corrects) == 1 else torch.stack(corrects).float().mean()
        self.arch_opt.zero_grad(set_to_none=True)
        ok = self._backward(loss, weights=False, arch=True)
        return loss.detach(), correct, ok, self._step_unless_skipped([self.arch_opt], ok)

    def joint_step(self, x: torch.Tensor, y: torch.Tensor, sample: ArchSample | None = None):
        """Single level (SNAS): one sample, one backward, both optimizers step (float32: it trains the logits)."""
        self._train_weights(True)
        sample = sample or self.sample()
        loss, correct = self._forward(x, y, sample)
        if self.cost is not None:
            loss = self.cost.loss(loss, sample)
        self.weight_opt.zero_grad(set_to_none=True)
        self.arch_opt.zero_grad(set_to_none=True)
        ok = self._backward(loss, weights=True, arch=True)
        return loss.detach(), correct, ok, self._step_unless_skipped([self.weight_opt, self.arch_opt], ok)

    def exported_genotype(self, probabilities: dict[str, torch.Tensor] | None = None):
        """The genotype ``genotype.yaml`` gets now: the supernet's selection once a ``search.select`` other than
        ``logits`` has finished, else the derivation of the current logits (``logits_genotype``)."""
        return self._selected if self._selected is not None else self.logits_genotype(probabilities)

    def logits_genotype(self, probabilities: dict[str, torch.Tensor] | None = None):
        """The derivation of the current logits (rule, exclusions, caps)."""
        return self.derive(self.supernet.architecture.derivation_scores(probabilities))

    def select_by_op_marginals(self) -> dict:
        """Measures every candidate op's marginal accuracy on the val split (``nas.engine.selection``) and
        makes the genotype the space's rule derives from them the exported one; returns the mean table."""
        table = self.op_marginal_table(self.seed)
        self._selected = self.derive(selection.marginal_scores(table, self.supernet.architecture))
        return table

    def select_by_local_search(self, table: dict) -> dict:
        """Coordinate ascent on the supernet's val accuracy of whole cells from the cell of an op-marginal
        ``table`` (``nas.engine.selection.local_search``); makes its end the exported genotype, returns its record."""
        arch = self.supernet.architecture
        scores = selection.marginal_scores(table, arch)
        genotype, record = selection.local_search(
            lambda g: self.evaluate(self.data.val_eval, g)[1], self.derive, self.space.genotype_edges, scores,
            selection.candidate_columns(arch, self._never_derived()), arch.op_names, self.s.select_sweeps)
        self._selected = genotype
        return {"start": self.space.format(self.derive(scores)), **record}

    def select_by_proxy_top(self) -> dict:
        """The supernet's most accurate of the ``search.select_top`` cells the zero-cost proxy
        ``search.select_proxy`` ranks highest among ``search.select_pool`` (``nas.engine.selection.proxy_top``);
        makes it the exported genotype, returns its record."""
        s, arch = self.s, self.supernet.architecture
        columns = selection.candidate_columns(arch, self._never_derived())
        shapes = {group: tuple(t.shape) for group, t in arch.logits.items()}
        cells = selection.candidate_cells(self.derive, self.space.genotype_edges, columns, shapes,
                                          s.select_pool, self.seed)
        genotype, judged = selection.proxy_top(lambda g: self.evaluate(self.data.val_eval, g)[1],
                                               self._proxy_score, cells, s.select_top)
        self._selected = genotype
        return {"proxy": s.select_proxy, "pool": len(cells), "val_acc": max(j["val_acc"] for j in judged),
                "proxy_rank": next(k for k, j in enumerate(judged) if j["genotype"] is genotype) + 1,
                "judged": [{"genotype": self.space.format(j["genotype"]), "proxy": j["proxy"],
                            "val_acc": round(j["val_acc"], 4)} for j in judged]}

    def _proxy_score(self, genotype: Any) -> float:
        """``search.select_proxy`` of the genotype's stand-alone network at a fixed initialisation (CPU)."""
        with torch.random.fork_rng(devices=[]):  # the training's random streams are untouched
            torch.manual_seed(PROXY_INIT_SEED)
            network = self.build_network(genotype)
        shape = (1, self.data.in_channels, self.data.image_size, self.data.image_size)
        return zero_cost.ZERO_COST[self.s.select_proxy](network, torch.zeros(shape), torch.zeros(1, dtype=torch.long),
                                                        keep=False)  # built to be scored: no copy

    def op_marginal_table(self, seed: int) -> dict:
        """Mean marginal accuracy on the val split of every derivable candidate op of every edge
        (``nas.engine.selection``; ``search.select_samples`` architectures per op, drawn from ``seed``)."""
        arch = self.supernet.architecture
        columns = selection.candidate_columns(arch, self._never_derived())

        def accuracy(edges: list[tuple[str, int, str]]) -> float:
            return self._evaluate(self.data.val_eval, self.supernet.genotype_sample(edges))[1]

        marginals = selection.op_marginals(accuracy, arch, columns, self.s.select_samples, seed)
        return selection.marginal_table(marginals, columns, arch.op_names)

    def evaluate(self, loader: TensorLoader, genotype: Any = None) -> tuple[float, float]:
        """Loss and accuracy (%) over a loader of a genotype's network run on the supernet's shared weights.

        Each edge runs exactly the genotype's ops, summed (``Supernet.genotype_sample``); edges the
        genotype drops contribute zeros. PC-DARTS edge coefficients are not applied: the genotype has none.

        Args:
            loader: The batches (``data.val_eval`` in the search).
            genotype: The space's genotype; None: ``exported_genotype()``.
        """
        genotype = self.exported_genotype() if genotype is None else genotype
        return self._evaluate(loader, self._genotype_sample(genotype))

    def _genotype_sample(self, genotype: Any) -> ArchSample:
        """The sample that runs exactly ``genotype``'s ops on the supernet (for evaluation and its cost)."""
        return self.supernet.genotype_sample(self.space.genotype_edges(genotype))

    def evaluate_supernet(self, loader: TensorLoader) -> tuple[float, float]:
        """Loss and accuracy (%) of the soft supernet: every op weighted by softmax(logits), edge coefficients applied."""
        return self._evaluate(loader, self.supernet.architecture.derive("darts"))

    def _evaluate(self, loader: TensorLoader, sample: ArchSample) -> tuple[float, float]:
        # Every BN with batch statistics: running averages over sampled architectures fit none of them
        # (see nas.layers.batch_statistics); the running statistics themselves are left as they are.
        self.supernet.eval()
        try:
            with batch_statistics(self.supernet):
                result = evaluate_classifier(lambda x: self.supernet.forward_sample(x, sample), loader.epoch(0),
                                             loader.device, self.dist)
        finally:
            self.supernet.train()
        return result.loss, result.top1

    # ----------------------------------------------------------------- epochs
    def train_epoch(self, epoch: int) -> dict:
        """Runs (the rest of) one epoch and returns its metrics."""
        s, arch = self.s, self.supernet.architecture
        tau = tau_at(s.tau_schedule, epoch, s.epochs, s.tau_max, s.tau_min)
        self.supernet.tau = tau
        self.scheduler.step(epoch)
        self.supernet.train()
        search_arch = epoch >= s.warmup_epochs
        bilevel = search_arch and s.bilevel
        # SDARTS-RS perturbs only a weight step's sample (single level has none of its own).
        sdarts_epsilon = epsilon_at(epoch, s.epochs, s.sdarts_epsilon) if (bilevel or not search_arch) else 0.0
        if s.aux_skip:  # DARTS-: beta decays linearly from 1 to 0 over the search
            beta = max(0.0, 1.0 - epoch / max(1, s.epochs - 1))
            for layer in self.choice_layers:
                layer.skip_beta = beta
        device = self.data.train.device
        epoch_sums = self.epoch_sums(_SUMS, ("seen", "arch_seen", "skipped"), device)
        sums, counts = epoch_sums.sums, epoch_sums.counts
        start = self.step
        val_batches = self.data.val.cycle(epoch, start=start if bilevel else 0)
        pending = torch.zeros((), dtype=torch.long, device=device)  # previous iteration's non-finite flag
        bar = self.progress_bar(self.data.train.epoch(epoch, start=start), epoch, len(self.data.train), s.progress)
        for step, (x, y) in enumerate(bar, start=start):
            saved_stats = [b.clone() for b in self._bn_stats] if s.on_nonfinite == "skip" else None
            samples, carried = arch.sample_many(self.supernet.mode, tau, 1 + s.arch_samples if bilevel else 1,
                                                carry=pending, sdarts_epsilon=sdarts_epsilon, **self._estimator)
            if carried[0]:
                raise self.diverged(epoch, step - 1, flags=carried[0])
            if search_arch and not s.bilevel:
                loss, correct, ok, skipped = self.joint_step(x, y, samples[0])
            else:
                loss, correct, ok, skipped = self.weight_step(x, y, samples[0])
            # A skipped step (skip mode: its decision is already on the host) adds nothing to the sums,
            # so the epoch's metrics stay finite.
            if not (s.on_nonfinite == "skip" and bool(skipped)):
                sums["loss"] += loss * y.numel()
                sums["correct"] += correct
                counts["seen"] += y.numel()
            if bilevel:
                xv, yv = next(val_batches)
                arch_samples = samples[1] if s.arch_samples == 1 else samples[1:]
                arch_loss, arch_correct, arch_ok, arch_skipped = self.arch_step(xv, yv, arch_samples)
                if not (s.on_nonfinite == "skip" and bool(arch_skipped)):
                    sums["arch_loss"] += arch_loss * yv.numel()
                    sums["arch_correct"] += arch_correct
                    counts["arch_seen"] += yv.numel()
                skipped = skipped + arch_skipped
            if s.on_nonfinite == "skip":
                counts["skipped"] += int(skipped)  # already synchronised by the skip decision
                if int(skipped):  # the iteration leaves no trace, BN running statistics included
                    for stat, old in zip(self._bn_stats, saved_stats):
                        stat.copy_(old)
            else:
                pending = (~ok).long() * self.WEIGHT_STEP
                if bilevel:
                    pending = (pending | (~arch_ok).long() * self.ARCH_STEP
                               | (~torch.isfinite(arch_loss)).long() * self.ARCH_LOSS)
            self.step = step + 1
            self.checkpoint_in_epoch(
                epoch, len(self.data.train), device, diverged=lambda: self._raise_if_pending(epoch, pending), bar=bar,
                partial=epoch_sums.partial)
        bar.close()
        self._raise_if_pending(epoch, pending)
        self.step = 0
        shrink_started = time.perf_counter()
        dropped, shrink_marginals = self._shrink(epoch)
        shrink_time = time.perf_counter() - shrink_started
        # The epoch's one sync for the running sums (under torchrun: summed over every rank's shard).
        totals, counts = epoch_sums.totals(self.dist, summed_counts=("seen", "arch_seen"))
        if self.dist.enabled:
            distribute_bn(self.supernet, self.dist.world_size, reduce=True)  # BN running stats: mean over shards
        metrics = self._epoch_metrics(epoch, tau, totals, counts, epoch_sums.elapsed() - shrink_time)
        if self.s.shrink_every > 0:
            metrics["candidates"] = shrinking.candidates(self.supernet.architecture)
            if dropped is not None:
                metrics["dropped"] = dropped
            if shrink_marginals is not None:  # search.shrink_by=op_marginals: what the drops were ranked by
                metrics["shrink_marginals"] = shrink_marginals
                metrics["shrink_time"] = shrink_time  # not in epoch_time, which is training
        return metrics

    def _shrink(self, epoch: int) -> tuple[dict | None, dict | None]:
        """Progressive shrinking (``nas.sampling.shrinking``) at the end of epoch ``epoch`` (0-based) when due:
        ``(group -> dropped op names, the op-marginal table it ranked by)``; ``(None, None)`` when not due,
        the table None when the logits rank (``search.shrink_by``)."""
        s, arch = self.s, self.supernet.architecture
        if not shrinking.shrink_due(epoch + 1, s.shrink_every, s.shrink_start):
            return None, None
        table = scores = None
        if s.shrink_by == "op_marginals":
            columns = selection.candidate_columns(arch, self._never_derived())
            if any(len(c) > s.shrink_to for per_edge in columns.values() for c in per_edge):  # something to rank
                # each drop draws its own architectures (seeded by the epoch), so a resumed run drops the same ops
                table = self.op_marginal_table(self.seed + epoch + 1)
                scores = selection.marginal_scores(table, arch)
        return shrinking.shrink(arch, s.shrink_to, sorted(self._never_derived()), scores), table

    def _never_derived(self) -> set[str]:
        """Op names derivation never picks: ``derive_exclude`` and the ops the space's rule never derives."""
        if self._never_derived_ops is None:
            shapes = {g: tuple(l.shape) for g, l in self.supernet.architecture.logits.items()}
            self._never_derived_ops = set(self.derive_exclude) | settling.underivable_ops(self.space, shapes,
                                                                                           self.derivation)
        return self._never_derived_ops

    def _raise_if_pending(self, epoch: int, pending: torch.Tensor) -> bool:
        """Raises ``RunDiverged`` for the last step if its non-finite flag is set (one sync); else False."""
        flags = int(pending)
        if flags:
            raise self.diverged(epoch, self.step - 1, flags=flags)
        return False

    def _epoch_metrics(self, epoch: int, tau: float, totals: dict, counts: dict, elapsed: float) -> dict:
        s = self.s
        if counts["seen"] == 0:  # skip mode skipped every weight step: nothing was learned
            raise self.diverged(epoch, what="loss or gradient (every weight step was skipped)")
        probs = self.supernet.architecture.probabilities()
        entropy = self.supernet.architecture.entropy()
        metrics: dict[str, Any] = {
            "epoch": epoch + 1, "tau": tau, "lr": self.weight_opt.param_groups[0]["lr"],
            "train_loss": totals["loss"] / counts["seen"], "train_acc": 100.0 * totals["correct"] / counts["seen"],
        }
        if counts["arch_seen"]:
            metrics["arch_loss"] = totals["arch_loss"] / counts["arch_seen"]
            metrics["arch_acc"] = 100.0 * totals["arch_correct"] / counts["arch_seen"]
        if s.on_nonfinite == "skip":
            metrics["skipped_steps"] = counts["skipped"]
        genotype = logits_genotype = self.logits_genotype(probs)
        if s.select != "logits" and epoch + 1 == s.epochs:  # the final choice: by the supernet's accuracy
            started = time.perf_counter()
            if s.select == "proxy_top":
                metrics["proxy_top"] = self.select_by_proxy_top()
            else:
                metrics["op_marginals"] = self.select_by_op_marginals()
            if s.select == "local_search":
                metrics["local_search"] = self.select_by_local_search(metrics["op_marginals"])
            metrics["selection_time"] = time.perf_counter() - started  # not in epoch_time, which is training
            metrics["logits_genotype"] = self.space.format(logits_genotype)
            genotype = self._selected
        if self.cost is not None:  # the cost of the exported genotype
            metrics["derived_cost"] = self.cost.derived_cost(self._genotype_sample(genotype))
        if epoch + 1 == s.epochs or (s.eval_every and (epoch + 1) % s.eval_every == 0):
            # val_*: the exported genotype on the shared weights; supernet_val_*: the soft mixture trained in snas/darts.
            metrics["val_loss"], metrics["val_acc"] = self.evaluate(self.data.val_eval, genotype)
            if self.supernet.mode != "gdas":
                metrics["supernet_val_loss"], metrics["supernet_val_acc"] = self.evaluate_supernet(self.data.val_eval)
        metrics["genotype"] = self.space.format(genotype)
        metrics["probabilities"] = {g: [[round(v, 5) for v in row] for row in p.tolist()] for g, p in probs.items()}
        metrics["entropy"] = {g: [round(v, 5) for v in e.tolist()] for g, e in entropy.items()}
        metrics["settling"] = self._settling(logits_genotype, metrics["probabilities"], epoch)  # the logits' settling
        if self.benchmark is not None:  # the benchmark's accuracies of the derived cell (trained from scratch)
            metrics["benchmark"] = self.benchmark.lookup(metrics["genotype"])
        edges = self.supernet.architecture.edge_coefficients()
        if edges is not None:
            metrics["edge_coefficients"] = {g: [round(v, 5) for v in w.tolist()] for g, w in edges.items()}
        metrics["epoch_time"] = elapsed
        return metrics

    def _settling(self, genotype: Any, probabilities: dict[str, list], epoch: int) -> dict:
        """The epoch's settling record (``nas.settling``), continuing the previous epoch's."""
        derived = settling.derived_ops(self.space, genotype, {g: len(rows) for g, rows in probabilities.items()})
        previous = self.history[-1].get("settling") if self.history else None
        return settling.settling_record(probabilities, derived, self.space.op_names, epoch + 1, previous,
                                        self.s.settle_probability, self.s.settle_epochs_fraction,
                                        sorted(self._never_derived()))

    def describe_epoch(self, m: dict) -> str:
        """One line of losses, accuracies, mean entropy and training time, then the current genotype.

        ``val (genotype)`` is the exported genotype on the shared weights; ``val (soft supernet)``
        (snas/darts) the softmax-weighted supernet.
        """
        parts = [f"epoch {m['epoch']:>3}/{self.s.epochs}", f"tau {m['tau']:.3f}",
                 f"train {m['train_loss']:.3f} / {m['train_acc']:5.1f}%"]
        if "arch_acc" in m:
            parts.append(f"arch {m['arch_loss']:.3f} / {m['arch_acc']:5.1f}%")
        if "val_acc" in m:
            parts.append(f"val (genotype) {m['val_loss']:.3f} / {m['val_acc']:5.1f}%")
        if "supernet_val_acc" in m:
            parts.append(f"val (soft supernet) {m['supernet_val_loss']:.3f} / {m['supernet_val_acc']:5.1f}%")
        mean_entropy = sum(sum(e) for e in m["entropy"].values()) / sum(len(e) for e in m["entropy"].values())
        parts.append(f"entropy {mean_entropy:.3f}")
        if "settling" in m:
            parts.append(settling.describe(m["settling"]))
        if "candidates" in m:
            counts = [c for per_edge in m["candidates"].values() for c in per_edge]
            parts.append(f"candidates {min(counts)}-{max(counts)}/edge")
        if "derived_cost" in m and self.cost is not None:  # the cost model's figure for the derived genotype
            parts.append(f"cost {m['derived_cost']:.4g} {self.cost.tables.metric}")
        parts.append(f"{m['epoch_time']:.1f}s")
        line = "  ".join(parts) + f"\n    {m['genotype']}"
        if "local_search" in m:  # search.select=local_search chose the cell above
            ls = m["local_search"]
            line += (f"  (selected by local search on the supernet from the op-marginal cell {ls['start']}: "
                     f"{len(ls['moves'])} moves, val {ls['start_val_acc']:.2f} -> {ls['val_acc']:.2f}%; "
                     f"the logits derive {m['logits_genotype']})")
        elif "proxy_top" in m:  # search.select=proxy_top chose the cell above
            pt = m["proxy_top"]
            line += (f"  (selected by the supernet among the {len(pt['judged'])} of {pt['pool']} cells {pt['proxy']} "
                     f"ranks highest: its #{pt['proxy_rank']}, val {pt['val_acc']:.2f}%; "
                     f"the logits derive {m['logits_genotype']})")
        elif "logits_genotype" in m:  # search.select=op_marginals chose the cell above
            line += f"  (selected by op marginals; the logits derive {m['logits_genotype']})"
        return line

    def schedule_at(self, epoch: int) -> dict[str, float]:
        """The weights' lr and the temperature at zero-based ``epoch`` under the current ``search.epochs``."""
        s = self.s
        return {"lr": self.scheduler._get_lr(epoch)[0],  # what scheduler.step(epoch) will set
                "tau": tau_at(s.tau_schedule, epoch, s.epochs, s.tau_max, s.tau_min)}

    # ----------------------------------------------------------------- state
    def genotype_record(self) -> dict:
        """The current derived genotype with probabilities, as written to ``genotype.yaml``."""
        probs = self.supernet.architecture.probabilities()
        last = self.history[-1] if self.history else {}
        by = next((k for k in ("local_search", "proxy_top") if k in last), "op_marginals")
        selected = {"selected_by": by} if self._selected is not None else {}
        return genotype_record(self.space, self.exported_genotype(probs), probs,
                               mode=self.supernet.mode, derivation=self.derivation or self.space.derivation_rules[0],
                               epoch=self.epoch, **selected, **self._settling_summary(), **self._cost_summary())

    def _cost_summary(self) -> dict:
        """``{"cost": {"metric", "derived_cost"}}``: the cost model's figure for the last derived genotype."""
        if self.cost is None or not self.history or "derived_cost" not in self.history[-1]:
            return {}
        return {"cost": {"metric": self.cost.tables.metric, "derived_cost": self.history[-1]["derived_cost"]}}

    def _settling_summary(self) -> dict:
        """``{"settling": summary line}`` of the last finished epoch (empty before the first)."""
        if not self.history or "settling" not in self.history[-1]:
            return {}
        return {"settling": settling.summary_line(self.history[-1]["settling"], self.history[-1]["epoch"])}

    def state_dict(self) -> dict:
        """Everything needed to continue: weights, logits, optimizers, schedule, RNG states, position, metrics."""
        return {
            "format": 1, "epoch": self.epoch, "step": self.step, "partial": self._partial,
            "tau": self.supernet.tau, "model": self.supernet.state_dict(),
            "weight_optimizer": self.weight_opt.state_dict(), "arch_optimizer": self.arch_opt.state_dict(),
            "weight_scheduler": self.scheduler.state_dict(),
            "gumbel_generator": self.supernet.architecture.generator.get_state(),
            "rng": rng_state(), "metrics": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores what ``state_dict`` returned."""
        self.supernet.load_state_dict(state["model"])
        self.weight_opt.load_state_dict(state["weight_optimizer"])
        self.arch_opt.load_state_dict(state["arch_optimizer"])
        self.scheduler.load_state_dict(state["weight_scheduler"])
        self.scheduler.t_initial = self.s.epochs  # the cosine follows search.epochs, which a resume may change
        self.supernet.architecture.generator.set_state(state["gumbel_generator"])
        set_rng_state(state["rng"])
        self.epoch, self.step, self._partial = state["epoch"], state.get("step", 0), state.get("partial")
        self.supernet.tau, self.history = state["tau"], list(state["metrics"])
        # a finished selection is kept; a run extended past it selects again at its new end
        last = self.history[-1] if self.history else {}
        self._selected = None
        if ("local_search" in last or "proxy_top" in last) and last["epoch"] == self.s.epochs:
            self._selected = self.space.parse(last["genotype"])
        elif "op_marginals" in last and last["epoch"] == self.s.epochs:
            self._selected = self.derive(selection.marginal_scores(last["op_marginals"], self.supernet.architecture))

    def _write_files(self) -> None:
        save_genotype(self.out_dir / GENOTYPE, self.genotype_record())
