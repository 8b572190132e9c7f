"""A latency lookup table for the cost-aware search (FBNet's LUT), measured on this device.

    python -m nas.cost.latency --space nb201 --C 16 --N 5 --input-size 32 --in-channels 3 \\
        --batch 64 --device cpu --out latency.json [--repeats 20]

Times every candidate op of every choice layer alone, at the input shape that
layer receives in the supernet (captured as in ``nas.cost``) with ``--batch``
images, and the rest of the network (``base_ms``: the supernet with its choice
layers stubbed out). Each number is the median over ``--repeats`` timed runs
after ``--warmup`` runs, of the **forward pass only**, under ``torch.no_grad``
in eval mode (inference latency, as FBNet's table; search BN still uses batch
statistics), with a device synchronisation around each run on CUDA. Zero ops
(declared ``zero`` in their ``OpTraits``) are not timed and cost 0.

The JSON holds one entry per choice layer, addressed by its module name (and
its group and logit row), so ``nas.cost.cost_tables(metric="latency")`` can
match it to a supernet and refuse one built differently.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from ..utils.atomic import atomic_write
from ..utils.limits import MAX_BATCH, MAX_CELLS, MAX_CHANNELS, MAX_IMAGE_SIZE
from .objective import capture_shapes, layer_names, measure_ops
from ..utils.errors import UserError
from ..layers.supernet import Supernet
from ..utils.yamlio import brief

FORMAT = 1


def _median_ms(run: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    return float(statistics.median(times))


@torch.no_grad()
def profile_latency(supernet: Supernet, input_shape: tuple[int, ...], batch: int = 64, repeats: int = 20,
                    warmup: int = 5) -> dict:
    """Measures the latency table of a supernet on its device.

    Args:
        supernet: The supernet (on the device to measure).
        input_shape: One image, ``(C, H, W)``.
        batch: Images per forward pass.
        repeats: Timed runs per op (the median is kept).
        warmup: Untimed runs before them.

    Returns:
        The JSON-ready table (see the module docstring).
    """
    device = next(supernet.parameters()).device
    shapes = capture_shapes(supernet, input_shape)
    names = layer_names(supernet)
    base_ms, per_layer = measure_ops(supernet, input_shape, shapes, batch,
                                     lambda run: _median_ms(run, device, repeats, warmup), make_input=torch.randn)
    layers = [{"name": names[id(layer)], "group": group, "edge": edge, "input_shape": list(shapes[id(layer)][0]),
               "ops": list(layer.op_names), "ms": per_layer[id(layer)]}
              for group, edge, layer in supernet.choice_layers()]
    return {"format": FORMAT, "unit": "ms", "pass": "forward", "supernet": type(supernet).__name__,
            "device": str(device), "device_name": _device_name(device), "torch": torch.__version__,
            "batch": batch, "repeats": repeats, "warmup": warmup, "input_shape": list(input_shape),
            "base_ms": base_ms, "layers": layers}


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def build_supernet_for(space_name: str, C: int, N: int, input_size: int, in_channels: int,
                       num_classes: int = 10) -> Supernet:
    """The supernet a search with these settings builds (``input_size`` goes to spaces that take it)."""
    import search_spaces  # registers the spaces

    space = search_spaces.get(space_name)
    extra = {"input_size": input_size} if "input_size" in space.supernet_arguments else {}
    return space.build_supernet(mode="gdas", num_classes=num_classes, C=C, N=N, in_channels=in_channels, **extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nas.cost.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", required=True, help="search space name (nb201, darts, mobilenet, ...)")
    parser.add_argument("--C", type=int, required=True, help="model.C of the search")
    parser.add_argument("--N", type=int, required=True, help="model.N of the search")
    parser.add_argument("--input-size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64, help="images per timed forward pass")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per op (median kept)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs per op first")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    try:
        # Upper bounds: the config's caps where a key matches, otherwise values that only exhaust memory or time.
        limits = {"C": MAX_CHANNELS, "N": MAX_CELLS, "input_size": MAX_IMAGE_SIZE, "in_channels": 64,
                  "num_classes": 100_000, "batch": MAX_BATCH, "repeats": 10_000}
        for key, high in limits.items():
            if not 1 <= getattr(args, key) <= high:
                raise UserError(f"--{key.replace('_', '-')} must be in [1, {high:,}], got {getattr(args, key)}")
        if not 0 <= args.warmup <= 10_000:
            raise UserError(f"--warmup must be in [0, 10,000], got {args.warmup}")
        if not re.fullmatch(r"cpu|cuda(:[0-9]{1,2})?", args.device, flags=re.ASCII):
            raise UserError(f"--device must be cpu, cuda or cuda:N, got {brief(args.device)}")
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {args.device} but CUDA is not available here; use --device cpu")
        out = Path(args.out)
        if not out.parent.is_dir():
            raise UserError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist; create it first")
        device = torch.device(args.device)
        supernet = build_supernet_for(args.space, args.C, args.N, args.input_size, args.in_channels,
                                      args.num_classes).to(device)
        table = profile_latency(supernet, (args.in_channels, args.input_size, args.input_size), batch=args.batch,
                                repeats=args.repeats, warmup=max(args.warmup, 0))
        table.update(space=args.space, C=args.C, N=args.N)
        text = json.dumps(table, indent=1) + "\n"
        try:
            atomic_write(out, lambda f: f.write(text), mode="w")
        except OSError as e:
            raise UserError(f"cannot write {str(out)!r}: {e.strerror or e}; choose a writable --out") from None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_ops = sum(len(layer["ops"]) for layer in table["layers"])
    print(f"wrote {args.out}: {len(table['layers'])} choice layers, {n_ops} ops, base {table['base_ms']:.3f} ms "
          f"(batch {args.batch}, {table['device_name']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
