"""Drawing results onto images (Pillow): captions, boxes, skeletons, overlays.

Every helper takes RGB uint8 ``[H, W, 3]`` and coordinates in pixels of that image
(continuous: pixel column ``i`` spans ``[i, i + 1)``, as COCO boxes), and returns a new RGB uint8 array; small images are enlarged (nearest, by a whole factor) first
so that lines and text stay legible, and coordinates are scaled with them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 256  # small images are enlarged (nearest) so drawn text stays legible

#: Distinct, saturated colours for boxes, joints and limbs (cycled).
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190))

Colour = tuple[int, int, int]


def _scale(image: np.ndarray) -> int:
    return max(1, MIN_SIDE // max(1, min(image.shape[:2])))


def _canvas(image: np.ndarray) -> Image.Image:
    pil = Image.fromarray(image)
    scale = _scale(image)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST) if scale > 1 else pil


def _font(canvas: Image.Image) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(12, min(canvas.size) // 20))


def draw_boxes(image: np.ndarray, boxes: Sequence[Sequence[float]], labels: Sequence[str] = (),
               colours: Sequence[Colour] = PALETTE) -> np.ndarray:
    """Boxes ``(x1, y1, x2, y2)`` in pixels (edges), each in its colour (cycled) with its label
    (if given) on a filled tag above it, or inside it at the top edge of the image."""
    scale = _scale(image)
    canvas = _canvas(image)
    draw, font = ImageDraw.Draw(canvas), _font(canvas)
    line = max(2, min(canvas.size) // 128)
    for i, box in enumerate(boxes):
        colour = tuple(colours[i % len(colours)])
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        if i < len(labels):
            left, top, right, bottom = draw.textbbox((0, 0), labels[i], font=font)
            tag_h = bottom + 2
            ty = y1 - tag_h if y1 - tag_h >= 0 else y1
            draw.rectangle((x1, ty, x1 + right + 4, ty + tag_h), fill=colour)
            draw.text((x1 + 2, ty), labels[i], fill=_contrast(colour), font=font)
    return np.asarray(canvas)


def draw_skeleton(image: np.ndarray, points: np.ndarray, edges: Sequence[tuple[int, int]],
                  edge_colours: Sequence[Colour] = PALETTE, visible: np.ndarray | None = None) -> np.ndarray:
    """Points ``[K, 2]`` (x, y in pixels) as dots joined by ``edges`` (pairs of point indices),
    edge ``e`` in ``edge_colours[e]`` (cycled); points not ``visible`` (bool ``[K]``) are drawn
    hollow and their edges thin."""
    scale = _scale(image)
    canvas = _canvas(image)
    draw = ImageDraw.Draw(canvas)
    xy = np.asarray(points, np.float64)[:, :2] * scale
    visible = np.ones(len(xy), bool) if visible is None else np.asarray(visible, bool)
    width = max(2, min(canvas.size) // 80)
    for e, (a, b) in enumerate(edges):
        colour = tuple(edge_colours[e % len(edge_colours)])
        draw.line([tuple(xy[a]), tuple(xy[b])], fill=colour, width=width if visible[a] and visible[b] else 1)
    radius = width + 1
    for (x, y), seen in zip(xy, visible):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill="white" if seen else None,
                     outline="black", width=1)
    return np.asarray(canvas)


def _contrast(colour: Colour) -> str:
    """Black or white, whichever reads better on ``colour``."""
    return "black" if 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] >= 128 else "white"


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> the (enlarged) image with ``text`` on a bar beneath it."""
    pil = _canvas(image)
    font = ImageFont.load_default(size=max(12, pil.width // 16))
    bar = int(font.size * 1.6)
    out = Image.new("RGB", (pil.width, pil.height + bar), "black")
    out.paste(pil, (0, 0))
    ImageDraw.Draw(out).text((6, pil.height + bar // 5), text, fill="white", font=font)
    return np.asarray(out)


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5,
            keep: int | None = 0) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` with ``palette[labels]`` blended in at ``alpha``.

    ``labels``: integer ``[h, w]`` label map, resized (nearest) to ``H×W`` when it differs;
    ``palette``: uint8 ``[K, 3]``, one colour per label; pixels labelled ``keep`` (e.g. 0 =
    background; ``None``: none) show the image unchanged.
    """
    if labels.shape != image.shape[:2]:
        labels = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize(image.shape[1::-1], Image.NEAREST))
    colours = np.asarray(palette, np.float32)[labels]
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    if keep is not None:
        blended[labels == keep] = image[labels == keep]
    return np.rint(blended).clip(0, 255).astype(np.uint8)


def legend(image: np.ndarray, entries: Sequence[tuple[str, Colour]]) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> the (enlarged) image above rows of colour swatches, each
    followed by its text: ``entries`` is ``[(text, (r, g, b)), ...]``."""
    pil = _canvas(image)
    font = _font(pil)
    line, pad = int(font.size * 1.5), font.size // 2
    probe = ImageDraw.Draw(pil)
    placed, x, y = [], pad, 0
    for text, colour in entries:
        width = font.size + pad + int(probe.textlength(text, font=font)) + 2 * pad
        if x + width > pil.width and x > pad:
            x, y = pad, y + line
        placed.append((x, y, text, tuple(int(c) for c in colour)))
        x += width
    out = Image.new("RGB", (pil.width, pil.height + y + line + pad), "black")
    out.paste(pil, (0, 0))
    draw = ImageDraw.Draw(out)
    for x, y, text, colour in placed:
        top = pil.height + pad + y
        draw.rectangle([x, top, x + font.size, top + font.size], fill=colour, outline="white")
        draw.text((x + font.size + pad, top), text, fill="white", font=font)
    return np.asarray(out)


def side_by_side(panels: Sequence[tuple[str, np.ndarray]], gap: int = 8) -> np.ndarray:
    """Captioned RGB uint8 images ``[(caption, image), ...]`` in a row, left to right, top-aligned
    on a black background (e.g. bicubic | super-resolved, or content | style | output)."""
    captioned = [caption(image, text) for text, image in panels]
    height = max(p.shape[0] for p in captioned)
    width = sum(p.shape[1] for p in captioned) + gap * (len(captioned) - 1)
    out = np.zeros((height, width, 3), np.uint8)
    x = 0
    for panel in captioned:
        out[:panel.shape[0], x:x + panel.shape[1]] = panel
        x += panel.shape[1] + gap
    return out
