"""Where one image's time goes at real sizes: decode, preprocess, model, post-process.

``visionrt bench-prepost MODEL_DIR`` feeds real JPEG photos (scikit-image's and scikit-learn's,
scaled and cropped to 640×480 and 1280×960, or ``--images`` of yours) one at a time through the
Predictor's public steps on each CPU backend and precision, and times each step per image:

- ``decode``: :meth:`Pipeline.decode` (a JPEG decoded reduced where the model input is much
  smaller); ``decode_full`` beside it: the full-size decode it replaces;
- ``pre``: :meth:`Pipeline.preprocess` of the decoded pixels (resize, normalise, layout);
  ``pre_full`` beside it: the same of the full-size pixels;
- ``model``: :meth:`Predictor.infer`;
- ``post``: :meth:`Pipeline.postprocess` (results in the original image's coordinates);
- ``end_to_end``: :meth:`Predictor.predict` on the encoded bytes, timed on its own.

Each point is measured ``repeats`` times; per repeat the medians give the ratios
``(pre + post) / model``, ``(decode + pre + post) / model`` and, for the full-size decode the
reduced one replaces, ``(decode_full + pre_full + post) / model``, so a loaded machine moves
both sides of a ratio alike. The report gives the median over repeats and their range.
Written as ``prepost.json`` and ``prepost.md``.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..runtime import atomic
from ..runtime.errors import VisionRTError
from ..runtime.images import load_image
from ..runtime.manifest import ModelDir
from ..runtime.predictor import Predictor
from .machine import describe_machine

log = logging.getLogger(__name__)

#: Photos shipped in scikit-image and scikit-learn (see :func:`visionrt.train.data.photos.load_photo`).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "china", "flower")
#: ``(width, height)`` of the JPEGs written from them.
SIZES = ((640, 480), (1280, 960))
STAGES = ("decode", "pre", "model", "post")
RATIOS = ("prepost_ratio", "overhead_ratio", "full_decode_overhead_ratio")
JPEG_QUALITY = 90


def write_photos(out_dir: str | os.PathLike, sizes: Sequence[tuple[int, int]] = SIZES,
                 names: Sequence[str] = PHOTOS) -> dict[str, list[Path]]:
    """Each photo scaled (bicubic) to cover ``width × height`` and centre-cropped to it, saved as a
    JPEG (quality 90): ``{"640x480": [paths], ...}``."""
    from ..train.data.photos import load_photo

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for width, height in sizes:
        label = f"{width}x{height}"
        for name in names:
            photo = Image.fromarray(load_photo(name))
            scale = max(width / photo.width, height / photo.height)
            big = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
            left, top = (big.width - width) // 2, (big.height - height) // 2
            path = out / f"{name}-{label}.jpg"
            buffer = io.BytesIO()
            big.crop((left, top, left + width, top + height)).save(buffer, "JPEG", quality=JPEG_QUALITY)
            atomic.write_bytes(path, buffer.getvalue())
            written.setdefault(label, []).append(path)
    return written


def image_label(path: Path) -> str:
    """``"WxH"`` of an image file (from its header)."""
    with Image.open(path) as image:
        return f"{image.width}x{image.height}"


def time_stages(predictor: Predictor, blobs: Sequence[bytes], min_seconds: float) -> dict[str, float]:
    """Median milliseconds per image of each stage (and ``decode_full``, ``end_to_end``), running
    through ``blobs`` (encoded images) in turn, after one warm-up pass, for at least ``min_seconds``
    and at least one pass."""
    keys = (*STAGES, "decode_full", "pre_full", "end_to_end")
    samples: dict[str, list[float]] = {k: [] for k in keys}

    def one(data: bytes) -> None:
        t0 = time.perf_counter()
        pixels, size = predictor.decode(data)
        t1 = time.perf_counter()
        batch = predictor.preprocess([pixels])
        t2 = time.perf_counter()
        outputs = predictor.infer(batch)
        t3 = time.perf_counter()
        predictor.postprocess(outputs, [size])
        t4 = time.perf_counter()
        full = load_image(data)
        t5 = time.perf_counter()
        predictor.preprocess([full])
        t6 = time.perf_counter()
        predictor.predict(data)
        t7 = time.perf_counter()
        times = (t0, t1, t2, t3, t4, t5, t6, t7)
        for key, a, b in zip(keys, times, times[1:]):
            samples[key].append((b - a) * 1e3)

    for data in blobs:
        one(data)
    samples = {k: [] for k in samples}
    start = time.perf_counter()
    while not samples["model"] or time.perf_counter() - start < min_seconds:
        for data in blobs:
            one(data)
    return {k: float(np.median(v)) for k, v in samples.items()}


def ratios(stages: dict[str, float]) -> dict[str, float]:
    """``prepost_ratio`` = (pre + post) / model, ``overhead_ratio`` = (decode + pre + post) / model,
    ``full_decode_overhead_ratio`` = (decode_full + pre_full + post) / model."""
    return {"prepost_ratio": (stages["pre"] + stages["post"]) / stages["model"],
            "overhead_ratio": (stages["decode"] + stages["pre"] + stages["post"]) / stages["model"],
            "full_decode_overhead_ratio": (stages["decode_full"] + stages["pre_full"] + stages["post"]) / stages["model"]}


def bench_prepost(model_dir: str | os.PathLike, images: dict[str, list[Path]], *,
                  backends: Sequence[str] = ("onnxruntime", "openvino"),
                  precisions: Sequence[str] = ("fp32", "int8", "fp16"), threads: int = 1,
                  repeats: int = 3, min_seconds: float = 1.0) -> dict[str, Any]:
    """The report (a JSON-ready dict): one row per backend, precision and image size with each
    stage's median ms and the ratios (median over ``repeats``, and their ``[min, max]``); a
    backend or precision that cannot run gives a row with ``skipped`` saying why."""
    model_dir = ModelDir.open(model_dir)
    blobs = {label: [p.read_bytes() for p in paths] for label, paths in images.items()}
    rows = []
    for backend in backends:
        for precision in precisions:
            point = {"backend": backend, "precision": precision}
            try:
                predictor = Predictor(model_dir, backend=backend, threads=threads, precision=precision)
            except VisionRTError as err:
                log.info("%s %s skipped: %s", backend, precision, err)
                rows.append({**point, "skipped": str(err)})
                continue
            with predictor:
                for label, data in blobs.items():
                    runs = [time_stages(predictor, data, min_seconds) for _ in range(repeats)]
                    rows.append({**point, "image": label, "images": len(data), **_summary(runs)})
                    log.info("%s %s %s: %s", backend, precision, label, _row_text(rows[-1]))
    m = model_dir.manifest
    return {"model": str(model_dir.root), "task": m.task, "arch": m.model.get("arch"),
            "input": {"height": m.input.height, "width": m.input.width, "dtype": m.input.dtype,
                      "layout": m.input.layout, "resize": m.input.resize},
            "threads": threads, "repeats": repeats, "min_seconds": min_seconds,
            "load_average": os.getloadavg(), "machine": describe_machine(), "rows": rows}


def _summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Per key the median over the runs (ms; ratios per run first), and each ratio's range."""
    per_run = [{**run, **ratios(run)} for run in runs]
    summary: dict[str, Any] = {k: float(np.median([r[k] for r in per_run])) for k in per_run[0]}
    for key in RATIOS:
        summary[f"{key}_range"] = [min(r[key] for r in per_run), max(r[key] for r in per_run)]
    summary["runs"] = runs
    return summary


