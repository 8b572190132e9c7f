"""Retrain a discovered cell from scratch.

``python train_final.py --genotype RUN/genotype.yaml [--config FILE] [--out DIR] [--resume DIR] [key=value ...]``

Writes RUN_DIR/config.yaml, genotype.yaml (a copy), metrics.jsonl, checkpoint.pt
and final.json (test top-1, parameters, FLOPs, epoch times).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "final_quickstart.yaml"


def run(args: argparse.Namespace) -> int:
    import search_spaces  # noqa: F401  (registers the spaces)
    from nas.cli.build import build_final_trainer
    from nas.cli.run_command import open_run_dir, report_stop, resolve_run, stop_signals
    from nas.utils.errors import UserError
    from nas.spaces.genotype import load_genotype
    from nas.spaces.genotype import GENOTYPE
    from nas.spaces.space import get_space
    from nas.engine.loop import CHECKPOINT, RunDiverged, RunInterrupted
    from nas.engine.train import FINAL

    cfg, out = resolve_run(args, DEFAULT_CONFIG, CHECKPOINT)
    genotype_path = Path(args.genotype) if args.genotype else None
    get_space(cfg.model.space)  # a user's space (module:Attribute) is imported as the config names it
    if args.resume:
        kept = out / GENOTYPE
        if genotype_path is not None and kept.is_file():
            _, given = load_genotype(genotype_path)
            _, saved = load_genotype(kept)
            if given != saved:
                raise UserError(f"--genotype differs from the one {out} was trained with; drop --genotype to resume")
        genotype_path = kept
    elif genotype_path is None:
        raise UserError("--genotype is required: pass RUN_DIR/genotype.yaml of a search")
    trainer, space, genotype = build_final_trainer(cfg, genotype_path)
    main_rank = trainer.dist.is_main
    say = print if main_rank else (lambda *a, **k: None)
    if main_rank:  # only rank 0 writes
        open_run_dir(out, cfg, resume=bool(args.resume), checkpoint=CHECKPOINT)
        if not args.resume:
            try:
                shutil.copyfile(genotype_path, out / GENOTYPE)
            except OSError as e:
                raise UserError(f"cannot write {out / GENOTYPE} ({e.strerror}); free disk space or choose "
                                "another --out") from None
        trainer.out_dir = out
    else:
        trainer.log = say
    with stop_signals(trainer.request_stop):
        if args.resume and (out / CHECKPOINT).exists():
            trainer.resume(out / CHECKPOINT)
            say(f"resumed {out} at epoch {trainer.epoch + 1}, step {trainer.step}")
        say(f"{space.name} network {space.format(genotype)}: {sum(p.numel() for p in trainer.net.parameters()):,} "
            f"parameters, {cfg.data.dataset}, device {trainer.device}, run dir {out}")
        try:
            trainer.run()
        except RunInterrupted as e:
            return report_stop(e, out, "train_final.py") if main_rank else 128 + e.signum
        except RunDiverged as e:
            say(f"error: {e}", file=sys.stderr)
            return 1
    try:
        record = trainer.write_summary(space=space.name, genotype=space.format(genotype), dataset=cfg.data.dataset)
    except OSError as e:
        raise UserError(f"cannot write {out / FINAL} ({e.strerror}); training finished and its checkpoint "
                        f"{out / CHECKPOINT} is intact: free disk space and run --resume {out} again") from None
    except KeyboardInterrupt:
        print(f"interrupted while writing {out / FINAL}; training finished: run --resume {out} to write it",
              file=sys.stderr)
        return 130
    say(f"test accuracy {record['test_acc']:.2f}%  ({record['params']:,} parameters, "
        f"{record['flops'] / 1e6:.1f} MFLOPs, {record['train_time']:.0f}s training)")
    say(f"wrote {out / FINAL}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from nas.cli.run_command import guarded_main, run_parser

    parser = run_parser("Retrain a discovered cell from scratch.", DEFAULT_CONFIG)
    parser.add_argument("--genotype", help="genotype.yaml of a search (not needed with --resume)")
    return guarded_main(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
