"""Time one search iteration (weight step + arch step) against the discrete network and the official GDAS code.

For each search space (NAS-Bench-201: C=16, N=5; the DARTS search macro: C=16,
N=2, i.e. 8 cells), batch 64 of 32x32 images and 10 classes, it times, with
the variants interleaved round by round so that load from other processes
hits all of them alike:

* ``gdas``, ``snas``, ``darts``: one iteration of the project's bilevel search
  loop on a real supernet, through the real ``Searcher`` methods:
  ``architecture.sample_many`` (both samples, one host transfer, with the
  previous iteration's non-finite flag carried), ``Searcher.weight_step`` on a
  train batch, ``Searcher.arch_step`` on a val batch, and the loop's running
  sums, exactly as ``Searcher.train_epoch`` does them (the data loader's
  batching and augmentation are not timed; the batches are made once).
* ``floor``: the same work on the discrete network of the architecture the
  GDAS sample picks: a weight step (zero_grad, forward, cross-entropy,
  backward, ``clip_grad_norm_(5)``, SGD with the search's settings) on the
  train batch, then forward + cross-entropy + backward on the val batch with
  no weight gradient (``torch.autograd.grad`` w.r.t. the input image only,
  which is the activation-gradient work the arch step needs to reach the
  logits of every cell). NAS-Bench-201: ``space.build_network(genotype, C, N)``
  (affine BN with running statistics, as the benchmark trains it). DARTS: a
  DARTS genotype keeps two inputs per node, so it is ``NetworkCIFAR`` of the
  GDAS-rule derivation of the sample (8 of the sample's 14 edges per cell).
* ``path``: the same work as ``floor`` on the supernet's own sampled op
  modules, every choice layer replaced by its sampled op (same BN settings,
  same cell code, same edge count): the floor without any supernet machinery.
* ``official``: (NAS-Bench-201 only, when ``xautodl`` is installed) the
  official GDAS ``TinyNetworkGDAS`` driven like ``search_func`` of
  ``exps/NAS-Bench-201-algos/GDAS.py``: zero_grad, forward, CE, backward,
  ``clip_grad_norm_(network.parameters(), 5)``, SGD step; then zero_grad,
  forward on the val batch, CE, backward, Adam step. Its cells use
  ``affine=False, track_running_stats=False`` (the script's BN=0 setting), as
  this project's supernet does.

Every variant runs the same architecture: the first GDAS sample of the seeded
supernet is pinned by setting the logits to ``PIN_GAP`` at the sampled op and 0
elsewhere (ours and the official model's), larger than the spread of any
Gumbel noise, so every draw (still made, every iteration) picks it again.
Without the pin, iterations of different samples differ by up to about 3x
(NAS-Bench-201 seeds 0-2 pick cells costing 0.47-1.34 s per gdas iteration on
one CPU thread), which would swamp the ratios.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over one iteration
(reset before it), minus what was allocated at its start, plus the variant's
own persistent tensors (parameters, buffers, gradients, optimizer state). On
the CPU there is no allocator statistic, so one extra iteration runs under
``torch.profiler`` with ``profile_memory=True``: the running sum of its
allocation and free events gives the high-water mark of tensor bytes
allocated during the iteration (gradients left from the previous iteration are
re-allocated inside the window so that their frees count), to which the
persistent tensors are added. Memory that oneDNN or other libraries allocate
outside PyTorch's allocator is not seen.

Reported per variant: the median iteration time (and quartiles, best, and the
medians of its weight and arch steps) over the timed rounds, after warm-up;
ratios are medians over rounds of the per-round ratio (both variants ran in
that round, so the load of other processes largely cancels) and best/best.

Usage::

    python benchmarks/step_time.py                      # CPU, 2 threads, both spaces
    python benchmarks/step_time.py --spaces nb201 --channels-last --json out.json
    python benchmarks/step_time.py --device cuda --json gpu.json

The markdown table goes to stdout, progress to stderr; ``--json PATH`` also
writes every number (raw per-iteration times included) to PATH. Without
``--json`` nothing is written.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without an install
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import search_spaces  # noqa: E402
from nas.layers.choice import ChoiceLayer  # noqa: E402
from nas.config import SearchConfig  # noqa: E402
from nas.data import build_search_data, make_synthetic  # noqa: E402
from nas.engine.search import Searcher  # noqa: E402

from benchmarks.official import build_official, import_official, official_optimizers, official_step  # noqa: E402

SPACE_N = {"nb201": 5, "darts": 2}  # cells per stage: NB201's 5, DARTS search's 2 (8 cells)
MODES = ("gdas", "snas", "darts")
VARIANTS = MODES + ("floor", "path", "official")
DEFAULT_VARIANTS = ("gdas", "snas", "darts", "floor", "path", "official")
SOFT = ("snas", "darts")
# Logit of the pinned op minus the others. Gumbel noise of the project's sampler lies in
# about [-4.5, 16.7] and the official's (-log of an exponential draw) in about [-2.9, 16.7],
# so a gap of 30 is never overturned; exp(-30 / tau) stays a normal float32 for tau >= 1.
PIN_GAP = 30.0
TAU = 10.0  # GDAS's initial temperature (the compute does not depend on it)
CL = "+cl"  # suffix of a channels_last variant
MIN_ROUNDS = 3  # --max-seconds never cuts a space below this many timed rounds


# --------------------------------------------------------------------------- timing helpers

class Clock:
    """Marks points of an iteration; CUDA events on a GPU, ``perf_counter`` on the CPU.

    ``mark()`` only records (no synchronisation), so timing does not change
    the overlap of host and device; ``read()`` synchronises once and returns
    the milliseconds between consecutive marks.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.points: list = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.points.append(event)
        else:
            self.points.append(time.perf_counter())

    def read(self) -> list[float]:
        if self.cuda:
            self.points[-1].synchronize()
            spans = [a.elapsed_time(b) for a, b in zip(self.points, self.points[1:])]
        else:
            spans = [1000.0 * (b - a) for a, b in zip(self.points, self.points[1:])]
        self.points = []
        return spans


