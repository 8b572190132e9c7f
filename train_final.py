"""Retrain a discovered cell from scratch.

``python train_final.py --genotype RUN|RUN/genotype.yaml|STRING|NAME [--config FILE] [--out DIR] [--resume DIR] [key=value ...]``

Writes RUN_DIR/config.yaml, genotype.yaml (a copy, or the record of a string or
published name), model_args.json, metrics.jsonl, checkpoint.pt, final.json (test
top-1, parameters, FLOPs, epoch times) and model.pth (the weights, for
``timm.create_model(name, checkpoint_path=RUN/model.pth, **model_args)``).
``--resume DIR train.epochs=N`` extends a finished run, re-planning the lr cosine.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "final_quickstart.yaml"
MODEL_ARGS = "model_args.json"  # {"model_name": timm entry point, "model_args": {...}}
MODEL_WEIGHTS = "model.pth"     # {"state_dict": ...} of the trained network


def run(args: argparse.Namespace) -> int:
    import search_spaces  # noqa: F401  (registers the spaces)
    from nas.cli.build import build_final_trainer
    from nas.cli.run_command import open_run_dir, report_stop, resolve_run, save_config, stop_signals
    from nas.utils.errors import UserError
    from nas.spaces.genotype import GENOTYPE, genotype_record, load_genotype, published_names, resolve_genotype
    from nas.spaces.genotype import save_genotype
    from nas.spaces.space import get_space
    from nas.engine.loop import CHECKPOINT, RunDiverged, RunInterrupted
    from nas.engine.train import FINAL

    cfg, out = resolve_run(args, DEFAULT_CONFIG, CHECKPOINT, epochs_key="train.epochs")
    get_space(cfg.model.space)  # a user's space (module:Attribute) is imported as the config names it
    given = resolve_genotype(args.genotype, cfg.model.space) if args.genotype else None
    if args.resume:
        kept = out / GENOTYPE
        if given is not None and kept.is_file():
            _, saved = load_genotype(kept)
            if given[1] != saved:
                raise UserError(f"--genotype differs from the one {out} was trained with; drop --genotype to resume")
        given = (*load_genotype(kept), kept)
    elif given is None:
        raise UserError("--genotype is required: pass a search's run directory, its genotype.yaml, a genotype "
                        f"string or a published name ({', '.join(published_names())})")
    space, genotype, genotype_file = given
    trainer, space, genotype = build_final_trainer(cfg, (space, genotype))
    main_rank = trainer.dist.is_main
    say = print if main_rank else (lambda *a, **k: None)
    if main_rank:  # only rank 0 writes
        open_run_dir(out, cfg, resume=bool(args.resume), checkpoint=CHECKPOINT)
        try:
            if not args.resume and genotype_file is not None:
                shutil.copyfile(genotype_file, out / GENOTYPE)
            elif not args.resume:  # a published name or a string: recorded as a genotype file
                save_genotype(out / GENOTYPE, genotype_record(space, genotype, source=args.genotype))
            write_model_args(out, cfg, space, genotype, trainer)
        except OSError as e:
            raise UserError(f"cannot write into {out} ({e.strerror}); free disk space or choose "
                            "another --out") from None
        trainer.out_dir = out
    else:
        trainer.log = say
    with stop_signals(trainer.request_stop):
        if args.resume and (out / CHECKPOINT).exists():
            trainer.resume(out / CHECKPOINT)
            notice = trainer.replan_notice()
            if notice:
                say(notice)
            say(f"resumed {out} at epoch {trainer.epoch + 1}, step {trainer.step}")
        if args.resume and main_rank:  # the checkpoint fits: record a changed train.epochs
            save_config(out, cfg)
        say(f"{space.name} network {space.format(genotype)}: {sum(p.numel() for p in trainer.net.parameters()):,} "
            f"parameters, {cfg.data.dataset}, device {trainer.device}, run dir {out}")
        try:
            trainer.run()
        except RunInterrupted as e:
            return report_stop(e, out, "train_final.py") if main_rank else 128 + e.signum
        except RunDiverged as e:
            say(f"error: {e}", file=sys.stderr)
            return 1
    search_cost = _search_cost(out / GENOTYPE)
    try:
        record = trainer.write_summary(space=space.name, genotype=space.format(genotype), dataset=cfg.data.dataset,
                                       **({"search_cost": search_cost} if search_cost else {}))
        if main_rank:
            write_model_weights(out, trainer)
    except OSError as e:
        raise UserError(f"cannot write {out / FINAL} ({e.strerror}); training finished and its checkpoint "
                        f"{out / CHECKPOINT} is intact: free disk space and run --resume {out} again") from None
    except KeyboardInterrupt:
        print(f"interrupted while writing {out / FINAL}; training finished: run --resume {out} to write it",
              file=sys.stderr)
        return 130
    say(f"test accuracy {record['test_acc']:.2f}%  ({record['params']:,} parameters, "
        f"{record['flops'] / 1e6:.1f} MFLOPs, {record['train_time']:.0f}s training)")
    if search_cost:
        measured = {"flops": f"; this network: {record['flops']:,} FLOPs",
                    "params": f"; this network: {record['params']:,} parameters"}.get(search_cost["metric"], "")
        say(f"cost of the genotype in its search: {search_cost['derived_cost']:,.6g} {search_cost['metric']} "
            f"(the search's cost model, its supernet's width and input size){measured}")
    say(f"wrote {out / FINAL}")
    if main_rank and (out / MODEL_ARGS).is_file():
        say(f"wrote {out / MODEL_WEIGHTS}; load it with timm: args = json.load(open('{out / MODEL_ARGS}')); "
            f"timm.create_model(args['model_name'], checkpoint_path='{out / MODEL_WEIGHTS}', **args['model_args'])")
    return 0


def _search_cost(genotype_file: Path) -> dict | None:
    """The ``cost`` record a cost-aware search wrote into its genotype.yaml, if any."""
    from nas.utils.yamlio import read_user_yaml

    try:
        record = read_user_yaml(genotype_file, "genotype file")
    except Exception:  # the file was read before training: a failure now only loses this line
        return None
    cost = record.get("cost") if isinstance(record, dict) else None
    ok = isinstance(cost, dict) and isinstance(cost.get("metric"), str) and \
        isinstance(cost.get("derived_cost"), (int, float)) and not isinstance(cost.get("derived_cost"), bool)
    return {"metric": cost["metric"], "derived_cost": cost["derived_cost"]} if ok else None


def write_model_args(out: Path, cfg, space, genotype, trainer) -> None:
    """``RUN/model_args.json``: the timm entry point and the arguments that rebuild this network."""
    from nas.utils.atomic import atomic_write
    from search_spaces.timm_models import ENTRY_POINTS, model_args

    if space.name not in ENTRY_POINTS:  # a user's space has no timm entry point
        return
    images = trainer.test_data.images
    record = model_args(space.name, space.format(genotype), num_classes=trainer.net.num_classes, C=cfg.model.C,
                        N=cfg.model.N, in_chans=int(images.shape[1]), auxiliary=cfg.train.auxiliary_weight > 0,
                        input_size=int(images.shape[-1]))
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(out / MODEL_ARGS, lambda f: f.write(text), mode="w")


def write_model_weights(out: Path, trainer) -> None:
    """``RUN/model.pth``: the trained weights alone, as timm's ``load_checkpoint`` reads them."""
    from nas.engine.checkpoint import save_checkpoint

    save_checkpoint(out / MODEL_WEIGHTS, {"state_dict": trainer.net.state_dict()})


def main(argv: list[str] | None = None) -> int:
    from nas.cli.run_command import guarded_main, run_parser

    parser = run_parser("Retrain a discovered cell from scratch.", DEFAULT_CONFIG)
    parser.add_argument("--genotype", help="a search's run directory or genotype.yaml, a genotype string, or a "
                                           "published name such as DARTS_V2 (not needed with --resume)")
    return guarded_main(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
