"""What ``train_search.py`` and ``train_final.py`` share: run directories, resume, signals, errors.

A run directory holds ``config.yaml`` (the resolved config) and a checkpoint.
``--resume DIR`` continues it with that config; giving a different one is an
error naming the keys that differ, except the run's length (``search.epochs``,
``train.epochs``): ``--resume DIR search.epochs=N`` extends a finished run (or
shortens an unfinished one), re-planning the schedules over N epochs
(``EpochLoop.replan_notice`` says how) and rewriting ``config.yaml``. A run holds an exclusive lock on
``DIR/.lock`` (``fcntl.flock``, released by the kernel when the process ends)
for its whole life, so a second run into the same directory is refused.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from ..utils.errors import UserError

CONFIG = "config.yaml"
LOCK = ".lock"
_held_locks: dict[str, object] = {}  # run dir -> its open lock file, held until the process exits


def run_parser(description: str, default_config: Path) -> argparse.ArgumentParser:
    """The common arguments: ``--config``, ``--out``, ``--resume``, ``--debug`` and overrides."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", help=f"YAML config (default: configs/{default_config.name})")
    p.add_argument("--out", help="run directory (default: runs/<config>-<date>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. search.epochs=5")
    return p


def guarded_main(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Runs ``run(args)``; a ``UserError`` becomes one line on stderr and exit status 2."""
    try:
        return run(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the loop took over the signals
        print("interrupted before training started", file=sys.stderr)
        return 130


def resolve_run(args: argparse.Namespace, default_config: Path, checkpoint: str, epochs_key: str = ""):
    """Reads and validates the config of a new or resumed run.

    ``epochs_key`` (``search.epochs``, ``train.epochs``) is the one key a resume may change.

    Returns:
        ``(cfg, out_dir, config_path_or_None)``; nothing is written yet.
    """
    from ..config import build_config, diff_configs, load_config, read_yaml

    if args.resume:
        out = Path(args.resume)
        if not (out / CONFIG).is_file():
            raise UserError(f"{str(out)!r} is not a run directory (no {CONFIG}); pass the --out of an earlier run")
        if args.out and Path(args.out) != out:
            raise UserError("--out and --resume name different directories; --resume continues in place")
        saved = read_yaml(out / CONFIG)
        cfg = build_config(saved)
        if args.config or args.overrides:
            given = load_config(args.config, args.overrides) if args.config else build_config(saved, args.overrides)
            changed = [k for k in diff_configs(cfg, given) if k != epochs_key]
            cfg = given if not changed else cfg
            if changed:
                raise UserError(f"--resume {out} was run with a different config ({', '.join(changed)} differ); "
                                "drop --config/overrides or start a new run with --out")
        if _main_process():  # last: a bad invocation reports its own problem, not a run it would not disturb
            lock_run_dir(out)
        return cfg, out
    config_path = Path(args.config) if args.config else default_config
    cfg = load_config(config_path, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"{config_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / checkpoint).exists():
        raise UserError(f"{str(out)!r} already holds a run; continue it with --resume {out} or choose another --out")
    if (out / LOCK).exists() and _main_process():
        lock_run_dir(out)  # refuses a directory another run is using
    return cfg, out


def _main_process() -> bool:
    """True unless this is a non-zero rank of a ``torchrun`` job (only rank 0 owns the run directory)."""
    return os.environ.get("RANK", "0") == "0"


def lock_run_dir(out: Path) -> None:
    """Takes the run directory's lock for the life of this process (a no-op if already held).

    Raises:
        UserError: another process holds it (naming its pid), or the lock file cannot be made.
    """
    key = str(out.resolve())
    if key in _held_locks:
        return
    try:
        f = open(out / LOCK, "a+")
    except OSError as e:
        raise UserError(f"cannot write to output directory {str(out)!r}: {e.strerror}; choose another --out") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        pid = f.read(32).strip() or "unknown"
        f.close()
        raise UserError(f"{str(out)!r} is in use by another run (pid {pid}); wait for it to end "
                        "or choose another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held_locks[key] = f


def open_run_dir(out: Path, cfg, resume: bool, checkpoint: str = "checkpoint.pt", lock: bool = True) -> None:
    """Creates and locks the run directory, clears what a run cut short left, and saves the resolved config.

    ``lock=False`` is for a caller that already holds ``DIR/.lock`` itself (``nas.experiment``'s job lock).

    A new run (or a resumed one that never reached its first checkpoint) starts
    with no ``metrics.jsonl``; torn temporaries of writes cut short are removed.
    A resumed run's metrics are rewritten from its checkpoint when it loads.
    """
    import yaml

    from ..utils.atomic import atomic_write, remove_torn_writes
    from ..engine.loop import METRICS

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output directory {str(out)!r}: {e.strerror}; choose another --out") from None
    if lock:
        lock_run_dir(out)
    if not resume and (out / checkpoint).exists():  # another run finished its first epoch meanwhile
        raise UserError(f"{str(out)!r} already holds a run; continue it with --resume {out} or choose another --out")
    try:
        remove_torn_writes(out)
        if not (out / checkpoint).exists():  # nothing to continue: the history starts empty
            (out / METRICS).unlink(missing_ok=True)
        if not resume:
            text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            atomic_write(out / CONFIG, lambda f: f.write(text), mode="w")
    except OSError as e:
        raise UserError(f"cannot write to output directory {str(out)!r}: {e.strerror}; choose another --out") from None


def save_config(out: Path, cfg) -> None:
    """Rewrites ``DIR/config.yaml`` atomically (a resumed run whose length changed)."""
    import yaml

    from ..utils.atomic import atomic_write

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    try:
        atomic_write(out / CONFIG, lambda f: f.write(text), mode="w")
    except OSError as e:
        raise UserError(f"cannot write {out / CONFIG} ({e.strerror}); free disk space and resume again") from None


@contextlib.contextmanager
def stop_signals(request_stop: Callable[[int], None]) -> Iterator[None]:
    """While active, SIGINT and SIGTERM ask the loop to checkpoint and stop instead of killing it."""
    handlers = {sig: signal.signal(sig, lambda signum, frame: request_stop(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def report_stop(error, out: Path, script: str) -> int:
    """Prints where the checkpoint is and how to resume; returns the exit status (128 + signal)."""
    print(f"{error}; checkpoint written to {out}", file=sys.stderr)
    print(f"resume with: python {script} --resume {out}", file=sys.stderr)
    return 128 + error.signum