def _unique_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        storage = t.untyped_storage()
        key = (t.device, storage.data_ptr())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


@contextlib.contextmanager
def _quiet_stderr():
    """Silences fd 2 (the profiler's C++ log lines) and replays it if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# --------------------------------------------------------------------------- variants

@dataclass
class Variant:
    """One thing to time: a closure running one iteration, and what it keeps between iterations.

    Attributes:
        name: Row name (``gdas``, ``floor``, ``official+cl``, ...).
        run: Runs one iteration, calling ``mark`` at its start, between its two steps and at its end.
        persistent: Returns the tensors it keeps between iterations: parameters, buffers,
            gradients, optimizer state (for the memory figure).
        grads: Returns the parameters whose ``.grad`` may survive an iteration.
        note: What the row is, for the JSON.
        times: ``[total, weight step, arch step]`` milliseconds of each timed iteration.
        peak_bytes, persistent_bytes: Filled in by ``measure_memory``.
    """

    name: str
    run: Callable[[Callable[[], None]], None]
    persistent: Callable[[], list[torch.Tensor]]
    grads: Callable[[], list[nn.Parameter]]
    note: str = ""
    times: list[list[float]] = field(default_factory=list)  # [total, weight, arch] per iteration
    peak_bytes: int | None = None
    persistent_bytes: int | None = None


def _state_tensors(modules: Iterable[nn.Module], optimizers: Iterable[torch.optim.Optimizer]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for m in modules:
        out += [p for p in m.parameters()] + [b for b in m.buffers()]
        out += [p.grad for p in m.parameters() if p.grad is not None]
    for opt in optimizers:
        for state in opt.state.values():
            out += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return out


def _prime_momentum(params: list[nn.Parameter], opt: torch.optim.Optimizer) -> None:
    """Gives every parameter its optimizer state, as a real search has after its first epoch.

    With the architecture pinned, the unsampled ops would never get a momentum
    buffer, and the supernet's memory would look smaller than in a search.
    """
    saved = [p.grad for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        lrs = [g["lr"] for g in opt.param_groups]
        for g in opt.param_groups:
            g["lr"] = 0.0  # state only: the weights do not move
        opt.step()
        for g, lr in zip(opt.param_groups, lrs):
            g["lr"] = lr
    for p, g in zip(params, saved):
        p.grad = g


def _pin(logits: torch.Tensor, indices: list[int]) -> None:
    with torch.no_grad():
        logits.zero_()
        rows = torch.arange(len(indices), device=logits.device)
        logits[rows, torch.tensor(indices, device=logits.device)] = PIN_GAP


def _to_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def searcher_variant(name: str, space, mode: str, args, batches, indices: dict[str, list[int]] | None,
                     device: torch.device, channels_last: bool) -> Variant:
    """One iteration of the project's bilevel search loop in ``mode``."""
    torch.manual_seed(args.seed)
    supernet = space.build_supernet(mode=mode, num_classes=args.classes, C=args.C, N=args.N[space.name])
    supernet = supernet.to(device)
    if channels_last:
        supernet = supernet.to(memory_format=torch.channels_last)
    data = batches["data"]
    searcher = Searcher(supernet, space, data, SearchConfig(), seed=args.seed, out_dir=None, log=lambda m: None)
    if mode == "gdas":
        for group, logits in supernet.architecture.logits.items():
            _pin(logits, indices[group])
    _prime_momentum(searcher.weight_params, searcher.weight_opt)
    supernet.train()
    supernet.tau = TAU
    x, y = (_to_format(batches["x"], channels_last), batches["y"])
    xv, yv = (_to_format(batches["xv"], channels_last), batches["yv"])
    arch = supernet.architecture
    sums = {k: torch.zeros((), device=device) for k in ("loss", "correct", "arch_loss", "arch_correct")}
    state = {"pending": torch.zeros((), dtype=torch.long, device=device)}

    def run(mark):
        # The body of Searcher.train_epoch for one bilevel step (no checkpointing, no progress bar).
        mark()
        samples, carried = arch.sample_many(mode, TAU, 2, carry=state["pending"])
        if carried[0]:
            raise RuntimeError(f"{name}: non-finite loss or gradient in the benchmark")
        loss, correct, ok, skipped = searcher.weight_step(x, y, samples[0])
        sums["loss"] += loss * y.numel()
        sums["correct"] += correct
        mark()
        arch_loss, arch_correct, arch_ok, arch_skipped = searcher.arch_step(xv, yv, samples[1])
        sums["arch_loss"] += arch_loss * yv.numel()
        sums["arch_correct"] += arch_correct
        state["pending"] = (~(ok & arch_ok)).long()
        mark()

    return Variant(name, run, lambda: _state_tensors([supernet], [searcher.weight_opt, searcher.arch_opt]),
                   lambda: list(supernet.parameters()),
                   note=f"Searcher.weight_step + arch_step, {mode} supernet, bilevel")


