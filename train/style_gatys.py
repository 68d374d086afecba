"""Gatys et al. (2016) style transfer by optimisation: the pixels themselves are optimised.

    python -m visionrt.train.style_gatys CONTENT.png STYLE.png --out OUT.png [--steps 300]

Same losses and fixed random feature network as the feed-forward ``style`` task (see
``visionrt.runtime.tasks.style``), so the two can be compared: this tool is slow (hundreds of
forward/backward passes per image) but needs no training; the feed-forward network is one pass.
Writes the stylised image and, beside it, ``<out>.compare.png`` (content | style | output).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..runtime import atomic
from ..runtime.images import load_image
from ..runtime.render import side_by_side
from ..runtime.images import to_float, to_uint8
from ..runtime.tasks.style import LossNetwork
from .models.style import CONTENT_WEIGHT, STYLE_WEIGHT, GatysLoss


def stylise(content: np.ndarray, style: np.ndarray, steps: int = 300, lr: float = 0.02,
            style_weight: float = STYLE_WEIGHT, content_weight: float = CONTENT_WEIGHT,
            network: LossNetwork = LossNetwork(), log=None) -> tuple[np.ndarray, dict[str, float]]:
    """RGB uint8 ``content`` restyled after ``style`` by ``steps`` Adam steps on the pixels
    (started from the content photo, kept in [0, 1]); returns the image and its final losses."""
    objective = GatysLoss(network, torch.from_numpy(to_float(style)), style_weight, content_weight)
    target = torch.from_numpy(to_float(content))[None]
    x = target.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    for step in range(steps):
        total, style_term, content_term = objective(x, target)
        optimizer.zero_grad()
        total.sum().backward()
        optimizer.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        if log is not None and (step + 1) % max(1, steps // 10) == 0:
            log(f"step {step + 1}/{steps}: style {style_term.item():.4f}  content {content_term.item():.4f}")
    with torch.no_grad():
        _, style_term, content_term = objective(x, target)
        _, content_style, _ = objective(target, target)
    losses = {"style_loss": style_term.item(), "content_loss": content_term.item(),
              "content_style_loss": content_style.item(),
              "style_reduction": content_style.item() / style_term.item()}
    return to_uint8(x[0].detach().numpy()), losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visionrt.train.style_gatys", description=__doc__.splitlines()[0])
    parser.add_argument("content", type=Path)
    parser.add_argument("style", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="output PNG")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--style-weight", type=float, default=STYLE_WEIGHT)
    parser.add_argument("--content-weight", type=float, default=CONTENT_WEIGHT)
    parser.add_argument("--max-side", type=int, default=256, help="shrink the content photo to this (px)")
    args = parser.parse_args(argv)
    content = Image.fromarray(load_image(args.content))
    content.thumbnail((args.max_side, args.max_side), Image.Resampling.LANCZOS)
    style = load_image(args.style)
    content = np.asarray(content)
    output, losses = stylise(content, style, args.steps, args.lr, args.style_weight, args.content_weight,
                             log=lambda m: print(m, file=sys.stderr))
    with atomic.atomic_path(args.out) as tmp:
        Image.fromarray(output).save(tmp, format="PNG")
    compare = args.out.with_suffix(".compare.png")
    with atomic.atomic_path(compare) as tmp:
        picture = side_by_side([("content", content), ("style", style), ("Gatys", output)])
        Image.fromarray(picture).save(tmp, format="PNG")
    print(json.dumps({"output": str(args.out), "compare": str(compare), **losses}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
