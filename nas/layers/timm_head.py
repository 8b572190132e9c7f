"""The classifier interface timm models share, for the discrete networks of the built-in spaces.

timm's models (``resnet18``, ``mobilenetv2_100``, ...) split ``forward`` into
``forward_features`` (the last feature map) and ``forward_head`` (global pool,
then the linear classifier), expose the classifier through ``get_classifier``
and swap it with ``reset_classifier(num_classes, global_pool)``; with
``num_classes=0`` the network returns the pooled features. ``TimmClassifier``
gives a network those methods from its ``global_pool`` and ``classifier``
modules, with the same pooling types and the same results as timm's
``create_classifier``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d, create_classifier


def global_pool(pool_type: str = "avg") -> SelectAdaptivePool2d:
    """timm's flattening global pool (``avg``, ``max``, ``avgmax``, ``catavgmax``; ``''``: none)."""
    return SelectAdaptivePool2d(pool_type=pool_type, flatten=True)


class TimmClassifier:
    """Mixin for an ``nn.Module`` with ``global_pool``, ``classifier``, ``num_features`` and ``num_classes``.

    The module implements ``forward_features(x)``; its ``forward`` may call
    ``forward_head(forward_features(x))``.
    """

    global_pool: SelectAdaptivePool2d
    classifier: nn.Module
    num_features: int
    num_classes: int

    @property
    def head_hidden_size(self) -> int:
        """Width of the pooled features the classifier reads (timm's name)."""
        return self.num_features * self.global_pool.feat_mult()

    def get_classifier(self, name_only: bool = False) -> nn.Module | str:
        """The final linear layer (or its attribute name)."""
        return "classifier" if name_only else self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replaces the classifier with a new, freshly initialised one.

        Args:
            num_classes: Classes of the new classifier; 0 removes it, so that
                ``forward`` returns the pooled features ``[B, head_hidden_size]``.
            global_pool: Pooling type (see ``global_pool``); None keeps the current one.
        """
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        device = next(self.classifier.parameters(), next(iter(self.parameters()))).device  # type: ignore[attr-defined]
        self.num_classes = num_classes
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool,
                                                              device=device)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pool then classifier: ``[B, num_features, H, W]`` -> ``[B, num_classes]``.

        ``pre_logits=True`` stops after the pool: ``[B, head_hidden_size]``.
        """
        x = self.global_pool(x)
        return x if pre_logits else self.classifier(x)
