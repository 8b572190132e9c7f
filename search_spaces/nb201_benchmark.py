"""NAS-Bench-201 accuracies of a cell, looked up in the NATS-Bench topology benchmark (``nats_bench``).

The benchmark trained every one of NAS-Bench-201's 15,625 cells from scratch;
looking a derived cell up gives what retraining it would (``hp=200``: the
200-epoch protocol, averaged over the benchmark's seeds), for free:

* ``cifar10``: ``test`` is trained on CIFAR-10 train+valid and tested on its test
  set (the benchmark's ``cifar10`` / ``ori-test``); ``valid`` is trained on the
  train half and measured on the valid half (``cifar10-valid`` / ``x-valid``);
* ``cifar100`` and ``ImageNet16-120``: ``valid`` and ``test`` are the two halves
  of the test set (``x-valid`` / ``x-test``).

The benchmark is read through ``nats_bench``'s own API (``create(..., 'tss')``,
``query_index_by_arch``, ``get_more_info``) from either form it comes in:

* a directory of per-cell pickles (``NATS-tss-v1_0-3ffb9-simple``: ``meta.pickle.pbz2``
  and ``000000.pickle.pbz2`` ...), read lazily (``fast_mode=True``);
* one bz2 pickle of the whole benchmark (``meta_archs``, ``arch2infos``,
  ``evaluated_indexes``), read at once.

These are Python pickles, which can run code when loaded. Every file is first
read with an unpickler that builds only plain containers and numbers (no
classes, no network weights), so a file cannot run code; one that holds
anything else is refused naming what it held.
"""
from __future__ import annotations

import bz2
import math
import pickle
from pathlib import Path
from typing import Any

from nas.utils.errors import UserError

HP = "200"  # the 200-epoch training protocol (the benchmark also has "12", a short one)
DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
INSTALL_HINT = 'pip install nats_bench (or pip install -e ".[nasbench]")'
METRIC_NAME = "NB201 benchmark CIFAR-10 test accuracy (hp=200)"  # what ``cifar10_test`` is


class _Refused(pickle.UnpicklingError):
    """The file asked for a class outside the allowed ones."""


class _ResultsUnpickler(pickle.Unpickler):
    """Builds plain containers and numbers only (what the benchmark's result dicts hold)."""

    _ALLOWED = {("collections", "OrderedDict"), ("collections", "defaultdict"),
                *(("builtins", name) for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float",
                                                   "complex", "str", "bytes", "bool")),
                ("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"it holds a {module}.{name} object, not plain results")


def _read(path: Path) -> Any:
    """A benchmark pickle (bz2-compressed) read without running code; ``UserError`` if it cannot be."""
    try:
        with bz2.open(path, "rb") as f:
            return _ResultsUnpickler(f).load()
    except _Refused as e:
        raise UserError(f"cannot read NAS-Bench-201 benchmark file {str(path)!r}: {e}; use NATS-Bench's "
                        "topology benchmark without weights (NATS-tss-v1_0-3ffb9-simple)") from None
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, RecursionError) as e:
        first = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise UserError(f"cannot read NAS-Bench-201 benchmark file {str(path)!r} ({first}); it is not a "
                        "NATS-Bench topology benchmark file (a bz2 pickle, e.g. in NATS-tss-v1_0-3ffb9-simple)"
                        ) from None


