"""Search a cell: ``python train_search.py [--config FILE] [--out DIR] [--resume DIR] [key=value ...]``.

Writes RUN_DIR/config.yaml (resolved), metrics.jsonl, checkpoint.pt and
genotype.yaml. Any bad input is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "quickstart.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Differentiable architecture search (GDAS / SNAS / DARTS).")
    p.add_argument("--config", help=f"YAML config (default: {DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parents[1])})")
    p.add_argument("--out", help="run directory (default: runs/<config>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. search.epochs=5")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from nas.errors import UserError  # after argparse, so --help is instant
    try:
        return run(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the search loop took over the signals
        print("interrupted before the search started", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    import yaml

    import search_spaces  # noqa: F401  (registers the spaces)
    from nas.build import build_searcher
    from nas.checkpoint import atomic_write
    from nas.config import build_config, diff_configs, load_config, read_yaml
    from nas.errors import UserError
    from nas.search import CHECKPOINT, GENOTYPE, SearchDiverged, SearchInterrupted

    if args.resume:
        out = Path(args.resume)
        if not (out / "config.yaml").is_file():
            raise UserError(f"{str(out)!r} is not a run directory (no config.yaml); pass the --out of an earlier run")
        if args.out and Path(args.out) != out:
            raise UserError("--out and --resume name different directories; --resume continues in place")
        saved = read_yaml(out / "config.yaml")
        cfg = build_config(saved)
        if args.config or args.overrides:
            given = load_config(args.config, args.overrides) if args.config else build_config(saved, args.overrides)
            changed = diff_configs(cfg, given)
            if changed:
                raise UserError(f"--resume {out} was run with a different config ({', '.join(changed)} differ); "
                                "drop --config/overrides or start a new run with --out")
    else:
        config_path = Path(args.config) if args.config else DEFAULT_CONFIG
        cfg = load_config(config_path, args.overrides)
        out = Path(args.out) if args.out else Path("runs") / f"{config_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (out / CHECKPOINT).exists():
            raise UserError(f"{str(out)!r} already holds a run; continue it with --resume {out} or choose another --out")

    searcher = build_searcher(cfg)  # everything that can fail on bad input fails here, before writing
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output directory {str(out)!r}: {e.strerror}; choose another --out") from None
    searcher.out_dir = out
    # From here on SIGINT/SIGTERM finish the current step, checkpoint, and exit 130/143.
    handlers = {sig: signal.signal(sig, lambda signum, frame: searcher.request_stop(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    if args.resume and (out / CHECKPOINT).exists():
        searcher.resume(out / CHECKPOINT)
        if searcher.epoch >= cfg.search.epochs:
            print(f"{out} already finished all {cfg.search.epochs} epochs")
        else:
            print(f"resumed {out} at epoch {searcher.epoch + 1}, step {searcher.step}")
    elif args.resume:
        print(f"{out} has no checkpoint yet (stopped before its first one): starting it from the beginning")
    else:
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        atomic_write(out / "config.yaml", lambda f: f.write(text), mode="w")

    s = searcher.supernet
    print(f"search space {cfg.model.space} ({cfg.model.mode}), {cfg.data.dataset}: "
          f"{sum(p.numel() for p in s.weight_parameters()):,} weights, "
          f"{sum(p.numel() for p in s.arch_parameters())} logits, device {next(s.parameters()).device}, run dir {out}")
    try:
        final = searcher.run()
    except SearchInterrupted as e:
        print(f"{e}; checkpoint written to {out / CHECKPOINT}", file=sys.stderr)
        print(f"resume with: python train_search.py --resume {out}", file=sys.stderr)
        return 128 + e.signum
    except SearchDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if final:
        print(f"derived genotype: {final['genotype']}")
        if "val_acc" in final:
            print(f"val accuracy of the derived architecture (shared weights): {final['val_acc']:.2f}%")
    print(f"wrote {out / GENOTYPE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