class _Fixed(nn.Module):
    """Stands in for a choice layer: runs its sampled op and ignores the sample."""

    def __init__(self, op: nn.Module):
        super().__init__()
        self.op = op

    def forward(self, x, weights=None, index=None):
        return self.op(x)


class _SampledPath(nn.Module):
    """A copy of a supernet with each choice layer replaced by its sampled op."""

    def __init__(self, supernet, sample):
        super().__init__()
        generator, supernet.architecture.generator = supernet.architecture.generator, None
        try:  # the sampler's generator is not needed (the sample is fixed) and may not deep-copy (CUDA)
            self.net = copy.deepcopy(supernet)
        finally:
            supernet.architecture.generator = generator
        picked: dict[int, int] = {}
        hooks = [m.register_forward_pre_hook(lambda m, a: picked.__setitem__(id(m), a[2]))
                 for m in self.net.modules() if isinstance(m, ChoiceLayer)]
        self.sample = sample.detach()
        with torch.no_grad():
            self.net.forward_sample(torch.zeros(2, self.net_in_channels(), 8, 8, device=self.device()), self.sample)
        for h in hooks:
            h.remove()
        for parent in list(self.net.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, ChoiceLayer):
                    setattr(parent, child_name, _Fixed(child.ops[picked[id(child)]]))
        self.net.architecture.requires_grad_(False)

    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def net_in_channels(self) -> int:
        first = next(m for m in self.net.modules() if isinstance(m, nn.Conv2d))
        return first.in_channels

    def forward(self, x):
        return self.net.forward_sample(x, self.sample)

    def weights(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]


