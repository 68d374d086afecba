"""Drawing results onto images (Pillow): captions, boxes, overlays."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 256  # small images are enlarged (nearest) so drawn text stays legible


def _canvas(image: np.ndarray) -> Image.Image:
    pil = Image.fromarray(image)
    scale = max(1, MIN_SIDE // max(1, min(pil.size)))
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST) if scale > 1 else pil


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> the (enlarged) image with ``text`` on a bar beneath it."""
    pil = _canvas(image)
    font = ImageFont.load_default(size=max(12, pil.width // 16))
    bar = int(font.size * 1.6)
    out = Image.new("RGB", (pil.width, pil.height + bar), "black")
    out.paste(pil, (0, 0))
    ImageDraw.Draw(out).text((6, pil.height + bar // 5), text, fill="white", font=font)
    return np.asarray(out)
