"""GDAS's straight-through gate on the sampled op, computed without keeping extra tensors alive.

In a GDAS arch step ``h`` is the hard straight-through sample (value: one-hot
at the sampled ``i``) and the official GDAS code has two rules (``GATE_RULES``)
for an edge's output:

* ``all_ops`` (NAS-Bench-201 search cell, ``SearchCell.forward_gdas``):
  ``h[i] * op_i(x) + sum_{j != i} h[j]``, the unsampled coefficients added as scalars;
* ``sampled_op`` (DARTS-space search cell, ``MixedOp.forward_gdas``):
  ``h[i] * op_i(x)`` alone.

Both have the value ``op_i(x)``; their gradients are

* w.r.t. ``op_i(x)``: ``g`` (``h[i] == 1`` exactly);
* w.r.t. ``h[i]``: ``<g, op_i(x)>``, the full inner product;
* w.r.t. ``h[j]``, ``j != i``: ``g.sum()`` under ``all_ops``, 0 under ``sampled_op``.

Written with autograd ops, the multiply keeps ``op_i(x)`` alive until the
backward pass for ``<g, op_i(x)>``, and costs a multiply and a full-size add
per edge each way. The functions here compute the same value and gradients
with one autograd node per edge and no tensor saved beyond what the op itself
saves:

* ops ending in a ``StraightThroughBatchNorm2d`` that normalises with batch
  statistics and whose output IS that BN's output (every ReLU-conv-BN and
  separable conv, and DARTS's pool + BN; the choice layer sets the BN's ``gate``
  for the call and checks the returned tensor): the BN runs inside
  the gate, which saves what the BN saves (its input ``z``, batch mean and
  inverse std); ``<g, y>`` is ``sum_c w_c <g_c, zhat_c> + b_c sum(g_c)``, whose
  per-channel sums the BN backward kernel computes anyway (they are its weight
  and bias gradients), so the BN output ``y`` is never stored and the inner
  product costs nothing extra;
* average pooling: the gate keeps the pool's input (as the pool itself would);
  pooling is linear, so ``<g, P x> = <P^T g, x>``, the input gradient dotted
  with the input; other parameter-free pools are recomputed in the backward pass;
* ``none``: nothing is saved, ``<g, 0> = 0``;
* anything else (identity, timm blocks): the output is saved, as before.

Which op gets which gate is the choice layer's decision (``nas.layers.choice``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

ALL_OPS, SAMPLED_OP = "all_ops", "sampled_op"
GATE_RULES = (ALL_OPS, SAMPLED_OP)


def _acc(t: torch.Tensor) -> torch.Tensor:
    """``t`` in the accumulation dtype: float32 for half types, else its own."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``<a, b>`` in one pass (``torch.dot`` over the shared memory order, no product tensor)."""
    if a.dtype == b.dtype and a.dtype in (torch.float32, torch.float64):
        for fmt in (torch.contiguous_format, torch.channels_last):
            if a.dim() == 4 and a.is_contiguous(memory_format=fmt) and b.is_contiguous(memory_format=fmt):
                flat = (lambda t: t.permute(0, 2, 3, 1).reshape(-1)) if fmt == torch.channels_last \
                    else (lambda t: t.reshape(-1))
                return torch.dot(flat(a), flat(b))
    return (_acc(a) * _acc(b)).sum()


