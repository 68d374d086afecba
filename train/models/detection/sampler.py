"""Balanced sampling of positive and negative examples per image (the RPN's and the box head's)."""
from __future__ import annotations

import torch


class BalancedSampler:
    """Up to ``per_image`` examples, at most ``positive_fraction`` of them positive; negatives fill the rest."""

    def __init__(self, per_image: int, positive_fraction: float):
        self.per_image, self.positive_fraction = per_image, positive_fraction

    def __call__(self, positive: torch.Tensor, negative: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean ``positive [R]``, ``negative [R]`` -> indices of the sampled positives and negatives."""
        pos = torch.nonzero(positive).flatten()
        neg = torch.nonzero(negative).flatten()
        num_pos = min(len(pos), int(self.per_image * self.positive_fraction))
        num_neg = min(len(neg), self.per_image - num_pos)
        pos = pos[torch.randperm(len(pos), generator=generator)[:num_pos]]
        neg = neg[torch.randperm(len(neg), generator=generator)[:num_neg]]
        return pos, neg
