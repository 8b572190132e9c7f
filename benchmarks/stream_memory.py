"""Peak resident memory of one pass over an image folder: streamed from disk vs decoded into memory.

Writes two folders of small generated images (JPEG, 48x48, 10 classes) with
PIL into a temporary directory, 2,000 and 20,000 images by default, and for
each folder and each loader runs one fresh Python process that lists the
folder, builds the loader the search would build (``data.image_size=32``,
fixed transform, augmentation on, batch 64) and reads one whole pass. Each
process reports its own peak resident set (``ru_maxrss`` of ``RUSAGE_SELF``),
the largest peak of its DataLoader worker processes (``RUSAGE_CHILDREN``), and
the pass's wall time. The figure that must stay flat is the streamed pass's
peak: its ratio between the large and the small folder (``<= 1.3`` required).

    python benchmarks/stream_memory.py [--sizes 2000 20000] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_folder(root: Path, n: int, classes: int = 10, side: int = 48) -> None:
    """``n`` JPEGs of random smooth colour fields, spread over ``classes`` class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(n)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((side, side), Image.Resampling.BILINEAR)
        image.save(root / f"c{i % classes}" / f"{i:06d}.jpg", quality=90)


def child(root: str, loader: str, workers: int) -> None:
    """One pass in this process; prints a JSON line of what it measured."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from nas.data import make_loader, open_dataset

    start = time.perf_counter()
    data = open_dataset("imagefolder", root, image_size=32, num_workers=workers, loader=loader, transform="fixed")
    batches = make_loader(data, 64, shuffle=True, augment=True, seed=0)
    images = 0
    for x, y in batches.epoch(0):
        images += y.numel()
    seconds = time.perf_counter() - start
    kib = 1024  # ru_maxrss is in KiB on Linux
    print(json.dumps({"loader": loader, "images": images, "set": type(data).__name__,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
                      "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib,
                      "pass_seconds": seconds}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000], help="the small and the large folder")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (data.num_workers)")
    p.add_argument("--child", nargs=2, metavar=("ROOT", "LOADER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.workers)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            folder = Path(tmp) / f"images{n}"
            started = time.perf_counter()
            write_folder(folder, n)
            print(f"wrote {n:,} images in {time.perf_counter() - started:.1f}s", flush=True)
            for loader in ("stream", "memory"):
                out = subprocess.run([sys.executable, __file__, "--workers", str(args.workers), "--child",
                                      str(folder), loader], env=env, capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows[(n, loader)] = row
                print(f"{n:>7,} files  {loader:<6}  {row['images']:>6,} images read  peak RSS "
                      f"{row['peak_rss_mib']:7.1f} MiB (workers {row['worker_peak_rss_mib']:6.1f} MiB)  "
                      f"pass {row['pass_seconds']:6.2f}s", flush=True)
    small, large = args.sizes
    for loader in ("stream", "memory"):
        ratio = rows[(large, loader)]["peak_rss_mib"] / rows[(small, loader)]["peak_rss_mib"]
        print(f"{loader}: peak RSS {large:,} / {small:,} files = {ratio:.3f}x")


if __name__ == "__main__":
    main()