def _row_text(row: dict[str, Any]) -> str:
    return " ".join(f"{k} {row[k]:.2f}ms" for k in (*STAGES, "end_to_end")) + \
        f" (pre+post)/model {row['prepost_ratio']:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, with the model, input, machine and method."""
    spec = report["input"]
    lines = [f"# Pre/post-processing at real sizes: {report['task']} {report['arch']} "
             f"({spec['height']}×{spec['width']} {spec['dtype']} {spec['layout']}, {spec['resize']})", "",
             f"CPU: {report['machine']['cpu']}; {report['threads']} thread(s) per backend; load average at start "
             f"{', '.join(f'{x:.1f}' for x in report['load_average'])}; median ms per image over at least "
             f"{report['min_seconds']:g} s, {report['repeats']} repeats (ratios: median and range over repeats).", "",
             "| backend | precision | image | decode (full) | pre (full) | model | post | end-to-end | "
             "(pre+post)/model | (decode+pre+post)/model | same, full decode |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['backend']} | {row['precision']} | skipped: {row['skipped']} |" + " |" * 8)
            continue
        ratios_text = "".join(f"| {row[k]:.2f} ({row[k + '_range'][0]:.2f}–{row[k + '_range'][1]:.2f}) " for k in RATIOS)
        lines.append(f"| {row['backend']} | {row['precision']} | {row['image']} | {row['decode']:.2f} "
                     f"({row['decode_full']:.2f}) | {row['pre']:.2f} ({row['pre_full']:.2f}) | {row['model']:.2f} "
                     f"| {row['post']:.2f} | {row['end_to_end']:.2f} {ratios_text}|")
    return "\n".join(lines) + "\n"


