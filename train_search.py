"""Search a cell: ``python train_search.py [--config FILE] [--out DIR] [--resume DIR] [key=value ...]``.

``--resume DIR search.epochs=N`` extends a finished search to N epochs; the lr
cosine and the temperature schedule are re-planned over N epochs (printed).

Writes RUN_DIR/config.yaml (resolved), metrics.jsonl, checkpoint.pt and
genotype.yaml. Any bad input is one line on stderr and exit status 2;
SIGINT/SIGTERM checkpoint the current step and exit 130/143.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "quickstart.yaml"


def run(args: argparse.Namespace) -> int:
    import search_spaces  # noqa: F401  (registers the spaces)
    from nas.cli.build import build_searcher
    from nas.cli.run_command import open_run_dir, report_stop, resolve_run, save_config, stop_signals
    from nas.utils.errors import UserError
    from nas.spaces.genotype import GENOTYPE
    from nas.engine.loop import CHECKPOINT, RunDiverged, RunInterrupted

    cfg, out = resolve_run(args, DEFAULT_CONFIG, CHECKPOINT, epochs_key="search.epochs")
    searcher = build_searcher(cfg)  # everything that can fail on bad input fails here, before writing
    main_rank = searcher.dist.is_main
    say = print if main_rank else (lambda *a, **k: None)
    tensorboard = None
    if main_rank:  # only rank 0 writes; the others follow its checkpoint
        if cfg.search.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise UserError("search.tensorboard=true needs the tensorboard package: pip install tensorboard "
                            "(or pip install -e \".[tensorboard]\")")
        open_run_dir(out, cfg, resume=bool(args.resume), checkpoint=CHECKPOINT)
        searcher.out_dir = out
        if cfg.search.tensorboard:
            from nas.report.tensorboard import TensorBoardLogger
            tensorboard = TensorBoardLogger(out / "tensorboard", searcher.space.edge_names(), searcher.space.op_names)
            searcher.epoch_hooks.append(tensorboard.log_epoch)
    else:
        searcher.log = say
    with stop_signals(searcher.request_stop):
        if args.resume and (out / CHECKPOINT).exists():
            searcher.resume(out / CHECKPOINT)
            notice = searcher.replan_notice()
            if notice:
                say(notice)
            if searcher.epoch >= cfg.search.epochs:
                say(f"{out} already finished all {cfg.search.epochs} epochs")
            else:
                say(f"resumed {out} at epoch {searcher.epoch + 1}, step {searcher.step}")
        elif args.resume:
            say(f"{out} has no checkpoint yet (stopped before its first one): starting it from the beginning")
        if args.resume and main_rank:  # the checkpoint fits: record a changed search.epochs
            save_config(out, cfg)
        s = searcher.supernet
        ranks = f", {searcher.dist.world_size} processes" if searcher.dist.enabled else ""
        say(f"search space {cfg.model.space} ({cfg.model.mode}), {cfg.data.dataset}: "
            f"{sum(p.numel() for p in s.weight_parameters()):,} weights, "
            f"{sum(p.numel() for p in s.arch_parameters())} logits, device {next(s.parameters()).device}{ranks}, "
            f"run dir {out}")
        try:
            final = searcher.run()
        except RunInterrupted as e:
            return report_stop(e, out, "train_search.py") if main_rank else 128 + e.signum
        except RunDiverged as e:
            say(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            if tensorboard is not None:
                tensorboard.close()
    if final:
        say(f"derived genotype: {final['genotype']}")
        if "local_search" in final:  # search.select=local_search
            ls = final["local_search"]
            say(f"selected by local search on the supernet from the op-marginal cell {ls['start']} "
                f"({len(ls['moves'])} moves, {ls['evaluations']} cells evaluated, supernet val "
                f"{ls['start_val_acc']:.2f}% -> {ls['val_acc']:.2f}%); the logits derive {final['logits_genotype']} "
                "(the settling below is the logits')")
        elif "proxy_top" in final:  # search.select=proxy_top
            pt = final["proxy_top"]
            say(f"selected by the supernet among the {len(pt['judged'])} of {pt['pool']} cells {pt['proxy']} ranks "
                f"highest (its #{pt['proxy_rank']}, supernet val {pt['val_acc']:.2f}%); the logits derive "
                f"{final['logits_genotype']} (the settling below is the logits')")
        elif "logits_genotype" in final:  # search.select=op_marginals
            say(f"selected by op marginals on the supernet; the logits derive {final['logits_genotype']} "
                "(the settling below is the logits')")
        if "derived_cost" in final and searcher.cost is not None:
            say(f"cost of the derived genotype (the search's {searcher.cost.tables.metric} model, its supernet's "
                f"width and input size): {final['derived_cost']:,.6g} {searcher.cost.tables.metric}")
        if "settling" in final:
            from nas.engine.settling import summary_line
            say(summary_line(final["settling"], final["epoch"]))
        if "val_acc" in final:
            say(f"val accuracy of the derived genotype (supernet weights): {final['val_acc']:.2f}%")
        if "supernet_val_acc" in final:
            say(f"val accuracy of the soft supernet (softmax-weighted ops): {final['supernet_val_acc']:.2f}%")
    say(f"wrote {out / GENOTYPE}")
    if main_rank and cfg.search.report:
        from nas.report.report import try_write_report
        try:
            try_write_report(out, log=say)
        except KeyboardInterrupt:  # the search itself is complete and on disk
            print(f"interrupted while writing the report; the search finished (genotype in {out / GENOTYPE}); "
                  f"write the report with: python -m nas.report {out}", file=sys.stderr)
            return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    from nas.cli.run_command import guarded_main, run_parser

    parser = run_parser("Differentiable architecture search (GDAS / SNAS / DARTS).", DEFAULT_CONFIG)
    return guarded_main(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
