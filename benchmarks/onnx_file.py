"""``visionrt bench model.onnx``: model-only latency of any ONNX file on generated inputs, like trtexec.

Input shapes come from the file where its axes are fixed, and from ``--shapes`` in trtexec's
syntax (``images:8x3x224x224,mask:8x1x224x224``) where they are not; a dynamic batch axis
(axis 0) also takes each of ``--batch-sizes``. A dynamic axis that neither resolves is an
error naming the input and axis. Inputs are seeded random values of each input's dtype
(normal floats, zero integers). Backends: onnxruntime and OpenVINO (when installed); the
torch and TensorRT backends need a model directory or an engine, and say so in a skipped row.
The report is the same as ``visionrt bench``'s (``bench.json/.md/.png``, default
``<file stem>.bench/`` beside the file).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..export.build import parse_shapes
from ..runtime.backends.base import Runner, TensorSpec
from ..runtime.backends.onnxruntime import OnnxRuntimeRunner
from ..runtime.errors import BackendUnavailable, InputError
from ..runtime.file_kind import require_file
from .harness import BenchSettings, Result, bench_model
from .machine import check_bench_memory, usable_cpus
from .report import write_report

#: The ``task`` of a bare ONNX file's rows in the report.
TASK = "onnx"


def is_onnx_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an ONNX file (rather than a model directory)."""
    return Path(path).suffix.lower() == ".onnx"


def resolve_shapes(inputs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]], batch: int | None,
                   source: str) -> dict[str, tuple[int, ...]]:
    """The concrete shape of every input: fixed in the file or given in ``shapes``; a dynamic axis 0
    is ``batch`` when given, else the given shape's, else 1. :class:`InputError` for an unknown
    name, a given shape that contradicts the file, or another dynamic axis left unresolved."""
    names = [spec.name for spec in inputs]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise InputError(f"--shapes names {', '.join(unknown)}, which {source} has not as input",
                         fix=f"its inputs are: {', '.join(names)}")
    resolved = {}
    for spec in inputs:
        given = shapes.get(spec.name)
        if given is not None and len(given) != len(spec.shape):
            raise InputError(f"--shapes gives {spec.name} rank {len(given)}; in {source} it is {_text(spec.shape)}",
                             fix=f"give {len(spec.shape)} sizes for {spec.name}")
        dims = []
        for axis, dim in enumerate(spec.shape):
            fixed = dim if isinstance(dim, int) and dim > 0 else None
            want = given[axis] if given is not None else None
            if fixed is not None and want is not None and want != fixed:
                raise InputError(f"--shapes gives {spec.name} axis {axis} = {want}; {source} fixes it to {fixed} "
                                 f"({_text(spec.shape)})", fix=f"use {fixed} for axis {axis}")
            if fixed is None and axis == 0:
                want = batch or want or 1
            if (fixed or want) is None:
                example = "x".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in spec.shape)
                raise InputError(f"input '{spec.name}' of {source} has a dynamic axis {axis}"
                                 + (f" ('{dim}')" if isinstance(dim, str) else "") + f": {_text(spec.shape)}",
                                 fix=f"give its size: --shapes {spec.name}:{example} with each ? a number")
            dims.append(fixed or want)
        resolved[spec.name] = tuple(dims)
    return resolved


def generated_feed(inputs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]],
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the given shapes: standard-normal floats, zeros of other dtypes."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in inputs:
        dtype = np.dtype(spec.dtype)
        shape = shapes[spec.name]
        feed[spec.name] = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f"
                           else np.zeros(shape, dtype))
    return feed


def _runner(backend: str, path: Path, threads: int) -> Runner:
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(path, threads=threads)
    if backend == "openvino":
        from ..runtime.backends.openvino import OpenVinoRunner

        return OpenVinoRunner(path, threads=threads)
    if backend == "torch":
        raise BackendUnavailable("no PyTorch module for a bare ONNX file",
                                 fix="bench a model directory (visionrt import / export) for the PyTorch baseline")
    if backend == "tensorrt":
        raise BackendUnavailable("a bare ONNX file has no engine to run",
                                 fix=f"visionrt build {path}, then run the engine on a GPU")
    raise BackendUnavailable(f"unknown backend '{backend}'", fix="choose onnxruntime or openvino")


def bench_onnx_file(path: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]] | None = None,
                    backends: Iterable[str] = ("onnxruntime", "openvino"), batch_sizes: Sequence[int] | None = None,
                    out_dir: str | os.PathLike | None = None, min_seconds: float = 1.0, threads: int | None = None,
                    max_seconds: float | None = None) -> dict[str, Any]:
    """Model-only benchmark of the ONNX file on each backend at each batch size (default: the batch
    that ``shapes`` or the file gives, else 1); writes the report and returns its paths."""
    path = Path(path)
    require_file(path, "ONNX file", InputError, fix="pass the path of an .onnx file")
    shapes = dict(shapes or {})
    threads = threads or usable_cpus()
    settings = BenchSettings(min_seconds=min_seconds, threads=threads,
                             **({} if max_seconds is None else {"max_seconds": max_seconds}))
    results: list[Result] = []
    for backend in backends:
        try:
            runner = _runner(backend, path, threads).activate()
        except BackendUnavailable as err:
            results.append(Result(task=TASK, model=path.stem, backend=backend, precision="fp32",
                                  batch=(batch_sizes or [1])[0], mode="model", timing=None, notes=f"skipped: {err}"))
            continue
        for batch in batch_sizes or [None]:
            resolved = resolve_shapes(runner.inputs, shapes, batch, path.name)
            check_bench_memory(sum(int(np.prod(shape)) * np.dtype(spec.dtype).itemsize
                                   for spec, shape in zip(runner.inputs, resolved.values())),
                               f"inputs of shapes {', '.join(map(str, resolved.values()))}")
            feed = generated_feed(runner.inputs, resolved)
            size = batch or len(next(iter(feed.values())))  # a fixed batch other than ``batch``: a skipped row
            results += bench_model(runner, make_feed=lambda _, feed=feed: feed, task=TASK, model=path.stem,
                                   batch_sizes=[size], settings=settings)
        runner.deactivate()
    paths = write_report(results, Path(out_dir or path.with_suffix(".bench")), settings=settings)
    return {"json": paths.json, "markdown": paths.markdown, "chart": paths.png,
            "results": [r.to_dict() for r in results]}


# command line ----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """``bench``'s flag for ONNX files (the others, --backends, --batch-sizes, --out, --seconds and
    --threads, are ``bench``'s own)."""
    p.add_argument("--shapes", default="", metavar="NAME:AxBxC[,...]",
                   help="ONNX file: input shapes for its dynamic axes, trtexec syntax (e.g. images:8x3x224x224)")


def cmd_bench_onnx(args: argparse.Namespace) -> None:
    """``visionrt bench FILE.onnx`` with the bench command's ``args`` (``--batch-sizes`` ``None`` when
    not given: then the batch of ``--shapes`` or of the file is measured)."""
    from ..runtime.cli import emit

    report = bench_onnx_file(args.model_dir, shapes=parse_shapes(args.shapes), backends=args.backends,
                             batch_sizes=args.batch_sizes, out_dir=args.out, min_seconds=args.seconds,
                             threads=args.threads)
    emit(args, {k: str(v) for k, v in report.items() if k != "results"}, f"benchmark report: {report['markdown']}")


def _text(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) and d > 0 else str(d or "?") for d in shape) + "]"