def cmd_bench_prepost(args: argparse.Namespace) -> None:
    from ..runtime.cli import emit

    out = args.out or Path(args.model_dir) / "bench"
    if args.images:
        images: dict[str, list[Path]] = {}
        for path in args.images:
            images.setdefault(image_label(path), []).append(path)
    else:
        images = write_photos(out / "photos", sizes=args.sizes)
    report = bench_prepost(args.model_dir, images, backends=args.backends, precisions=args.precision,
                           threads=args.threads, repeats=args.repeats, min_seconds=args.seconds)
    atomic.write_text(out / "prepost.json", json.dumps(report, indent=2))
    atomic.write_text(out / "prepost.md", markdown(report))
    emit(args, {"json": str(out / "prepost.json"), "markdown": str(out / "prepost.md")},
         markdown(report) + f"\nwritten: {out / 'prepost.md'}, {out / 'prepost.json'}")


def size_list(text: str) -> list[tuple[int, int]]:
    """Argument type: ``WxH[,WxH...]`` image sizes in pixels."""
    try:
        sizes = [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(len(s) != 2 or min(s) < 8 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT[,WIDTHxHEIGHT...] of at least 8 px, got {text!r}")
    return sizes


def register(command) -> None:
    """Add ``bench-prepost`` through the root CLI's ``command(name, func, help)``."""
    from ..runtime.argtypes import existing_file, name_list, output_dir, positive_float, positive_int
    from ..runtime.backends import BACKENDS
    from ..runtime.precision import PRECISIONS

    p = command("bench-prepost", cmd_bench_prepost, "time decode, preprocessing, model and post-processing per "
                                                    "image on real JPEG photos, per CPU backend and precision")
    p.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    p.add_argument("--images", nargs="+", type=existing_file, help="your image files (default: JPEGs written "
                                                                    "from the shipped photos at --sizes)")
    p.add_argument("--sizes", type=size_list, default=list(SIZES), help="photo sizes, default 640x480,1280x960")
    p.add_argument("--backends", default=["onnxruntime", "openvino"], type=name_list(*BACKENDS))
    p.add_argument("--precision", default=["fp32", "int8", "fp16"], type=name_list(*PRECISIONS),
                   help="comma-separated; a file export did not write is reported as skipped")
    p.add_argument("--threads", type=positive_int, default=1, help="intra-op threads per backend (default 1)")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--seconds", type=positive_float, default=1.0, help="minimum measuring time per repeat")
    p.add_argument("--out", type=output_dir, help="report directory (default: <model_dir>/bench)")
