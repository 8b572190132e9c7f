"""A 3-layer chain space searched from the command line (docs/custom_spaces.md):

python train_search.py model.space=examples.chain_space:ChainSpace data.dataset=synthetic
"""
import torch.nn as nn

from nas import LayerChoice


def candidates(c: int) -> dict:
    conv = lambda k: nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, bias=False), nn.BatchNorm2d(c), nn.ReLU())  # noqa: E731
    return {"conv3": conv(3), "conv5": conv(5), "maxpool": nn.MaxPool2d(3, 1, 1), "skip": nn.Identity()}


class ChainSpace(nn.Module):
    """stem -> 3 searched layers -> pooled linear head; the config's model.C is the width."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, C: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C), nn.ReLU())
        self.layers = nn.Sequential(*(LayerChoice(candidates(C), label=f"layer{i}") for i in range(3)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, num_classes))

    def forward(self, x):  # [B, in_channels, H, W] -> [B, num_classes]
        return self.head(self.layers(self.stem(x)))