def discrete_variant(name: str, net: nn.Module, params: list[nn.Parameter], batches, device, channels_last,
                     note: str) -> Variant:
    """Weight step + (forward, backward to the input without weight gradients) on a plain network."""
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    s = SearchConfig()
    opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov, weight_decay=s.weight_decay)
    x, y = _to_format(batches["x"], channels_last), batches["y"]
    xv, yv = _to_format(batches["xv"], channels_last), batches["yv"]

    def run(mark):
        mark()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(params, s.grad_clip)
        opt.step()
        mark()
        xin = xv.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(net(xin), yv), xin)  # no weight gradient is computed
        mark()

    return Variant(name, run, lambda: _state_tensors([net], [opt]), lambda: list(net.parameters()), note=note)


def official_variant(name: str, args, batches, indices: list[int], device, channels_last) -> Variant | None:
    """The official GDAS NAS-Bench-201 supernet, stepped like its ``search_func``; None without xautodl."""
    if import_official() is None:
        return None
    torch.manual_seed(args.seed)
    # affine=False, track_running_stats=False in the cells: the script's BN=0 setting, as this project's supernet.
    net = build_official(args.C, args.N["nb201"], args.classes).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    _pin(net.arch_parameters, indices)
    net.set_tau(TAU)
    # GDAS.config: SGD 0.025, momentum 0.9, nesterov, wd 5e-4 on get_weights(); Adam (0.5, 0.999), wd 1e-3.
    w_opt, a_opt = official_optimizers(net, SearchConfig())
    _prime_momentum(net.get_weights(), w_opt)
    net.train()
    x, y = _to_format(batches["x"], channels_last), batches["y"]
    xv, yv = _to_format(batches["xv"], channels_last), batches["yv"]

    def run(mark):
        official_step(net, w_opt, a_opt, x, y, xv, yv, mark=mark)

    return Variant(name, run, lambda: _state_tensors([net], [w_opt, a_opt]), lambda: list(net.parameters()),
                   note="xautodl TinyNetworkGDAS, GDAS.py search_func step (BN0)")


# --------------------------------------------------------------------------- building a space's variants

def make_batches(args, device: torch.device) -> dict:
    """Synthetic 32x32 images through the project's own search split and loaders; one batch of each kind."""
    images = make_synthetic(size=4 * args.batch, num_classes=args.classes, image_size=args.image_size,
                            seed=args.seed)
    data = build_search_data(images, 0.5, args.batch, augment=True, seed=args.seed, device=device)
    x, y = next(data.train.epoch(0))
    xv, yv = next(data.val.epoch(0))
    return {"data": data, "x": x, "y": y, "xv": xv, "yv": yv}


def pinned_sample(space, args, device):
    """The first GDAS sample of the seeded supernet: the architecture every variant runs."""
    torch.manual_seed(args.seed)
    supernet = space.build_supernet(mode="gdas", num_classes=args.classes, C=args.C, N=args.N[space.name]).to(device)
    supernet.architecture.seed(args.seed)
    sample = supernet.architecture.sample("gdas", TAU)
    return supernet, sample


