"""Image batches in training, shared by the tasks: normalisation as the runtime's, and augmentations."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def to_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> normalised float32 ``[N, 3, H, W]``, as the runtime's preprocessing."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std ``[C]`` of uint8 ``[N, H, W, C]`` images scaled to [0, 1]: the
    normalisation a model is trained with and the manifest records."""
    scaled = images.float().div_(255.0)
    return scaled.mean(dim=(0, 1, 2)), scaled.std(dim=(0, 1, 2))


def flip_choice(count: int, generator: torch.Generator, enabled: bool) -> torch.Tensor:
    """bool ``[count]``: which samples of a batch to mirror left-right (each with probability 0.5);
    none when not ``enabled``, and then ``generator`` is left untouched."""
    if not enabled:
        return torch.zeros(count, dtype=torch.bool)
    return torch.rand(count, generator=generator) < 0.5


def mirror(batch: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``batch`` (images ``[N, H, W, C]`` or maps ``[N, H, W]``) with the ``chosen`` samples mirrored left-right."""
    if not chosen.any():
        return batch
    batch = batch.clone()
    batch[chosen] = batch[chosen].flip(2)
    return batch


def mirror_boxes(boxes: torch.Tensor, width: float) -> torch.Tensor:
    """Boxes ``[..., 4]`` (x1, y1, x2, y2) in an image ``width`` wide, mirrored left-right with it."""
    return torch.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], -1)


def random_shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = 4) -> torch.Tensor:
    """Translate each uint8 ``[N, H, W, C]`` image by up to ``max_shift`` px (edge-replicated)."""
    n, h, w, _ = images.shape
    padded = F.pad(images.permute(0, 3, 1, 2).float(), [max_shift] * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])
    return out.permute(0, 2, 3, 1).to(torch.uint8)


def random_resample(images: torch.Tensor, generator: torch.Generator, sizes: tuple[float, ...] = (0.5, 0.625, 0.75),
                    p: float = 0.5) -> torch.Tensor:
    """Blur uint8 ``[N, H, W, C]`` images as a resize to the model's input would: each, with
    probability ``p``, is shrunk to one of ``sizes`` (fractions of its size, antialiased) and
    enlarged back (bilinear). Normalised coordinates stay valid; the model learns to take images
    of other sizes than its input."""
    n, h, w, _ = images.shape
    choice = torch.randint(len(sizes), (n,), generator=generator)
    chosen = torch.rand(n, generator=generator) < p
    out = images.permute(0, 3, 1, 2).float()
    for k, size in enumerate(sizes):
        group = (chosen & (choice == k)).nonzero().flatten()
        if len(group):
            small = F.interpolate(out[group], scale_factor=size, mode="bilinear", antialias=True)
            out[group] = F.interpolate(small, size=(h, w), mode="bilinear")
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
