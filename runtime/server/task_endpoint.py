"""``POST /v1/models/{m}/predict``: encoded images in, the task's results out.

The body is one image (raw bytes, any ``Content-Type`` but multipart) or ``multipart/form-data``
with one or more files. Query parameters are the task's post-processing options (``top_k``,
``score_threshold``, ...: its spec's, checked by it as every entry point does), plus how to answer:

* ``draw=1``: the image with the results drawn on it;
* ``output=1``: the product image of superres/style (``output()``);
* ``format=png|json``: with ``draw`` or ``output`` and a single image the answer defaults to
  the PNG itself (``image/png``); ``format=json`` (and always with several images) puts it in
  each result as base64 (``drawn_png`` / ``output_png``) beside ``to_dict()``.

The JSON answer is ``{"model", "task", "results": [to_dict() per image, in order],
"summaries": [summary() per image], "timing_ms": {"preprocess", "queue", "compute",
"postprocess", "total", "batch_sizes"}}`` (``batch_sizes``: per image, the size of the
execution it ran in).
"""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import time
from typing import Any, Mapping

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import load_image
from .repository import ServedModel

#: Query parameters that shape the answer rather than the post-processing.
VIEW_PARAMETERS = ("draw", "output", "format")

#: The answer's JSON encoder (compact, UTF-8 as is, no NaN), made once.
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@dataclasses.dataclass(frozen=True)
class View:
    """What to send back besides ``to_dict()``."""

    draw: bool = False
    output: bool = False
    format: str | None = None

    def as_png(self, images: int) -> bool:
        return (self.draw or self.output) and images == 1 and self.format != "json"


def parse_query(query: Mapping[str, str], model: ServedModel) -> tuple[dict[str, Any], View]:
    """Post-processing options (parsed and checked by the task's spec) and the view;
    :class:`InputError` for unknown options or values out of range."""
    typed = model.predictors[0].parse_options({k: v for k, v in query.items() if k not in VIEW_PARAMETERS})
    fmt = query.get("format")
    if fmt not in (None, "png", "json"):
        raise InputError(f"format '{fmt}' is neither png nor json")
    view = View(_flag(query, "draw"), _flag(query, "output"), fmt)
    if view.draw and view.output:
        raise InputError("draw and output cannot both be asked", fix="ask for one picture per request")
    return typed, view


def _flag(query: Mapping[str, str], name: str) -> bool:
    text = query.get(name, "0").lower()
    if text not in ("0", "1", "true", "false", ""):
        raise InputError(f"{name}={text!r}: use 1 or 0")
    return text in ("1", "true", "")


def decode(blobs: list[bytes], model: ServedModel) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Encoded images -> (RGB uint8 ``[H, W, 3]`` each, model input rows ``[n, C, H', W']`` in chunks:
    consecutive images of one input shape together, at most ``max_batch_size`` rows a chunk); run
    inline for small bodies, in the thread pool for larger ones (``Server.sized``)."""
    images = [load_image(blob) for blob in blobs]
    chunks: list[list[np.ndarray]] = []
    for rows in (model.predictors[0].preprocess([image]) for image in images):
        last = chunks[-1] if chunks else None
        if last and last[0].shape == rows.shape and last[0].dtype == rows.dtype and len(last) < model.max_batch_size:
            last.append(rows)
        else:
            chunks.append([rows])
    return images, [np.concatenate(chunk) if len(chunk) > 1 else chunk[0] for chunk in chunks]


def answer(model: ServedModel, outputs: list[dict[str, np.ndarray]], images: list[np.ndarray],
           options: dict[str, Any], view: View, timing_ms: dict[str, Any], started: float) -> tuple[bytes, str]:
    """The response body and its media type: :func:`postprocess`, then the JSON of the module
    docstring (``timing_ms`` completed with ``postprocess`` and ``total``, ``started`` being the
    request's ``time.perf_counter()`` start); off the event loop, one hop for the request."""
    begun = time.perf_counter()
    result = postprocess(model, outputs, images, options, view)
    if isinstance(result, bytes):
        return result, "image/png"
    finished = time.perf_counter()
    results, summaries = result
    timing_ms.update(postprocess=(finished - begun) * 1e3, total=(finished - started) * 1e3)
    body = {"model": model.name, "task": model.manifest.task, "results": results, "summaries": summaries,
            "timing_ms": timing_ms}
    return _JSON.encode(body).encode(), "application/json"


def postprocess(model: ServedModel, outputs: list[dict[str, np.ndarray]], images: list[np.ndarray],
                options: dict[str, Any], view: View) -> tuple[list[dict[str, Any]], list[str]] | bytes:
    """The per-image outputs -> results (one ``Predictor.postprocess`` call for the request):
    their dicts and one-line summaries or, for a single-image picture, the PNG."""
    merged = {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}
    predictor = model.predictors[0]
    results = predictor.postprocess(merged, [im.shape[:2] for im in images], **options)
    if view.output and not predictor.task.image_result:
        raise InputError(f"{model.manifest.task} results have no output image", fix="ask for draw=1 instead")
    pictures = [(r.draw(im) if view.draw else r.output()) for r, im in zip(results, images)] \
        if view.draw or view.output else None
    if view.as_png(len(results)):
        return png(pictures[0])
    answer = [r.to_dict() for r in results]
    if pictures:
        key = "drawn_png" if view.draw else "output_png"
        for entry, picture in zip(answer, pictures):
            entry[key] = base64.b64encode(png(picture)).decode()
    return answer, [r.summary() for r in results]


def png(image: np.ndarray) -> bytes:
    """RGB uint8 ``[H, W, 3]`` -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