def _coefficients_grad(ctx, g: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """The sampled op gets ``inner`` (``<g, op_i(x)>``); every other op ``g.sum()`` (``all_ops``) or 0."""
    if ctx.rule == ALL_OPS:
        grad = _acc(g).sum().expand(ctx.num_ops).clone()
    else:
        grad = inner.new_zeros(ctx.num_ops)
    grad[ctx.index] = inner
    return grad.to(ctx.coefficients_dtype)


def _remember(ctx, coefficients: torch.Tensor, index: int, rule: str) -> None:
    if rule not in GATE_RULES:
        raise ValueError(f"unknown GDAS gate rule {rule!r}; choose from {', '.join(GATE_RULES)}")
    ctx.index, ctx.num_ops, ctx.coefficients_dtype, ctx.rule = index, coefficients.shape[0], coefficients.dtype, rule


class _GateSavedOutput(torch.autograd.Function):
    """The generic gate: saves the op's output (nothing for an all-zero output)."""

    @staticmethod
    def forward(ctx, coefficients, out, index, rule, is_zero):
        _remember(ctx, coefficients, index, rule)
        ctx.is_zero = is_zero
        ctx.save_for_backward(None if is_zero else out)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        inner = _acc(g).new_zeros(()) if ctx.is_zero else _inner(g, out)
        return _coefficients_grad(ctx, g, inner), (None if ctx.is_zero else g), None, None, None


class _GateBatchNorm(torch.autograd.Function):
    """The gate fused with a final batch-statistics BN: ``y = BN(z)``, ``<g, y>`` from ``z`` and the BN's stats."""

    @staticmethod
    def forward(ctx, coefficients, z, bn_weight, bn_bias, index, rule, running_mean, running_var, momentum, eps):
        _remember(ctx, coefficients, index, rule)
        # [B, C, H, W] -> y [B, C, H, W], batch mean and inverse std [C] (float32); updates the running stats.
        y, mean, invstd = torch.native_batch_norm(z, bn_weight, bn_bias, running_mean, running_var,
                                                  True, momentum, eps)
        ctx.eps = eps
        ctx.save_for_backward(z, bn_weight, bn_bias, mean, invstd)
        return y

    @staticmethod
    def backward(ctx, g):
        z, bn_weight, bn_bias, mean, invstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        # The kernel's "weight gradient" is sum(g * zhat) per channel and its "bias gradient"
        # sum(g); it computes both for the input gradient anyway. Without affine, a weight of
        # ones gives the same input gradient and still returns sum(g * zhat).
        weight = bn_weight if bn_weight is not None else torch.ones_like(mean)  # float32 beside half z: mixed BN
        grad_z, g_zhat, g_sum = torch.ops.aten.native_batch_norm_backward(
            g, z, weight, None, None, mean, invstd, True, ctx.eps, [need[1], True, bn_bias is not None])
        # <g, y> = sum_c w_c * sum(g_c * zhat_c) + b_c * sum(g_c)
        inner = (_acc(g_zhat) * _acc(bn_weight)).sum() if bn_weight is not None else _acc(g_zhat).sum()
        if bn_bias is not None:
            inner = inner + (_acc(g_sum) * _acc(bn_bias)).sum()
        return (_coefficients_grad(ctx, g, inner), grad_z if need[1] else None, g_zhat if need[2] else None,
                g_sum if need[3] else None, None, None, None, None, None, None)


class _GateRecompute(torch.autograd.Function):
    """The gate on a cheap parameter-free op: saves its input and recomputes it in the backward pass."""

    @staticmethod
    def forward(ctx, coefficients, x, index, rule, op):
        _remember(ctx, coefficients, index, rule)
        ctx.op = op
        ctx.save_for_backward(x)
        return op(x)  # runs without autograd: this node stands for the op

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            out = ctx.op(leaf)
            (grad_x,) = torch.autograd.grad(out, leaf, g)
        inner = _inner(g, out.detach())
        return _coefficients_grad(ctx, g, inner), (grad_x if ctx.needs_input_grad[1] else None), None, None, None


class _GateAvgPool(torch.autograd.Function):
    """The gate on average pooling: saves only its input, as the pool does. Pooling is linear,
    ``y = P x``, so ``<g, y> = <P^T g, x>``: the input gradient (computed anyway) dotted with ``x``."""

    @staticmethod
    def forward(ctx, coefficients, x, index, rule, op, pool):
        _remember(ctx, coefficients, index, rule)
        ctx.args = _avg_pool_args(pool)
        ctx.save_for_backward(x)
        return op(x)  # the op module itself (its hooks run); no autograd here: [B, C, H, W] -> [B, C, H', W']

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        grad_x = torch.ops.aten.avg_pool2d_backward(g, x, *ctx.args)
        return (_coefficients_grad(ctx, g, _inner(grad_x, x)), (grad_x if ctx.needs_input_grad[1] else None),
                None, None, None, None)


def _avg_pool_args(pool: nn.AvgPool2d) -> tuple:
    """``nn.AvgPool2d``'s settings in ``aten.avg_pool2d``'s argument order."""
    pair = nn.modules.utils._pair
    kernel = pair(pool.kernel_size)
    stride = pair(pool.stride if pool.stride is not None else pool.kernel_size)
    return (list(kernel), list(stride), list(pair(pool.padding)), pool.ceil_mode, pool.count_include_pad,
            pool.divisor_override)


class StraightThroughBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that can also be the straight-through gate of the op it ends.

    With ``gate = (coefficients, index, rule)`` set (by the choice layer, for one call) and
    batch statistics in use, its next call normalises inside ``_GateBatchNorm``,
    clears ``gate`` and keeps that call's output in ``gated_output`` (so the choice
    layer can check that the op returned it); otherwise it is a plain
    ``nn.BatchNorm2d`` (same parameters, buffers and state dict).
    """

    gate: tuple[torch.Tensor, int, str] | None = None
    gated_output: torch.Tensor | None = None

    def can_gate(self) -> bool:
        """True when this call would normalise with batch statistics (training, or no running stats)."""
        return self.training or self.running_mean is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            return super().forward(x)
        if not self.can_gate():
            raise RuntimeError("a straight-through gate needs batch statistics; check can_gate() first")
        (coefficients, index, rule), self.gate = self.gate, None  # one call only: a second call is a plain BN
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, as nn.BatchNorm2d does it
                momentum = 1.0 / float(self.num_batches_tracked)
        running_mean, running_var = (self.running_mean, self.running_var) if self.training else (None, None)
        self.gated_output = _GateBatchNorm.apply(coefficients, x, self.weight, self.bias, index, rule, running_mean,
                                                 running_var, momentum, self.eps)
        return self.gated_output


def gate_output(out: torch.Tensor, coefficients: torch.Tensor, index: int, is_zero: bool = False,
                rule: str = ALL_OPS) -> torch.Tensor:
    """The generic gate: ``out`` in value, saved for ``<g, out>`` (nothing saved when ``is_zero``).

    ``rule`` (``GATE_RULES``) decides what the unsampled coefficients get; so for every gate here."""
    return _GateSavedOutput.apply(coefficients, out, index, rule, is_zero)


def gate_recompute(op: nn.Module, x: torch.Tensor, coefficients: torch.Tensor, index: int,
                   rule: str = ALL_OPS) -> torch.Tensor:
    """The gate of a cheap parameter-free ``op``: ``op(x)`` in value, recomputed for the backward pass."""
    return _GateRecompute.apply(coefficients, x, index, rule, op)


def gate_avg_pool(op: nn.Module, pool: nn.AvgPool2d, x: torch.Tensor, coefficients: torch.Tensor,
                  index: int, rule: str = ALL_OPS) -> torch.Tensor:
    """The gate of an op that is an average pool ``pool`` (or wraps only one): ``op(x)`` in value,
    keeping only ``x`` (see ``_GateAvgPool``)."""
    return _GateAvgPool.apply(coefficients, x, index, rule, op, pool)