class NB201Benchmark:
    """The NATS-Bench topology benchmark, opened once, looked up per cell.

    Args:
        path: The benchmark: a directory of per-cell pickles (``NATS-tss-v1_0-3ffb9-simple``) or one
            pickle of the whole benchmark.

    Raises:
        UserError: ``nats_bench`` is not installed, the path is missing, or it is not a
            NATS-Bench topology benchmark (one line naming the fix).
    """

    def __init__(self, path: str | Path):
        try:
            import nats_bench
            from nats_bench.api_utils import PICKLE_EXT
        except ImportError:
            raise UserError(f"search.nb201_benchmark / --benchmark needs the nats_bench package: {INSTALL_HINT}") from None
        self.path = Path(path)
        self._ext = PICKLE_EXT
        if self.path.is_dir():
            meta = self.path / f"meta.{PICKLE_EXT}"
            if not meta.is_file():
                raise UserError(f"NAS-Bench-201 benchmark directory {str(self.path)!r} has no meta.{PICKLE_EXT}; "
                                "pass the unpacked NATS-tss-v1_0-3ffb9-simple directory")
            self._check_keys(_read(meta), ("meta_archs",))
            source, fast = str(self.path), True
        elif self.path.is_file():
            source, fast = _read(self.path), False
            self._check_keys(source, ("meta_archs", "arch2infos", "evaluated_indexes"))
        else:
            raise UserError(f"NAS-Bench-201 benchmark {str(self.path)!r} does not exist; pass the NATS-Bench "
                            "topology benchmark (the NATS-tss-v1_0-3ffb9-simple directory)")
        try:
            self.api = nats_bench.create(source, "tss", fast_mode=fast, verbose=False)
        except (ValueError, KeyError, TypeError, AttributeError, AssertionError) as e:
            raise self._malformed(e) from None
        if not self.api.meta_archs or not all(isinstance(a, str) for a in self.api.meta_archs):
            raise self._malformed("its 'meta_archs' are not arch strings")

    def _malformed(self, e: Any) -> UserError:
        first = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        return UserError(f"{str(self.path)!r} is not a NATS-Bench topology benchmark ({first}); pass the "
                         "NATS-tss-v1_0-3ffb9-simple directory (or a pickle of the whole benchmark)")

    def _check_keys(self, data: Any, keys: tuple[str, ...]) -> None:
        missing = [k for k in keys if not isinstance(data, dict) or k not in data]
        if missing:
            raise self._malformed(f"it lacks {', '.join(map(repr, missing))}")

    def _arch_file(self, index: int) -> Path | None:
        """The per-cell pickle of a benchmark directory (as ``nats_bench`` names it), None if absent."""
        for name in (f"{index:06d}.{self._ext}", f"{index:d}.{self._ext}"):
            if (self.path / name).is_file():
                return self.path / name
        return None

    def lookup(self, arch: str) -> dict | None:
        """The benchmark's accuracies (%) of a cell, or None if the benchmark has no results for it.

        Args:
            arch: The NAS-Bench-201 arch string (``|nor_conv_3x3~0|+|...|``).

        Returns:
            ``{"index": i, "cifar10": {"test": .., "valid": ..}, "cifar100": {..}, "ImageNet16-120": {..}}``
            (hp=200, the mean over the benchmark's seeds).

        Raises:
            UserError: the cell's entry is malformed.
        """
        index = self.api.query_index_by_arch(arch)
        if index < 0:
            return None
        if self.api.fast_mode and index not in self.api.arch2infos_dict:
            path = self._arch_file(index)
            if path is None:
                return None
            _read(path)  # refuses a file that would run code before nats_bench unpickles it
        elif not self.api.fast_mode and index not in self.api.arch2infos_dict:
            return None  # in the benchmark's list, but not evaluated in this file
        try:
            out: dict[str, Any] = {"index": index}
            c10 = self.api.get_more_info(index, "cifar10", hp=HP, is_random=False)
            c10_valid = self.api.get_more_info(index, "cifar10-valid", hp=HP, is_random=False)
            out["cifar10"] = {"test": _pct(c10["test-accuracy"]), "valid": _pct(c10_valid["valid-accuracy"])}
            for dataset in DATASETS[1:]:
                info = self.api.get_more_info(index, dataset, hp=HP, is_random=False)
                out[dataset] = {"test": _pct(info["test-accuracy"]), "valid": _pct(info["valid-accuracy"])}
        except (KeyError, ValueError, TypeError, AttributeError, IndexError, AssertionError) as e:
            first = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
            raise UserError(f"NAS-Bench-201 benchmark {str(self.path)!r}: the entry of cell {index} ({arch}) "
                            f"is malformed or lacks hp={HP} results ({type(e).__name__}: {first}); "
                            "use the complete NATS-tss-v1_0-3ffb9-simple benchmark") from None
        return out


def _pct(value: Any) -> float:
    """An accuracy as a finite float, rounded as metrics are."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"non-finite accuracy {value}")
    return round(value, 5)


def experiment_score(benchmark: NB201Benchmark, genotype_path: Path) -> dict:
    """What ``nas.experiment`` records for a cell scored by lookup instead of retraining.

    Returns:
        A ``final.json``-like record: ``genotype``, ``test_acc`` (the NB201 benchmark's CIFAR-10 test
        accuracy, hp=200), ``train_time`` 0 and the whole ``benchmark`` entry.

    Raises:
        UserError: the cell is not in the benchmark, or its genotype is not an NB201 cell.
    """
    from nas.spaces.genotype import load_genotype

    space, genotype = load_genotype(genotype_path, "nb201")
    arch = space.format(genotype)
    entry = benchmark.lookup(arch)
    if entry is None:
        raise UserError(f"cell {arch} ({str(genotype_path)!r}) has no results in the NAS-Bench-201 benchmark "
                        f"{str(benchmark.path)!r}; use the complete NATS-tss-v1_0-3ffb9-simple benchmark")
    return {"genotype": arch, "test_acc": entry["cifar10"]["test"], "train_time": 0.0, "benchmark": entry}