def build_variants(space_name: str, args, device: torch.device) -> tuple[list[Variant], dict, list[str]]:
    """Every requested variant of a space, contiguous and (if asked) channels_last.

    Returns:
        ``(variants, info, notes)``: the variants in row order, the pinned
        architecture, and notes for the table (e.g. a skipped official column).
    """
    space = search_spaces.get(space_name)
    batches = make_batches(args, device)
    supernet, sample = pinned_sample(space, args, device)
    indices = sample.indices
    one_hot = {g: w.detach().cpu() for g, w in sample.coefficients.items()}
    if space_name == "nb201":
        genotype = space.derive_genotype(one_hot)
        floor_note = "space.build_network(sampled genotype): the NAS-Bench-201 network"
    else:
        genotype = space.derive_genotype(one_hot, "gdas")
        floor_note = "NetworkCIFAR of the GDAS-rule derivation of the sample (2 inputs per node)"
    info = {"sampled_indices": indices, "genotype": space.format(genotype),
            "sampled_ops": {g: [space.op_names[k] for k in idx] for g, idx in indices.items()}}
    notes: list[str] = []
    formats = [False, True] if args.channels_last else [False]
    variants: list[Variant] = []
    for channels_last in formats:
        suffix = CL if channels_last else ""
        for name in args.modes:
            label = name + suffix
            if name in MODES:
                variants.append(searcher_variant(label, space, name, args, batches, indices, device, channels_last))
            elif name == "floor":
                torch.manual_seed(args.seed)
                net = space.build_network(genotype, num_classes=args.classes, C=args.C, N=args.N[space_name])
                variants.append(discrete_variant(label, net, list(net.parameters()), batches, device, channels_last,
                                                 floor_note))
            elif name == "path":
                path = _SampledPath(supernet, sample)
                variants.append(discrete_variant(label, path, path.weights(), batches, device, channels_last,
                                                 "the supernet's sampled op modules without choice layers"))
            elif name == "official":
                if space_name != "nb201":
                    continue  # the official GDAS NB201 model only; its DARTS-space model is another script
                v = official_variant(label, args, batches, indices["cell"], device, channels_last)
                if v is None:
                    if not channels_last:
                        notes.append("official GDAS column skipped: xautodl is not installed "
                                     "(pip install --no-deps xautodl==1.0.0)")
                    continue
                variants.append(v)
    return variants, info, notes


# --------------------------------------------------------------------------- measuring

def measure_memory(v: Variant, device: torch.device) -> None:
    """Peak bytes of one iteration: persistent tensors plus the high-water mark of what it allocates."""
    clock = Clock(device)
    mark = clock.mark
    persistent = v.persistent()
    grads = [p for p in v.grads() if p.grad is not None]
    grad_bytes = _unique_bytes(p.grad for p in grads)
    v.persistent_bytes = _unique_bytes(persistent)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        v.run(mark)
        torch.cuda.synchronize(device)
        v.peak_bytes = v.persistent_bytes + torch.cuda.max_memory_allocated(device) - start
    else:
        from torch.profiler import ProfilerActivity, profile
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            for p in grads:  # re-allocated inside the window so that their frees are seen
                p.grad = p.grad.clone()
            v.run(mark)
        events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
        live = peak = 0
        for _, nbytes in events:
            live += nbytes
            peak = max(peak, live)
        v.peak_bytes = v.persistent_bytes - grad_bytes + peak
    clock.read()


def _soft(v: Variant) -> bool:
    return v.name.split("+")[0] in SOFT


def run_space(space_name: str, args, device: torch.device, log: Callable[[str], None]) -> dict:
    """Warms up, times every variant round-robin, measures memory; returns the space's results.

    Rounds stop at ``--repeats``, or earlier once ``--max-seconds`` of timed rounds
    have passed and at least ``MIN_ROUNDS`` are done (keeps the CPU run bounded
    when other processes slow the machine down).
    """
    variants, info, notes = build_variants(space_name, args, device)
    clock = Clock(device)
    log(f"[{space_name}] {len(variants)} variants, architecture {info['genotype']}")
    for r in range(max(args.warmup, args.soft_warmup)):
        for v in variants:
            if r < (args.soft_warmup if _soft(v) else args.warmup):
                v.run(clock.mark)
                clock.read()
    started = time.perf_counter()
    for r in range(args.repeats):
        if args.max_seconds and r >= MIN_ROUNDS and time.perf_counter() - started > args.max_seconds:
            log(f"[{space_name}] --max-seconds {args.max_seconds:g} reached after {r} rounds")
            break
        # Rotate the order each round so that no variant always follows the same one.
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        ran = []
        for v in order:
            if _soft(v) and r >= args.soft_repeats:
                continue
            v.run(clock.mark)
            weight, arch = clock.read()
            v.times.append([weight + arch, weight, arch])
            ran.append(v)
        log(f"[{space_name}] round {r + 1}/{args.repeats} (ms): "
            + ", ".join(f"{v.name} {v.times[-1][0]:.0f}" for v in ran))
    if not args.no_memory:
        for v in variants:
            measure_memory(v, device)
    return {"info": info, "notes": notes, "variants": variants}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def paired_ratio(a: Variant, b: Variant) -> float | None:
    """Median over rounds of a's time / b's time in the same round (both ran in it).

    Pairing by round cancels most of the load other processes put on the
    machine, which moves both variants of a round together.
    """
    n = min(len(a.times), len(b.times))
    if n == 0:
        return None
    return statistics.median(a.times[i][0] / b.times[i][0] for i in range(n))


