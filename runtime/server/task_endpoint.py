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
execution it ran in; ``queue`` and ``total`` this request's, the others its execution's: decoding
and preprocessing, the model, the task's post-processing).

The images are decoded, preprocessed, run and post-processed on the model instance's thread, a
batch of requests at a time (:class:`Predict`, the batcher's work), as ``Predictor.predict`` does
for a list of images in-process: the event loop keeps only HTTP and the JSON answer (a large body,
or a PNG of over :data:`INLINE_PNG_PIXELS`, is decoded in the pool first, beside the model).
"""
from __future__ import annotations

import base64
import dataclasses
import io
import struct
import time
from typing import Any, Mapping, Sequence

import numpy as np
import orjson
from PIL import Image

from ..errors import InputError
from ..images import load_image
from ..predictor import Pipeline, Predictor
from ..preprocess import model_input
from .repository import ServedModel

#: Decoded images (RGB uint8 ``[h, w, 3]``) and their original ``(height, width)``.
Decoded = tuple[list[np.ndarray], list[tuple[int, int]]]

#: A PNG whose header declares more pixels than this is decoded in the pool, beside the model, however
#: small its body: deflate packs a plain picture up to ~1000:1 (4000×4000 of one colour: 56 KB, 150 ms
#: to decode here, ~10 ms a megapixel), which on the model's thread would hold up its whole batch.
INLINE_PNG_PIXELS = 1_000_000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Query parameters that shape the answer rather than the post-processing.
VIEW_PARAMETERS = ("draw", "output", "format")


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
    if view.output and not model.predictors[0].task.image_result:
        raise InputError(f"{model.manifest.task} results have no output image", fix="ask for draw=1 instead")
    return typed, view


def _flag(query: Mapping[str, str], name: str) -> bool:
    text = query.get(name, "0").lower()
    if text not in ("0", "1", "true", "false", ""):
        raise InputError(f"{name}={text!r}: use 1 or 0")
    return text in ("1", "true", "")


def large_png(blobs: Sequence[bytes]) -> bool:
    """Whether one of ``blobs`` is a PNG whose header (``IHDR``: width and height, big-endian, bytes
    16-24) declares more than :data:`INLINE_PNG_PIXELS` (read without Pillow: this is on every request's path)."""
    for blob in blobs:
        if blob[:8] == _PNG_SIGNATURE and blob[12:16] == b"IHDR" and len(blob) >= 24:
            width, height = struct.unpack(">II", blob[16:24])
            if width * height > INLINE_PNG_PIXELS:
                return True
    return False


def decode(blobs: Sequence[bytes], pipeline: Pipeline, full: bool) -> Decoded:
    """Encoded images -> (RGB uint8 ``[h, w, 3]`` each, the original ``(height, width)`` of each): a
    JPEG decoded reduced where the model's input is much smaller (as ``Predictor.predict`` does),
    unless ``full`` (a picture is drawn on the image)."""
    if full:
        images = [load_image(blob) for blob in blobs]
        return images, [image.shape[:2] for image in images]
    pairs = [pipeline.decode(blob) for blob in blobs]
    return [image for image, _ in pairs], [size for _, size in pairs]


@dataclasses.dataclass(frozen=True)
class Predicted:
    """A predict request's results and its images as decoded, with its execution's seconds (shared by
    the requests run with it): decoding and preprocessing, the model, post-processing."""

    images: list[np.ndarray]
    results: list
    preprocess_s: float
    compute_s: float
    postprocess_s: float


class Predict:
    """A predict request's images, as work for the model's batcher (:class:`~.batcher.Work`): its
    encoded ``blobs`` (at most the model's max batch size), its post-processing ``options``, ``full``:
    decode at full size, and ``decoded``: what :func:`decode` made of them already (a large body,
    decoded in the pool beside the model), else they are decoded on the instance's thread."""

    __slots__ = ("blobs", "options", "full", "decoded", "size")
    key = "predict"  # any predict requests of one model may share an execution

    def __init__(self, blobs: Sequence[bytes], options: dict[str, Any], full: bool, decoded: Decoded | None = None):
        self.blobs = blobs
        self.options = options
        self.full = full
        self.decoded = decoded
        self.size = len(blobs)

    @staticmethod
    def run(predictor: Predictor, works: Sequence["Predict"]) -> list[Predicted | Exception]:
        """What ``Predictor.predict`` does, for the images of ``works`` together: decode, preprocess,
        one execution (a model of fixed input size; else one an image) and post-processing (one call
        where the requests' options agree). Bad images fail their own request only: when a batch fails,
        each request is run alone to find whose."""
        begun = time.perf_counter()
        answers: list = [None] * len(works)
        decoded: dict[int, Decoded] = {}
        for i, work in enumerate(works):
            try:
                decoded[i] = work.decoded or decode(work.blobs, predictor, work.full)
            except Exception as err:  # noqa: BLE001 - this request's answer
                answers[i] = err
        decoding = time.perf_counter() - begun
        together = list(decoded)
        if not together:
            return answers
        try:
            done = _compute(predictor, [works[i] for i in together], [decoded[i] for i in together], decoding)
        except Exception as err:  # noqa: BLE001 - one request's, or everyone's
            if len(together) == 1:
                answers[together[0]] = err
                return answers
            done = []
            for i in together:
                try:
                    done += _compute(predictor, [works[i]], [decoded[i]], decoding)
                except Exception as alone:  # noqa: BLE001 - this request's answer
                    done.append(alone)
        for i, answer in zip(together, done):
            answers[i] = answer
        return answers


def _compute(predictor: Predictor, works: Sequence[Predict], decoded: Sequence[Decoded],
             decoding_s: float) -> list[Predicted]:
    """Preprocess, run and post-process the decoded images of ``works`` (see :meth:`Predict.run`)."""
    begun = time.perf_counter()
    images = [image for ims, _ in decoded for image in ims]
    sizes = [size for _, sz in decoded for size in sz]
    manifest = predictor.manifest
    batches = ([model_input(images, manifest)] if manifest.input.height is not None else
               [model_input([image], manifest) for image in images])  # the input size follows each image
    prepared = time.perf_counter()
    outputs = [predictor.infer(rows) for rows in batches]
    computed = time.perf_counter()
    if len(outputs) == 1 and all(work.options == works[0].options for work in works):
        results = predictor.postprocess(outputs[0], sizes, **works[0].options)
    elif len(outputs) == 1:
        results, start = [], 0
        for work in works:
            part = {name: value[start:start + work.size] for name, value in outputs[0].items()}
            results += predictor.postprocess(part, sizes[start:start + work.size], **work.options)
            start += work.size
    else:
        owners = [work for work in works for _ in range(work.size)]
        results = [result for out, size, work in zip(outputs, sizes, owners)
                   for result in predictor.postprocess(out, [size], **work.options)]
    finished = time.perf_counter()
    timing = (decoding_s + prepared - begun, computed - prepared, finished - computed)
    done, start = [], 0
    for work, (ims, _) in zip(works, decoded):
        done.append(Predicted(ims, results[start:start + work.size], *timing))
        start += work.size
    return done


def works(blobs: list[bytes], options: dict[str, Any], full: bool, decoded: Decoded | None,
          max_batch_size: int) -> list[Predict]:
    """A request's images as :class:`Predict` works of at most ``max_batch_size`` images each."""
    return [Predict(blobs[i:i + max_batch_size], options, full,
                    None if decoded is None else (decoded[0][i:i + max_batch_size], decoded[1][i:i + max_batch_size]))
            for i in range(0, len(blobs), max_batch_size)]


def answer(model: ServedModel, predicted: list[Predicted], view: View, timing_ms: dict[str, Any],
           started: float) -> tuple[bytes, str]:
    """The response body and its media type: the PNG of a single-image picture, else the JSON of the
    module docstring (``timing_ms`` completed with ``total``, ``started`` being the request's
    ``time.perf_counter()`` start)."""
    results = [result for p in predicted for result in p.results]
    pictures = None
    if view.draw or view.output:
        images = [image for p in predicted for image in p.images]
        pictures = [(r.draw(im) if view.draw else r.output()) for r, im in zip(results, images)]
        if view.as_png(len(results)):
            return png(pictures[0]), "image/png"
    entries = [r.to_dict() for r in results]
    if pictures:
        key = "drawn_png" if view.draw else "output_png"
        for entry, picture in zip(entries, pictures):
            entry[key] = base64.b64encode(png(picture)).decode()
    timing_ms["total"] = (time.perf_counter() - started) * 1e3
    body = {"model": model.name, "task": model.manifest.task, "results": entries,
            "summaries": [r.summary() for r in results], "timing_ms": timing_ms}
    return orjson.dumps(body), "application/json"  # compact UTF-8, 15x json's speed here


def png(image: np.ndarray) -> bytes:
    """RGB uint8 ``[H, W, 3]`` -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
