"""``train_final.py --genotype``: a run directory, a genotype file, a published name or a native string."""
import pytest

import search_spaces
import train_final
from nas import UserError
from nas.spaces.genotype import genotype_record, load_genotype, published_names, resolve_genotype, save_genotype
from search_spaces.darts import PUBLISHED

NB201 = search_spaces.get("nb201")
NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _run_dir(tmp_path, arch=NB201_ARCH):
    run = tmp_path / "search-run"
    run.mkdir()
    save_genotype(run / "genotype.yaml", genotype_record(NB201, NB201.parse(arch), mode="gdas"))
    return run


def test_a_run_directory_means_its_genotype_yaml(tmp_path):
    run = _run_dir(tmp_path)
    space, genotype, file = resolve_genotype(str(run), "nb201")
    assert space is NB201 and NB201.format(genotype) == NB201_ARCH and file == run / "genotype.yaml"
    assert resolve_genotype(str(run / "genotype.yaml"), "nb201")[1:] == (genotype, file)


def test_a_text_file_with_a_bare_string_belongs_to_the_configured_space(tmp_path):
    path = tmp_path / "cell.txt"
    path.write_text(f"'{NB201_ARCH}'\n")  # a YAML string (a bare '|' would start a YAML block scalar)
    space, genotype, file = resolve_genotype(str(path), "nb201")
    assert space is NB201 and NB201.format(genotype) == NB201_ARCH and file == path


def test_published_names_resolve_to_their_own_space_whatever_is_configured():
    assert published_names() == {name: "darts" for name in PUBLISHED}
    for name, cell in PUBLISHED.items():
        space, genotype, file = resolve_genotype(name, "nb201")
        assert space.name == "darts" and genotype == cell and file is None


def test_a_native_string_of_the_configured_space():
    space, genotype, file = resolve_genotype(NB201_ARCH, "nb201")
    assert genotype == NB201.parse(NB201_ARCH) and file is None
    darts_text = str(PUBLISHED["GDAS_V1"])
    assert resolve_genotype(darts_text, "darts")[1] == PUBLISHED["GDAS_V1"]


@pytest.mark.parametrize("text, words", [
    ("DARTS_V3", ["not a run directory, a genotype file", "DARTS_V1 (darts)", "DARTS_V2 (darts)",
                  "GDAS_V1 (darts)", "genotype string of the nb201 space"]),
    ("runs/missing/genotype.yaml", ["no file or directory of that name exists", "DARTS_V2 (darts)"]),
    ("|nor_conv_3x3~0|", ["malformed NB201 arch string", "expected e.g."]),
])
def test_anything_else_is_one_line_listing_the_forms_and_names(text, words):
    with pytest.raises(UserError) as e:
        resolve_genotype(text, "nb201")
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_a_directory_without_a_genotype_is_named(tmp_path):
    with pytest.raises(UserError, match="directory without genotype.yaml"):
        resolve_genotype(str(tmp_path), "nb201")


def test_train_final_lists_the_names_on_a_bad_genotype(tmp_path, capsys):
    assert train_final.main(["--genotype", "DARTS_V9", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --genotype 'DARTS_V9'") and "DARTS_V2 (darts)" in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_train_final_records_a_string_genotype_as_a_genotype_file(tmp_path):
    out = tmp_path / "final"
    assert train_final.main(["--genotype", NB201_ARCH, "--out", str(out), "data.dataset=synthetic",
                             "data.synthetic_size=32", "data.image_size=8", "data.batch_size=16", "model.C=2",
                             "model.N=1", "train.epochs=1"]) == 0
    space, genotype = load_genotype(out / "genotype.yaml")
    assert space is NB201 and NB201.format(genotype) == NB201_ARCH
    # The recorded file is what --resume reads: giving the same string again is accepted.
    assert train_final.main(["--resume", str(out), "--genotype", NB201_ARCH]) == 0
    assert train_final.main(["--resume", str(out), "--genotype", str(_run_dir(tmp_path, NB201_ARCH.replace(
        "avg_pool_3x3~1", "skip_connect~1")))]) == 2