def best_ratio(a: Variant, b: Variant) -> float | None:
    """a's fastest iteration / b's fastest: what is left when interference only ever adds time."""
    if not a.times or not b.times:
        return None
    return min(t[0] for t in a.times) / min(t[0] for t in b.times)


RATIOS = [  # (numerator, denominator, label)
    ("gdas", "floor", "gdas / floor"),
    ("gdas", "path", "gdas / path"),
    ("path", "floor", "path / floor"),
    ("gdas", "official", "gdas / official (ours / official)"),
    ("official", "floor", "official / floor"),
    ("snas", "gdas", "snas / gdas"),
    ("darts", "gdas", "darts / gdas"),
    ("darts", "snas", "darts / snas"),
]


def summarise(space_name: str, result: dict) -> dict:
    """Medians, quartiles, memory and ratios of a space's variants (JSON-ready)."""
    by_name = {v.name: v for v in result["variants"]}
    rows = []
    for v in result["variants"]:
        totals = [t[0] for t in v.times]
        q1, q3 = _quartiles(totals)
        rows.append({
            "space": space_name, "variant": v.name, "note": v.note, "repeats": len(v.times),
            "iteration_ms": _median(totals), "iteration_q1_ms": q1, "iteration_q3_ms": q3,
            "best_ms": min(totals) if totals else float("nan"),
            "weight_step_ms": _median([t[1] for t in v.times]), "arch_step_ms": _median([t[2] for t in v.times]),
            "peak_mib": None if v.peak_bytes is None else v.peak_bytes / 2**20,
            "persistent_mib": None if v.persistent_bytes is None else v.persistent_bytes / 2**20,
            "times_ms": [[round(t, 3) for t in ts] for ts in v.times],
        })
    ratios = {}
    suffixes = [""] + ([CL] if any(n.endswith(CL) for n in by_name) else [])
    for suffix in suffixes:
        for num, den, label in RATIOS:
            a, b = by_name.get(num + suffix), by_name.get(den + suffix)
            if a is not None and b is not None:
                entry = {"time": paired_ratio(a, b), "time_best": best_ratio(a, b)}
                if a.peak_bytes and b.peak_bytes:
                    entry["memory"] = a.peak_bytes / b.peak_bytes
                ratios[label + (" (channels_last)" if suffix else "")] = entry
    for name, v in by_name.items():  # channels_last against contiguous, same run
        if name.endswith(CL) and name[:-len(CL)] in by_name:
            base = by_name[name[:-len(CL)]]
            entry = {"time": paired_ratio(v, base), "time_best": best_ratio(v, base)}
            if v.peak_bytes and base.peak_bytes:
                entry["memory"] = v.peak_bytes / base.peak_bytes
            ratios[f"{name} / {base.name}"] = entry
    return {"space": space_name, **result["info"], "notes": result["notes"], "rows": rows, "ratios": ratios}


def _fmt(value, spec: str = ".0f") -> str:
    if value is None or value != value:
        return "-"
    if spec == ".0f" and abs(value) < 10:  # tiny runs (tests): keep two significant digits
        spec = ".1f" if abs(value) >= 1 else ".2f"
    return format(value, spec)


