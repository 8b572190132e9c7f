"""The architecture: every logit of a search, one sample per forward pass.

The logits live here and nowhere else, as ``nn.Parameter``s, so they are in
every ``state_dict``, move with ``.to()``, and checkpointing, broadcasting and
export have one place to look. A decision *group* is one table of logits
``[num_edges, num_ops]``: NB201 has one (``cell``, 6x5) shared by all cells;
DARTS has two (``normal`` and ``reduce``, 14x8 each).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .estimators import STRAIGHT_THROUGH, estimate
from .gumbel import gumbel_softmax_sample
from .sdarts import perturb

MODES = ("gdas", "snas", "darts")


@dataclass
class ArchSample:
    """One architecture sample for a whole forward pass.

    Attributes:
        coefficients: group -> ``[num_edges, num_ops]`` float32 op coefficients: straight-through
            one-hot (``gdas``, and the derived architecture), relaxed Gumbel-softmax
            (``snas``) or softmax (``darts``); differentiable w.r.t. the logits.
        indices: group -> the chosen op of each edge as Python ints (hard samples
            only, else None). Moved to the host once per sample, so the dispatch
            in the choice layers costs no device synchronisation. A genotype's
            sample (``Supernet.genotype_sample``) holds a tuple of op columns per edge.
        edge_coefficients: group -> ``[num_edges]`` PC-DARTS edge-normalisation weights
            (softmax over the edges into each node), or None without edge normalisation.
    """

    coefficients: dict[str, torch.Tensor]
    indices: dict[str, list[int]] | None = None
    edge_coefficients: dict[str, torch.Tensor] | None = None

    def detach(self) -> "ArchSample":
        """The same sample cut from the logits' graph (for steps that must not train them)."""
        edges = None if self.edge_coefficients is None else {g: w.detach() for g, w in self.edge_coefficients.items()}
        return ArchSample({g: w.detach() for g, w in self.coefficients.items()}, self.indices, edges)


