"""Your own space: LayerChoice in a plain module, ModuleSpace, model.space=module:attribute, the guide's commands."""
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import search_spaces  # noqa: F401  (the built-in spaces, as the commands have them)
from nas import LayerChoice, ModuleSpace, UserError
from nas.cli.build import build_searcher
from nas.config import build_config
from nas.spaces.genotype import load_genotype
from nas.spaces.space import get_space

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "custom_spaces.md"
TINY = ["data.dataset=synthetic", "data.synthetic_size=64", "data.image_size=8", "data.batch_size=16",
        "data.synthetic_classes=3", "model.C=4", "search.epochs=2", "seed=1",
        "deterministic=true", "search.report=false", "search.progress=false"]


class Counted(nn.Module):
    """A conv that counts its calls (to see which candidates ran)."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.conv, self.bn, self.calls = nn.Conv2d(c, c, k, padding=k // 2), nn.BatchNorm2d(c), 0

    def forward(self, x):
        self.calls += 1
        return torch.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    """Two labelled choices with different candidate sets (a masked column) and one sharing a label."""

    def __init__(self, num_classes: int = 3, in_channels: int = 3, C: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, C, 3, padding=1)
        self.a = LayerChoice({"c1": Counted(C, 1), "c3": Counted(C, 3), "skip": nn.Identity()}, label="a")
        self.b = LayerChoice({"c3": Counted(C, 3), "c5": Counted(C, 5)}, label="b")
        self.b_again = LayerChoice({"c3": Counted(C, 3), "c5": Counted(C, 5)}, label="b")
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, num_classes))

    def forward(self, x):  # [B, in_channels, H, W] -> [B, num_classes]
        return self.head(self.b_again(self.b(self.a(self.stem(x)))))


def space_and_supernet(mode="gdas"):
    space = ModuleSpace(Net, name="test-net")
    return space, space.build_supernet(mode=mode, num_classes=3, C=4)


def calls(layer: LayerChoice) -> dict[str, int]:
    return {n: getattr(layer.candidate(n), "calls", 0) for n in layer.candidate_names}


def test_the_space_reads_labels_candidates_and_masks_what_a_choice_lacks():
    space, supernet = space_and_supernet()
    assert space.op_names == ("c1", "c3", "skip", "c5")
    assert space.edge_names() == {"choices": ["a", "b"]}
    allowed = supernet.architecture.allowed_choices
    assert allowed.tolist() == [[True, True, True, False], [False, True, False, True]]
    assert set(supernet.architecture.state_dict()) >= {"logits.choices"}
    assert any(k.startswith("architecture.logits") for k in supernet.state_dict())
    traits = space.op_traits()
    assert traits["skip"].skip and traits["skip"].parameter_free and not traits["c3"].parameter_free
    assert [t.zero for t in supernet.net.b.choice.traits] == [True, False, True, False]  # placeholders: zero


def test_candidates_of_one_name_with_different_traits_are_refused_in_one_line():
    def factory():
        net = nn.Sequential(LayerChoice({"op": nn.Conv2d(2, 2, 1)}), LayerChoice({"op": nn.ReLU()}))
        return net
    with pytest.raises(UserError, match=r"candidates named 'op' have different traits \(learned at '0', parameter-free at '1'\); name"):
        ModuleSpace(factory).op_names


def test_a_hard_sample_runs_only_the_sampled_candidate_and_trains_its_logit():
    torch.manual_seed(0)
    _, supernet = space_and_supernet()
    layers = {"a": supernet.net.a, "b": supernet.net.b, "b_again": supernet.net.b_again}
    x = torch.randn(2, 3, 8, 8)
    seen = set()
    for _ in range(30):
        before = {k: calls(l) for k, l in layers.items()}
        sample = supernet.architecture.sample("gdas", tau=1.0)
        out = supernet.forward_sample(x, sample)
        ops = supernet.architecture.op_names
        for key, layer in layers.items():
            ran = {n for n, c in calls(layer).items() if c != before[key][n]}
            chosen = ops[sample.indices["choices"][0 if key == "a" else 1]]
            assert ran <= {chosen} and (ran == {chosen} or chosen == "skip"), (key, ran, chosen)
            seen.add((key, chosen))
        supernet.architecture.zero_grad()
        out.square().mean().backward()
        grad = supernet.architecture.logits["choices"].grad
        assert grad is not None and grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0
        assert grad[0, 3] == 0 and grad[1, 0] == 0 and grad[1, 2] == 0  # masked columns get nothing
    assert {c for k, c in seen if k == "a"} == {"c1", "c3", "skip"}  # a column a choice lacks is never drawn
    assert {c for k, c in seen if k == "b"} == {"c3", "c5"}


def test_a_layer_choice_outside_a_supernet_says_how_to_run_it():
    with pytest.raises(RuntimeError, match="outside a ModuleSpace supernet; derive a network"):
        Net()(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("mode", ["snas", "darts"])
def test_soft_modes_mix_the_offered_candidates_only(mode):
    torch.manual_seed(0)
    _, supernet = space_and_supernet(mode)
    supernet.train()
    out = supernet(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert calls(supernet.net.b) == {"c3": 1, "c5": 1}


def test_the_derived_module_computes_the_supernets_genotype_path_with_inherited_weights():
    torch.manual_seed(0)
    space, supernet = space_and_supernet()
    supernet.train()
    with torch.no_grad():  # a few passes give the BNs running statistics of their own
        for _ in range(5):
            supernet(torch.randn(4, 3, 8, 8))
        supernet.architecture.logits["choices"].normal_()
    genotype = space.derive_genotype(supernet.architecture.probabilities())
    net = space.derive_module(supernet, genotype).eval()
    supernet.eval()
    assert not any(isinstance(m, LayerChoice) for m in net.modules())
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        expected = supernet.forward_sample(x, supernet.genotype_sample(space.genotype_edges(genotype)))
        assert torch.allclose(net(x), expected, atol=1e-6)
        assert torch.allclose(supernet(x), expected, atol=1e-6)  # eval runs the argmax op of each label
    # Its parameters are copies: training the derived module leaves the supernet as it was.
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    next(net.parameters()).data.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())
    fresh = space.build_network(genotype, num_classes=3, C=4)  # scratch: new weights, same layout
    assert [type(m) for m in fresh.modules()] == [type(m) for m in net.modules()]
    assert not torch.equal(fresh.stem.weight, net.stem.weight)


def test_the_flops_table_gives_each_derived_modules_flops_exactly():
    from nas.cost.objective import cost_tables, expected_cost
    from nas.engine.train import count_flops

    space, supernet = space_and_supernet()
    tables = cost_tables(supernet, (3, 8, 8), "flops")
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(6):
        genotype = space.random_genotype(generator)
        seen.add(space.format(genotype))
        sample = supernet.genotype_sample(space.genotype_edges(genotype))
        # b and b_again share a row: each runs the op, so the row's entry counts both
        assert expected_cost(sample, tables).item() == count_flops(space.derive_module(supernet, genotype), (3, 8, 8))
    assert len(seen) > 2


def test_genotype_strings_round_trip_and_bad_ones_are_one_line():
    space, _ = space_and_supernet()
    g = space.random_genotype(torch.Generator().manual_seed(0))
    assert space.parse(space.format(g)) == g and re.fullmatch(r"a=\w+,b=\w+", space.format(g))
    for text, why in [("a=c1", "no choice for b"), ("a=c5,b=c3", "'a' has no candidate 'c5'"),
                      ("a=c1,b=c3,z=c1", "unknown label 'z'"), ("a=c1,a=c3,b=c3", "appears twice"),
                      ("a c1", "not label=candidate")]:
        with pytest.raises(UserError, match=why) as info:
            space.parse(text)
        assert "\n" not in str(info.value) and "expected e.g. 'a=c1,b=c3'" in str(info.value)


def write_user_package(where: Path, module: str) -> None:
    """A user's module outside the project (nothing of the project is edited)."""
    (where / f"{module}.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        from nas import LayerChoice

        class Chain(nn.Module):
            def __init__(self, num_classes=10, in_channels=3, C=8):
                super().__init__()
                self.stem = nn.Conv2d(in_channels, C, 3, padding=1)
                self.body = nn.Sequential(*(LayerChoice({"conv": nn.Conv2d(C, C, 3, padding=1),
                                                         "pool": nn.AvgPool2d(3, 1, 1)}) for _ in range(2)))
                self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, num_classes))

            def forward(self, x):
                return self.head(self.body(self.stem(x)))

        not_a_space = 3
        an_instance = nn.Linear(2, 2)
        def builds_nothing_to_search(num_classes=10):
            return nn.Linear(2, num_classes)
    """))


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """The working directory holds the user's module, as when a user runs a command next to their code."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_search_of_a_users_module_resumes_where_an_uninterrupted_one_ends(user_dir):
    write_user_package(user_dir, "resume_space")
    cfg = build_config({}, TINY + ["model.space=resume_space:Chain", "search.epochs=3"])
    full = build_searcher(cfg, user_dir / "full", log=lambda s: None)
    assert full.space.edge_names() == {"choices": ["body.0", "body.1"]}  # no labels: module paths
    (user_dir / "full").mkdir()
    full.run()
    (user_dir / "cut").mkdir()
    build_searcher(cfg, user_dir / "cut", log=lambda s: None).run(until_epoch=1)
    second = build_searcher(cfg, user_dir / "cut", log=lambda s: None)
    second.resume(user_dir / "cut" / "checkpoint.pt")
    assert second.epoch == 1
    second.run()
    a, b = full.supernet.state_dict(), second.supernet.state_dict()
    assert a.keys() == b.keys() and "architecture.logits.choices" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    space, genotype = load_genotype(user_dir / "cut" / "genotype.yaml")
    assert space.name == "resume_space:Chain" and space.format(genotype).startswith("body.0=")


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:Net", "no module named 'no_such_module_xyz'; run from the directory that holds it"),
    ("errors_space:Missing", "module 'errors_space' has no attribute 'Missing'; it has Chain, LayerChoice"),
    ("errors_space:not_a_space", "is a int; it must be a SearchSpace (class or instance), an nn.Module class"),
    ("os:getcwd", "is a builtin_function_or_method; it must be a SearchSpace"),
    ("errors_space:an_instance", "is an nn.Module instance; name its class or a function that builds it"),
    ("errors_space:builds_nothing_to_search", "builds no LayerChoice; mark the layers to search"),
    ("errors_space:1x", "is not a registered name or a 'package.module:Attribute'"),
])
def test_a_bad_space_name_is_one_line_exit_2(user_dir, capsys, spec, message):
    import train_search

    write_user_package(user_dir, "errors_space")
    assert train_search.main(["--out", str(user_dir / "run"), *TINY, f"model.space={spec}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (user_dir / "run").exists()


def guide_commands() -> list[list[str]]:
    """The guide's command lines of the example (``python train_search.py ...``), split as a shell does."""
    text = GUIDE.read_text()
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    return [shlex.split(line) for line in lines if "examples.chain_space" in line or "nas.report runs/chain" in line]


def test_the_guides_python_blocks_run():
    """Every ```python block of docs/custom_spaces.md, in order, in one namespace."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    torch.manual_seed(0)
    for block in blocks:
        exec(compile(block, str(GUIDE), "exec"), namespace)  # noqa: S102


@pytest.mark.slow
def test_the_example_is_searched_retrained_and_reported_from_the_command_line(tmp_path):
    """The guide's commands, run as a user runs them (with tiny data appended): search, retrain, report."""
    commands = guide_commands()
    assert [c[:2] for c in commands] == [["python", "train_search.py"], ["python", "train_final.py"],
                                         ["python", "-m"]]
    run_dir, final_dir = tmp_path / "chain", tmp_path / "chain-final"
    tiny = [o for o in TINY if o != "search.report=false"] + ["train.epochs=1", "data.synthetic_size=32"]
    script = ["import sys, train_search, train_final, nas.report.report as r",
              "rc = [train_search.main(sys.argv[1].split('|')), train_final.main(sys.argv[2].split('|')),"
              " r.main(sys.argv[3].split('|'))]",
              "print('exit statuses', rc)"]
    argv = []
    for command in commands:
        args = [a.replace("runs/chain", str(run_dir)) for a in command[2:]]
        if command[1] == "-m":
            args = args[1:]
        else:
            args = args + tiny
        argv.append("|".join(args))
    p = subprocess.run([sys.executable, "-c", "\n".join(script), *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert "exit statuses [0, 0, 0]" in p.stdout, p.stdout + p.stderr
    assert "derived genotype: layer0=" in p.stdout and "test accuracy" in p.stdout
    assert (run_dir / "genotype.yaml").is_file() and (final_dir / "final.json").is_file()
    assert (run_dir / "report" / "cell_choices.png").is_file()
    space = get_space("examples.chain_space:ChainSpace")  # as the config names it
    assert load_genotype(run_dir / "genotype.yaml")[0] is space


def test_the_experiment_compares_a_users_module_search_with_random_chains(user_dir, capsys):
    """``python -m nas.experiment`` on a module outside the project, named only in the two configs."""
    from nas.experiment.experiment import main

    write_user_package(user_dir, "experiment_space")
    data = "data: {dataset: synthetic, synthetic_size: 32, image_size: 8, batch_size: 16, synthetic_classes: 3}\n"
    model = "model: {space: 'experiment_space:Chain', C: 4}\n"
    (user_dir / "search.yaml").write_text(data + model + "search: {epochs: 1, report: false, progress: false}\n")
    (user_dir / "final.yaml").write_text(data + model + "train: {epochs: 1}\n")
    assert main(["--search-config", "search.yaml", "--final-config", "final.yaml", "--seeds", "1", "--random", "2",
                 "--retrain-seeds", "1", "--out", "exp"]) == 0
    results = (user_dir / "exp" / "results.md").read_text()
    assert re.search(r"\| search-seed0 \| searched \|.*`body\.0=(conv|pool),body\.1=(conv|pool)`", results)
    assert len(re.findall(r"\| random-\d \| random \|", results)) == 2


def test_a_setting_the_users_factory_does_not_take_is_one_line(user_dir, capsys):
    import train_search

    write_user_package(user_dir, "arguments_space")
    assert train_search.main(["--out", "run", *TINY, "model.space=arguments_space:Chain", "model.N=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config key 'model.N' is not available in the arguments_space:Chain space" in err
    assert ModuleSpace(Net).supernet_arguments == {"C", "gdas_gate"}  # Net takes C, not N or input_size


def test_a_genotype_file_never_imports_the_module_it_names(user_dir):
    """Only a config names a module to import; a genotype file of an unloaded module space is refused."""
    write_user_package(user_dir, "never_imported")
    (user_dir / "genotype.yaml").write_text("space: never_imported:Chain\ngenotype: body.0=conv,body.1=pool\n")
    with pytest.raises(UserError, match=r"space 'never_imported:Chain', which is not loaded; name it in the config "
                                        r"\(model.space=never_imported:Chain\)"):
        load_genotype(user_dir / "genotype.yaml")
    assert "never_imported" not in sys.modules
    get_space("never_imported:Chain")  # what a config naming it does
    space, genotype = load_genotype(user_dir / "genotype.yaml")
    assert space.format(genotype) == "body.0=conv,body.1=pool"