def markdown(spaces: list[dict]) -> str:
    """The result tables: one row per variant, then the ratios, per space."""
    lines = []
    for s in spaces:
        floor = {r["variant"].replace("floor", ""): r for r in s["rows"] if r["variant"].startswith("floor")}
        lines += [f"### {s['space']}", "", f"architecture (pinned GDAS sample): `{s['genotype']}`", ""]
        if s["space"] == "darts":
            lines += [f"sampled ops, normal: {', '.join(s['sampled_ops']['normal'])}",
                      f"sampled ops, reduce: {', '.join(s['sampled_ops']['reduce'])}", ""]
        lines += ["| variant | iteration ms (median) | IQR ms | best ms | weight step ms | arch step ms | x floor "
                  "| peak MiB | mem x floor | n |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in s["rows"]:
            suffix = CL if r["variant"].endswith(CL) else ""
            f = floor.get(suffix)
            x_floor = r["iteration_ms"] / f["iteration_ms"] if f else None
            mem_floor = r["peak_mib"] / f["peak_mib"] if f and r["peak_mib"] and f["peak_mib"] else None
            lines.append(f"| {r['variant']} | {_fmt(r['iteration_ms'])} | {_fmt(r['iteration_q1_ms'])}-"
                         f"{_fmt(r['iteration_q3_ms'])} | {_fmt(r['best_ms'])} | {_fmt(r['weight_step_ms'])} | "
                         f"{_fmt(r['arch_step_ms'])} | "
                         f"{_fmt(x_floor, '.2f')} | {_fmt(r['peak_mib'], '.0f')} | {_fmt(mem_floor, '.2f')} | "
                         f"{r['repeats']} |")
        lines += ["", "| ratio | time (median of per-round ratios) | time (best / best) | peak memory |",
                  "|---|---:|---:|---:|"]
        for label, e in s["ratios"].items():
            lines.append(f"| {label} | {_fmt(e.get('time'), '.2f')} | {_fmt(e.get('time_best'), '.2f')} | "
                         f"{_fmt(e.get('memory'), '.2f')} |")
        for note in s["notes"]:
            lines += ["", f"note: {note}"]
        lines.append("")
    return "\n".join(lines)


def environment(args, device: torch.device) -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        xautodl = importlib.metadata.version("xautodl")
    except importlib.metadata.PackageNotFoundError:
        xautodl = None
    return {
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu, "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "xautodl": xautodl,
        "command": " ".join(["python", "benchmarks/step_time.py", *args.argv]),
        "settings": {"batch": args.batch, "image_size": args.image_size, "classes": args.classes, "C": args.C,
                     "N": {name: args.N[name] for name in args.spaces}, "repeats": args.repeats,
                     "warmup": args.warmup, "max_seconds": args.max_seconds,
                     "soft_repeats": args.soft_repeats, "soft_warmup": args.soft_warmup,
                     "channels_last": args.channels_last, "cudnn_benchmark": args.cudnn_benchmark,
                     "seed": args.seed, "pin_gap": PIN_GAP, "tau": TAU},
    }


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def header(env: dict, load_before, load_after) -> str:
    """One line per fact about the machine and the run, for the top of the table."""
    where = env["gpu"] if env["gpu"] else f"{env['cpu']}, {env['logical_cpus']} logical CPUs"
    lines = [f"device: {env['device']} ({where}); torch threads: {env['threads']}; torch {env['torch']}, "
             f"python {env['python']}; xautodl {env['xautodl'] or 'not installed'}"]
    st = env["settings"]
    lines.append(f"batch {st['batch']}, {st['image_size']}x{st['image_size']} images, {st['classes']} classes, "
                 f"C={st['C']}, N (cells per stage)={', '.join(f'{k} {v}' for k, v in st['N'].items())}")
    if load_before is not None:
        lines.append(f"load average (1/5/15 min) before: {load_before}, after: {load_after} "
                     "(other processes on the machine; ratios pair variants within a round)")
        busy = max(load_before[0], load_after[0]) if load_after else load_before[0]
        if env["device"] == "cpu" and env["logical_cpus"] and busy > env["logical_cpus"]:
            # Threads of one parallel region wait for each other; with the cores oversubscribed a
            # descheduled thread stalls every op, so times swing by 2-10x from round to round.
            lines.append(f"WARNING: load average {busy} exceeds the {env['logical_cpus']} CPUs: other processes "
                         "share the cores and the times are unreliable; compare the best column, or rerun with "
                         "--threads 1 or OMP_WAIT_POLICY=PASSIVE")
    return "\n".join(f"- {line}" for line in lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="(default: cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: 2 on the CPU, unchanged on CUDA; 0: unchanged)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed iterations (rounds) per variant (default: 7 on the CPU, 30 on CUDA)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed iterations per variant first (default: 1 on the CPU, 5 on CUDA)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help=f"per space, start no new round after this many seconds of timed rounds once {MIN_ROUNDS} "
                        "are done (default: 90 on the CPU, no limit on CUDA; 0: no limit)")
    p.add_argument("--soft-repeats", type=int, default=None,
                   help="timed iterations of snas/darts, which run every op (5-15x a gdas iteration) "
                        "(default: 1 on the CPU, --repeats on CUDA)")
    p.add_argument("--soft-warmup", type=int, default=None,
                   help="warm-up of snas/darts (default: 0 on the CPU, --warmup on CUDA)")
    p.add_argument("--spaces", default="nb201,darts", help="comma-separated: nb201, darts (default: both)")
    p.add_argument("--modes", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated variants: {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--batch", type=int, default=64, help="images per step (default: 64)")
    p.add_argument("--image-size", type=int, default=32, help="(default: 32)")
    p.add_argument("--classes", type=int, default=10, help="(default: 10)")
    p.add_argument("--C", type=int, default=16, help="initial width (default: 16)")
    p.add_argument("--N", type=int, default=None, help="cells per stage (default: nb201 5, darts 2)")
    p.add_argument("--channels-last", action="store_true",
                   help="also time every variant in channels_last (rows suffixed +cl, interleaved with the others)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True (CUDA)")
    p.add_argument("--seed", type=int, default=0, help="weights, batches and the pinned sample (default: 0)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every number to PATH")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the record of the command
    args.spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for s in args.spaces:
        if s not in SPACE_N:
            p.error(f"unknown space {s!r}; choose from {', '.join(SPACE_N)}")
    for m in args.modes:
        if m not in VARIANTS:
            p.error(f"unknown variant {m!r}; choose from {', '.join(VARIANTS)}")
    cpu = args.device == "cpu"
    if args.repeats is None:
        args.repeats = 7 if cpu else 30
    if args.warmup is None:
        args.warmup = 1 if cpu else 5
    if args.max_seconds is None:
        args.max_seconds = 90.0 if cpu else 0.0
    if args.soft_repeats is None:
        args.soft_repeats = 1 if cpu else args.repeats
    if args.soft_warmup is None:
        args.soft_warmup = 0 if cpu else args.warmup
    if args.repeats < 1 or args.warmup < 0 or args.soft_repeats < 1 or args.soft_warmup < 0:
        p.error("--repeats and --soft-repeats must be >= 1, --warmup and --soft-warmup >= 0")
    args.N = {s: args.N if args.N is not None else n for s, n in SPACE_N.items()}
    return args


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark; prints the markdown table and returns (and optionally writes) the results."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available here")
    threads = args.threads if args.threads is not None else (2 if device.type == "cpu" else 0)
    if threads > 0:
        torch.set_num_threads(threads)
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True  # picks the fastest conv algorithms per shape after a first call
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    started, load_before = time.perf_counter(), _load()
    spaces = [summarise(name, run_space(name, args, device, log)) for name in args.spaces]
    env = {**environment(args, device), "load_average_before": load_before, "load_average_after": _load()}
    results = {"environment": env, "spaces": spaces, "wall_seconds": round(time.perf_counter() - started, 1)}
    print(header(env, load_before, env["load_average_after"]))
    print(markdown(spaces))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