class Architecture(nn.Module):
    """Holds the architecture logits and draws samples from them.

    Args:
        groups: group name -> ``(num_edges, num_ops)``.
        op_names: The candidate op names, in logit column order.
        init_std: Standard deviation of the initial logits (GDAS uses 1e-3).
        allowed: group -> bool ``[num_edges, num_ops]``, False where an op does not
            exist on that edge (e.g. a skip where shapes change). Such an op is
            never sampled or derived: its logit reads as -1e9 and gets no gradient.
        edge_nodes: group -> the node each edge feeds, ``[num_edges]`` ints. Given, the
            architecture also learns PC-DARTS edge-normalisation logits ``edge_logits``
            (one per edge; softmax over the edges into each node, never sampled).
    """

    MASKED_LOGIT = -1e9  # finite, so the sampler's "finite in, finite out" still holds

    def __init__(self, groups: dict[str, tuple[int, int]], op_names: list[str], init_std: float = 1e-3,
                 allowed: dict[str, torch.Tensor] | None = None, edge_nodes: dict[str, list[int]] | None = None):
        super().__init__()
        self.op_names = list(op_names)
        for name, (num_edges, num_ops) in groups.items():
            if num_ops != len(self.op_names):
                raise ValueError(f"group {name!r} has {num_ops} ops but {len(self.op_names)} op names")
        self.logits = nn.ParameterDict(
            {name: nn.Parameter(init_std * torch.randn(e, k)) for name, (e, k) in groups.items()})
        self.generator: torch.Generator | None = None
        self.masked = sorted(allowed or {})
        for group, mask in (allowed or {}).items():
            if tuple(mask.shape) != tuple(groups[group]):
                raise ValueError(f"mask of group {group!r} has shape {tuple(mask.shape)}, expected {groups[group]}")
            self.register_buffer(f"allowed_{group}", mask.bool().clone())
        self.edge_nodes = {g: list(nodes) for g, nodes in (edge_nodes or {}).items()}
        for group, nodes in self.edge_nodes.items():
            if len(nodes) != groups[group][0]:
                raise ValueError(f"edge_nodes of group {group!r} lists {len(nodes)} edges, expected {groups[group][0]}")
        # PC-DARTS initialises its edge betas as 1e-3 * randn, like the op logits.
        self.edge_logits = nn.ParameterDict(
            {g: nn.Parameter(init_std * torch.randn(len(nodes))) for g, nodes in self.edge_nodes.items()})
        for group, nodes in self.edge_nodes.items():  # [num_nodes, num_edges]: True where the edge feeds the node
            distinct = sorted(set(nodes))
            members = torch.tensor([[n == node for n in nodes] for node in distinct])
            self.register_buffer(f"edge_members_{group}", members, persistent=False)

    def edge_coefficients(self) -> dict[str, torch.Tensor] | None:
        """group -> ``[num_edges]``: softmax of ``edge_logits`` over the edges into each node
        (differentiable), or None without edge normalisation."""
        if not self.edge_nodes:
            return None
        out = {}
        for group, logits in self.edge_logits.items():
            members = getattr(self, f"edge_members_{group}")               # [nodes, edges]
            per_node = logits.float().masked_fill(~members, float("-inf"))  # [nodes, edges]
            out[group] = torch.softmax(per_node, dim=1).sum(0)              # each edge is in one node
        return out

    @torch.no_grad()
    def derivation_scores(self, probabilities: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """What derivation ranks, on the CPU: ``probabilities()`` (pass them if already computed),
        each row scaled by its edge weight under edge normalisation (PC-DARTS: an input's score is
        edge weight x op probability)."""
        probs = self.probabilities() if probabilities is None else probabilities
        edges = self.edge_coefficients()
        if edges is None:
            return probs
        return {g: p * edges[g].cpu()[:, None] if g in edges else p for g, p in probs.items()}

    def masked_logits(self) -> dict[str, torch.Tensor]:
        """group -> the logits with unavailable ops set to ``MASKED_LOGIT`` (what every sample reads)."""
        if not self.masked:
            return dict(self.logits.items())
        return {g: (torch.where(getattr(self, f"allowed_{g}"), l, self.MASKED_LOGIT) if g in self.masked else l)
                for g, l in self.logits.items()}

    def seed(self, seed: int) -> torch.Generator:
        """Creates the sampler's own ``torch.Generator`` on the logits' device."""
        device = next(iter(self.logits.values())).device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        return self.generator

    def _generator(self) -> torch.Generator | None:
        device = next(iter(self.logits.values())).device
        if self.generator is not None and self.generator.device != device:
            raise RuntimeError("the sampler's generator is on another device: call seed() after .to()")
        return self.generator

    def sample(self, mode: str, tau: float, estimator: str = STRAIGHT_THROUGH, estimator_samples: int = 1
               ) -> ArchSample:
        """Draws one sample for all groups.

        Args:
            mode: ``gdas`` (hard, one-hot), ``snas`` (relaxed) or ``darts`` (softmax).
            tau: Gumbel-softmax temperature (unused by ``darts``).
            estimator: How a ``gdas`` sample's gradient reaches the logits (``nas.sampling.estimators``:
                ``straight_through``, ``gumbel_rao``, ``reinmax``); the soft modes ignore it.
            estimator_samples: ``gumbel_rao``'s number of conditional Gumbel draws K.
        """
        return self.sample_many(mode, tau, 1, estimator=estimator, estimator_samples=estimator_samples)[0][0]

    def sample_many(self, mode: str, tau: float, count: int, carry: torch.Tensor | None = None,
                    sdarts_epsilon: float = 0.0, estimator: str = STRAIGHT_THROUGH, estimator_samples: int = 1):
        """Draws ``count`` independent samples with a single device-to-host transfer.

        The search loop draws the weight step's and the arch step's samples
        together (the logits do not change in between), and ``carry`` lets it
        bring a small int tensor (a non-finite flag) to the host in the same
        transfer, so an iteration costs one synchronisation.

        ``sdarts_epsilon`` > 0 perturbs the first sample only (the weight step's),
        as SDARTS-RS: ``softmax(logits)`` plus U(-eps, eps), clipped and renormalised
        (``nas.sampling.sdarts``; the noise comes from the sampler's generator). ``darts``
        mixes with these weights; ``gdas`` and ``snas`` (our adaptation) sample from
        them, i.e. from the logits ``log(perturbed weights)``.

        ``estimator`` and ``estimator_samples`` (``gdas`` only) choose the logit gradient of each
        sample (``nas.sampling.estimators``); every estimator draws the same one-hot samples from the
        generator, ``gumbel_rao`` then draws its K - 1 conditional noise vectors after each one.

        Returns:
            ``(samples, carried)``: a list of ``ArchSample`` and ``carry`` as a
            list of ints (None when no ``carry`` was given).
        """
        generator = self._generator()

        perturbed = {}  # group -> the first sample's SDARTS-RS weights [num_edges, num_ops] (constants)
        if sdarts_epsilon:
            for g, l in self.masked_logits().items():
                allowed = getattr(self, f"allowed_{g}") if g in self.masked else None
                perturbed[g] = perturb(torch.softmax(l.float(), dim=-1), sdarts_epsilon, generator, allowed)

        def logits_of(k: int) -> dict[str, torch.Tensor]:
            if k or not perturbed:
                return self.masked_logits()
            # Sampling from the perturbed distribution; a weight clipped to 0 reads as a masked op.
            return {g: torch.where(p > 0, p.log(), torch.full_like(p, self.MASKED_LOGIT)) for g, p in perturbed.items()}

        edges = self.edge_coefficients()  # shared by the samples: the logits do not change in between
        if mode == "darts":
            samples = [ArchSample(dict(perturbed) if k == 0 and perturbed else
                                  {g: torch.softmax(l.float(), dim=-1) for g, l in logits_of(k).items()},
                                  edge_coefficients=edges) for k in range(count)]
            return samples, (None if carry is None else carry.reshape(-1).tolist())
        drawn, indices = [], []
        for k in range(count):
            coefficients, index = {}, {}
            for group, logits in logits_of(k).items():
                if mode == "gdas":
                    coefficients[group], idx = estimate(estimator, logits, tau, generator, estimator_samples)
                else:
                    coefficients[group], _, idx = gumbel_softmax_sample(logits, tau=tau, generator=generator)
                index[group] = idx
            drawn.append(coefficients)
            indices.append(index)
        if mode != "gdas":
            return ([ArchSample(w, edge_coefficients=edges) for w in drawn],
                    None if carry is None else carry.reshape(-1).tolist())
        host, carried = self._to_host(indices, carry)
        return [ArchSample(w, h, edges) for w, h in zip(drawn, host)], carried

    def derive(self, mode: str = "gdas") -> ArchSample:
        """The deterministic sample of the logits: per-edge argmax one-hot for ``gdas`` (``none`` included,
        every edge; not the exported genotype, see ``Supernet.genotype_sample``), softmax for the soft modes."""
        if mode != "gdas":
            return self.sample("darts", 1.0)
        coefficients, indices = {}, {}
        for group, logits in self.masked_logits().items():
            index = logits.detach().argmax(dim=-1)
            coefficients[group] = torch.zeros_like(logits, dtype=torch.float32).scatter_(-1, index[:, None], 1.0)
            indices[group] = index
        host, _ = self._to_host([indices])
        return ArchSample(coefficients, host[0], self.edge_coefficients())

    @staticmethod
    def _to_host(indices: list[dict[str, torch.Tensor]], carry: torch.Tensor | None = None):
        # One device-to-host transfer for every edge of every group of every sample (and the carry).
        parts = [i.reshape(-1) for sample in indices for i in sample.values()]
        if carry is not None:
            parts.append(carry.reshape(-1).to(parts[0].dtype))
        flat = torch.cat(parts).tolist()
        out, start = [], 0
        for sample in indices:
            host = {}
            for group, index in sample.items():
                host[group] = flat[start:start + index.numel()]
                start += index.numel()
            out.append(host)
        return out, (flat[start:] if carry is not None else None)

    @torch.no_grad()
    def probabilities(self) -> dict[str, torch.Tensor]:
        """group -> ``softmax(logits)`` ``[num_edges, num_ops]`` on the CPU."""
        return {g: torch.softmax(l.float(), dim=-1).cpu() for g, l in self.masked_logits().items()}

    @torch.no_grad()
    def entropy(self) -> dict[str, torch.Tensor]:
        """group -> per-edge entropy (nats) of ``softmax(logits)``, ``[num_edges]``."""
        out = {}
        for g, l in self.masked_logits().items():
            logp = torch.log_softmax(l.float(), dim=-1)
            out[g] = -(logp.exp() * logp).sum(-1).cpu()
        return out
