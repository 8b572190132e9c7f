"""The paper configs hold the official code's settings; our variants differ only where they say so."""
from pathlib import Path

import pytest

import search_spaces  # noqa: F401  (registers the spaces)
from nas.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER = ["nb201_gdas_cifar10", "nb201_snas_cifar10", "nb201_darts_cifar10",
         "darts_gdas_cifar10", "darts_snas_cifar10", "darts_darts_cifar10"]


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_derive_as_published_with_none_derivable(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.derive_exclude == [] and not cfg.model.exclude_zero
    assert (cfg.model.max_skip, cfg.model.max_parameter_free) == (-1, -1)
    assert (cfg.search.aux_skip, cfg.search.sdarts_epsilon, cfg.search.warmup_epochs) == (False, 0.0, 0)


@pytest.mark.parametrize("name, epochs, batch, split", [
    ("nb201_gdas_cifar10", 240, 64, 0.5),   # configs/nas-benchmark/algos/GDAS.config
    ("nb201_darts_cifar10", 50, 64, 0.5),   # configs/nas-benchmark/algos/DARTS.config
    ("darts_gdas_cifar10", 250, 256, 0.5),  # configs/search-opts/GDAS-NASNet-CIFAR.config
    ("darts_darts_cifar10", 50, 64, 0.5),   # DARTS train_search.py defaults
])
def test_paper_configs_use_the_official_budgets(name, epochs, batch, split):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert (cfg.search.epochs, cfg.data.batch_size, cfg.data.split) == (epochs, batch, split)


@pytest.mark.parametrize("name", ["nb201_gdas_cifar10", "nb201_snas_cifar10"])
def test_none_free_variants_differ_from_the_paper_config_only_in_derivation(name):
    paper = load_config(CONFIGS / f"{name}.yaml").to_dict()
    ours_path = CONFIGS / f"{name}_nonone.yaml"
    ours = load_config(ours_path).to_dict()
    assert ours["model"].pop("exclude_zero") is True
    paper["model"].pop("exclude_zero")
    assert ours == paper
    header = ours_path.read_text().split("\nseed:")[0]
    assert "Provisional" in header and "test images" in header and "docs/search_quality.md" in header


def test_bn_layout_key_reaches_the_supernet_and_is_refused_where_a_space_lacks_it():
    from nas.cli.build import build_searcher
    from nas.config import build_config
    from nas.utils.errors import UserError
    tiny = ["data.dataset=synthetic", "data.synthetic_size=32", "data.image_size=8", "data.batch_size=8",
            "model.C=4", "model.N=1", "search.epochs=1"]
    quiet = lambda *_: None
    for layout, tracked in (("official", True), ("batch_stats", False)):
        net = build_searcher(build_config({}, tiny + [f"model.bn_layout={layout}"]), log=quiet).supernet
        assert net.bn_layout == layout and net.stem[1].track_running_stats is tracked
    assert load_config(CONFIGS / "quickstart.yaml").model.bn_layout == "official"
    with pytest.raises(UserError, match="model.bn_layout"):
        build_config({}, ["model.bn_layout=tracked"])
    with pytest.raises(UserError, match="not available in the mobilenet space"):
        build_searcher(build_config({}, tiny + ["model.space=mobilenet", "model.bn_layout=batch_stats"]), log=quiet)
