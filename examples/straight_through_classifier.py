"""A classifier that learns through hard, discrete choices: the straight-through Gumbel-softmax.

    python examples/straight_through_classifier.py [--quick] [--out DIR] [--epochs E] [--seed S]

The bundled 8x8 digits go through an encoder whose output is a code of
``GROUPS`` categorical variables with ``CATEGORIES`` values each. In training
every variable is a *hard* Gumbel-softmax sample: exactly one-hot in the
forward pass, so the decoder only ever sees discrete codes, while the gradient
is the relaxed sample's (straight-through), so the encoder still learns. In
eval mode each variable is the argmax of its logits, so predictions are
deterministic, as a searched cell is derived by argmax after the search.

Prints train and eval accuracy (eval mode: argmax codes) and writes
``DIR/straight_through_classifier.png`` with the training curves.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import nas  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nas import gumbel_softmax
from nas.data import load_digits

GROUPS, CATEGORIES = 8, 8


class CategoricalBottleneck(nn.Module):
    """Turns logits ``[B, groups, categories]`` into one-hot codes of the same shape.

    Training: a hard straight-through Gumbel-softmax sample at temperature
    ``tau``. Eval: the one-hot of the argmax (no noise, deterministic).
    """

    def __init__(self, tau: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        self.tau, self.generator = tau, generator

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self.training:
            return gumbel_softmax(logits, tau=self.tau, hard=True, generator=self.generator)
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)


class DiscreteCodeClassifier(nn.Module):
    """Pixels -> MLP -> a discrete code (``groups`` one-hot variables) -> linear classifier."""

    def __init__(self, in_features: int, num_classes: int, generator: torch.Generator | None = None):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_features, 128), nn.ReLU(), nn.Linear(128, GROUPS * CATEGORIES))
        self.bottleneck = CategoricalBottleneck(generator=generator)
        self.decoder = nn.Linear(GROUPS * CATEGORIES, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.bottleneck(self.encoder(x).view(-1, GROUPS, CATEGORIES))
        return self.decoder(code.flatten(1))


def digits(train: bool, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
    """Flattened digits standardised with the training set's per-pixel statistics."""
    images = load_digits(train=train)
    x, y = images.images.float().flatten(1) / images.scale, images.labels
    if mean is None:
        mean, std = x.mean(0), x.std(0).clamp_min(1e-3)
    return (x - mean) / std, y, mean, std


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train_mode: bool = False) -> float:
    """Accuracy (%) in eval mode (argmax codes), or with sampled codes if ``train_mode``."""
    model.train(train_mode)
    correct = (model(x).argmax(-1) == y).double().mean().item()
    model.train()
    return 100.0 * correct


def train(epochs: int, seed: int) -> tuple[DiscreteCodeClassifier, dict[str, list[float]], tuple]:
    """Adam on the cross-entropy of hard-sampled codes; tau anneals 2 -> 0.5 (cosine)."""
    torch.manual_seed(seed)
    x, y, mean, std = digits(train=True)
    x_test, y_test, _, _ = digits(train=False, mean=mean, std=std)
    model = DiscreteCodeClassifier(x.shape[1], 10, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(seed + 1)
    history: dict[str, list[float]] = {"loss": [], "train_sampled": [], "test_argmax": []}
    for epoch in range(epochs):
        model.bottleneck.tau = 0.5 + 0.75 * (1 + torch.cos(torch.tensor(torch.pi * epoch / max(epochs - 1, 1)))).item()
        total = 0.0
        for batch in torch.randperm(len(y), generator=order).split(64):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        history["loss"].append(total / len(y))
        history["train_sampled"].append(accuracy(model, x, y, train_mode=True))
        history["test_argmax"].append(accuracy(model, x_test, y_test))
    return model, history, (x, y, x_test, y_test)


def plot(path: Path, history: dict[str, list[float]]) -> None:
    """Loss and accuracies per epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = range(1, len(history["loss"]) + 1)
    loss_ax.plot(epochs, history["loss"], color="tab:blue")
    loss_ax.set_title("training loss (hard sampled codes)")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    acc_ax.plot(epochs, history["train_sampled"], color="tab:orange", label="train, sampled codes (train mode)")
    acc_ax.plot(epochs, history["test_argmax"], color="tab:green", label="test, argmax codes (eval mode)")
    acc_ax.set_title("accuracy")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.set_ylim(0, 100)
    acc_ax.legend(loc="lower right")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(f"digits through a discrete code of {GROUPS} one-hot variables x {CATEGORIES} values, "
                 "trained with straight-through Gumbel-softmax")
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 epochs instead of 40")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/examples", help="directory of the PNG (default runs/examples)")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))  # tiny matrices: more threads only contend
    epochs = args.epochs or (8 if args.quick else 40)
    model, history, (x, y, x_test, y_test) = train(epochs, args.seed)

    codes = model.bottleneck(model.encoder(x[:256]).view(-1, GROUPS, CATEGORIES))
    one_hot = bool(((codes == 0) | (codes == 1)).all() and (codes.sum(-1) == 1).all())
    model.eval()
    with torch.no_grad():
        deterministic = torch.equal(model(x_test), model(x_test))
    print(f"epochs {epochs}, final tau {model.bottleneck.tau:.2f}, final training loss {history['loss'][-1]:.3f}")
    print(f"codes in train mode are exactly one-hot: {one_hot}")
    print(f"eval mode is deterministic: {deterministic}")
    print(f"train accuracy (eval mode, argmax codes): {accuracy(model, x, y):.2f}%")
    print(f"train accuracy (train mode, sampled codes): {accuracy(model, x, y, train_mode=True):.2f}%")
    print(f"eval accuracy (test set, eval mode, argmax codes): {accuracy(model, x_test, y_test):.2f}%")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        plot(out / "straight_through_classifier.png", history)
    except ImportError:
        print('note: no picture without matplotlib: pip install -e ".[viz]"')
        return 0
    print(f"wrote {out / 'straight_through_classifier.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
