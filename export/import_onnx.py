"""``visionrt import``: an ONNX file of one's own -> a model directory every later stage takes.

The manifest is built from the ONNX's own input and outputs plus what the user says (task,
class names, normalisation, image size, post-processing parameters), checked against the
task's output contract (:mod:`visionrt.runtime.contracts`), and then proven: one batch runs in
onnxruntime and its actual output shapes are checked again. The ONNX is copied byte for byte
(``model.onnx``, with its sha256; only where its input's dynamic axes share a name, as Paddle2ONNX
writes ``?`` for both height and width, the copy gives each axis its own name, which TensorRT
needs); the source path and hash are recorded. Without PyTorch
weights, the torch backend is skipped with that reason wherever a stage would use it.

The describing part (:func:`describe`, :func:`add_description_arguments`) is shared with
``export_module`` (:mod:`.user_module`), which writes the same manifest for an ``nn.Module``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from ..runtime import atomic
from ..runtime.backends import open_runner
from ..runtime.backends.onnxruntime import OnnxRuntimeRunner
from ..runtime.backends.base import TensorSpec
from ..runtime.contracts import (CONTRACTS, ContractError, check_input, check_outputs, check_postprocess,
                                 contract, default_postprocess)
from ..runtime.argtypes import existing_file, int_list, output_dir, positive_int
from ..runtime.errors import ArtifactError, InputError
from ..runtime.file_kind import require_file
from ..runtime.manifest import COLORS, INPUT_LAYOUTS, SCALES, InputSpec, Manifest, ModelDir, OutputSpec
from ..runtime.output_adapters import BOX_FORMATS, BOX_UNITS, LAYOUTS, adapt, raw_names
from ..runtime.preprocess import RESIZE_POLICIES, normalise
from . import conventions

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
#: What the model is called in reports when ``name`` is not given: the file's stem.
IMPORTED = "imported ONNX"
#: Strides tried, smallest first, where a range of input sizes is given without one.
STRIDES = (1, 2, 4, 8, 16, 32, 64)


def onnx_io(path: str | os.PathLike) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs of an ONNX file as onnxruntime loads it (dynamic axes: their name or
    ``None``); :class:`ArtifactError` if onnxruntime cannot load it."""
    path = Path(path)
    require_file(path, "ONNX file", InputError, fix="pass the path of an .onnx file")
    with OnnxRuntimeRunner(path) as runner:
        return runner.inputs, runner.outputs


def describe(task: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], source: str, *,
             classes: Sequence[str] = (), image_size: tuple[int, int] | None = None,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None, resize: str = "bilinear",
             postprocess: dict[str, Any] | None = None, batch: int | None = None,
             shape_check: tuple[int, int] | None = None,
             conventions: dict[str, str] | None = None) -> tuple[InputSpec, list[OutputSpec], dict[str, Any]]:
    """Input spec, output specs and post-processing parameters of a model whose ``inputs`` and
    ``outputs`` are as found, checked against ``task``'s contract (:class:`ContractError`).

    ``mean``/``std``: per-channel normalisation of pixels scaled to [0, 1] (default: none);
    ``shape_check``: the (H, W) the found outputs were computed at, when they come from a run
    of a model of any image size (their sides are checked against it); ``conventions``: the
    input's ``layout``, ``color``, ``scale`` and ``dtype`` where not the default (:mod:`.conventions`)."""
    c = contract(task)
    classes = list(classes)
    if c.classes and not classes:
        raise ContractError(f"a {task} model needs its class names ({c.classes})",
                            fix="pass --classes FILE (one name a line); Python: classes=[...]")
    name, height, width = check_input(task, inputs, image_size, source)
    sides = (height, width) if shape_check is None else shape_check
    variant, output_specs, bound = check_outputs(task, outputs, classes, *sides, source=source, batch=batch)
    post = {**default_postprocess(task, variant, classes, bound), **(postprocess or {})}
    check_postprocess(task, variant, post, source)
    spec = InputSpec(name=name, height=height, width=width, resize=resize,
                     mean=tuple(float(v) for v in (mean or (0.0, 0.0, 0.0))),
                     std=tuple(float(v) for v in (std or (1.0, 1.0, 1.0))), **(conventions or {}))
    if len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std) <= 0:
        raise InputError(f"mean {spec.mean} and std {spec.std} must have 3 values each (RGB), std > 0",
                         fix="e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225")
    return spec, output_specs, post


def import_onnx(onnx_path: str | os.PathLike, task: str, out_dir: str | os.PathLike, *,
                classes: Sequence[str] = (), image_size: tuple[int, int] | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None, resize: str = "bilinear",
                postprocess: dict[str, Any] | None = None, name: str | None = None,
                layout: str | None = None, channels: str = "RGB", scale: str = "0-1", outputs: str | None = None,
                output_layout: str | None = None, output_roles: Sequence[tuple[str, str]] = (),
                image_size_range: Sequence[int] | None = None, stride: int | None = None) -> ModelDir:
    """Make ``out_dir`` a model directory for ``onnx_path`` (see the module doc); returns it.

    The conventions of models other exporters write (:mod:`.conventions`): ``layout`` NCHW/NHWC
    (default: from the input's shape), ``channels`` RGB/BGR, ``scale`` of the values before
    mean/std (``"0-1"`` or ``"0-255"``), ``outputs`` logits/probabilities (default: from the
    graph's last op), ``output_layout`` (:data:`~visionrt.runtime.output_adapters.LAYOUTS`) and
    ``output_roles`` ``[(output name, role)]``. Refuses an ``out_dir`` that already holds a manifest.

    ``image_size_range`` ``(min, max)`` or ``(min, opt, max)`` px per side, for an input of dynamic
    height and width (instead of ``image_size``): each image is fed at its own size, fitted into
    the range (:func:`~visionrt.runtime.preprocess.range_size`), and the engine's optimisation
    profile (``build_profile``) spans it, tuned for ``opt`` (default: max); ``stride``: fed sides
    are multiples of it (default: the smallest of :data:`STRIDES` the model runs at in onnxruntime);
    min and max move inward to multiples of it."""
    source = Path(onnx_path)
    inputs, found = onnx_io(source)
    if len(inputs) != 1:
        raise ContractError(f"{source.name} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); a "
                            f"{task} model takes one image batch", fix="export the model with a single image input")
    view, convention = conventions.read_input(inputs[0], layout, source.name)
    convention.update(color=channels, scale=scale)
    if convention["dtype"] == "uint8" and (mean or std or scale != "0-1"):
        raise InputError(f"{source.name} input '{view.name}' is uint8: the model takes the pixels as they are, so "
                         "--mean, --std and --scale do not apply", fix="drop them")
    if convention["dtype"] == "uint8":
        convention["scale"] = "0-255"
    sides = None
    if image_size_range is not None:
        if image_size:
            raise InputError("--image-size fixes the input size and --image-size-range spans it; give one",
                             fix="drop --image-size (give the size to tune for as --image-size-range MIN,OPT,MAX)")
        sides = _side_range(source, view, convention, image_size_range, stride)
        image_size = (sides[0], sides[0])
    graph = onnx.load(str(source), load_external_data=False)
    ordered, recorded, last_op = conventions.read_outputs(task, graph, found, classes, source.name, kind=outputs,
                                                         output_layout=output_layout, roles=output_roles)
    post_in = {**recorded, **(postprocess or {})}
    for key, allowed in (("box_format", BOX_FORMATS), ("box_units", BOX_UNITS)):
        if key in post_in and post_in[key] not in allowed:
            raise InputError(f"--postprocess {key}={post_in[key]!r} is not one of {', '.join(allowed)}",
                             fix=f"e.g. --postprocess {key}={allowed[0]}")
    batch = None
    if recorded.get("output_layout"):  # the contract reads what the adapter makes of a run's outputs
        ordered, batch = _adapted_outputs(source, view, convention, image_size, post_in, task, classes)
    spec, output_specs, post = describe(task, [view], ordered, source.name, classes=classes, image_size=image_size,
                                        mean=mean, std=std, resize=resize, postprocess=post_in, batch=batch,
                                        conventions=convention)
    if sides:
        spec = dataclasses.replace(spec, height=None, width=None, size_range=(sides[0], sides[2]), stride=sides[3])
    out = Path(out_dir)
    if (out / "manifest.json").exists():
        raise ArtifactError(f"{out} already holds a model directory", fix="choose another --out, or delete it")
    out.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out / ONNX_FILE) as tmp:
        shutil.copyfile(source, tmp)
    digest = atomic.sha256(out / ONNX_FILE)
    renamed = conventions.name_input_axes(graph, convention["layout"])
    if renamed:  # TensorRT reads axes of one name as one size: write the copy with each axis named
        with atomic.atomic_path(out / ONNX_FILE) as tmp:
            onnx.save(graph, str(tmp))
    manifest = Manifest(task=task, model={"arch": name or source.stem, "imported_from": str(source.resolve()),
                                          "source_sha256": digest, "producer": graph.producer_name,
                                          "last_op": last_op, **({"input_axes_named": renamed} if renamed else {})},
                        classes=list(classes), input=spec, outputs=output_specs, postprocess=post,
                        build_profile={"height": list(sides[:3]), "width": list(sides[:3])} if sides else {})
    model_dir = ModelDir(out, manifest)
    model_dir.add_file("onnx", out / ONNX_FILE, role=f"{IMPORTED} (copied from {source.name})")
    _check_run(model_dir, source.name)
    model_dir.record("import", source=str(source.resolve()), sha256=digest)
    model_dir.save()
    log.info("imported %s as a %s model into %s (%s)", source, task, out, post["outputs"])
    return model_dir


def _zero_batch(spec: InputSpec, batch: int) -> np.ndarray:
    """A black image batch as the model takes it (its layout, dtype, normalisation)."""
    return normalise(np.zeros((batch, spec.height, spec.width, 3), np.uint8), spec)


def _side_range(source: Path, view: TensorSpec, convention: dict[str, str], given: Sequence[int],
                stride: int | None) -> tuple[int, int, int, int]:
    """``(min, opt, max, stride)`` px per side of ``image_size_range`` (see :func:`import_onnx`), checked
    against the input ``view`` (NCHW): one-line errors for a range out of order, an input whose
    height or width the graph fixes, and a range holding no multiple of the stride."""
    text = ",".join(str(v) for v in given)
    values = [given[0], given[1], given[1]] if len(given) == 2 else list(given)  # MIN,MAX: opt is max
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise InputError(f"--image-size-range {text} is not MIN,MAX or MIN,OPT,MAX with 1 <= min <= opt <= max",
                         fix="e.g. --image-size-range 320,1024 or 320,640,1024 (px per side)")
    if stride is not None and stride < 1:
        raise InputError(f"--stride {stride} is not a positive integer", fix="e.g. --stride 32")
    low, opt, high = values
    fixed = [f"{what} ({side})" for what, side in (("height", view.shape[2]), ("width", view.shape[3]))
             if isinstance(side, int) and side > 0]
    if fixed:
        raise ContractError(f"{source.name} input '{view.name}' is [{', '.join(str(d) for d in view.shape)}]: its "
                            f"{' and '.join(fixed)} {'is' if len(fixed) == 1 else 'are'} fixed in the graph, so "
                            f"--image-size-range {text} cannot apply",
                            fix="drop --image-size-range (or --image-size HxW for the sides the graph leaves open)")
    stride = stride or _probe_stride(source, view, convention, low, high)
    first, last = -(-low // stride) * stride, high // stride * stride
    if first > last:
        raise InputError(f"--image-size-range {text} holds no multiple of the model's stride {stride}",
                         fix=f"widen the range to include a multiple of {stride}")
    if (first, last) != (low, high):
        log.info("image size range %d-%d px moved to %d-%d: multiples of the stride %d", low, high, first, last, stride)
    return first, min(max(round(opt / stride) * stride, first), last), last, stride


def _probe_stride(source: Path, view: TensorSpec, convention: dict[str, str], low: int, high: int) -> int:
    """The smallest of :data:`STRIDES` at which the model runs in onnxruntime on the sides of
    :func:`_probe_sides`: a network that halves its input n times and joins the halves again needs
    sides divisible by 2**n. :class:`ContractError` where it runs at none."""
    batch = view.shape[0] if isinstance(view.shape[0], int) and view.shape[0] > 0 else 1
    tried: list[tuple[tuple[int, int], str]] = []
    quiet = lambda options: setattr(options, "log_severity_level", 4)  # noqa: E731 - refusals are expected here
    with OnnxRuntimeRunner(source, session_setup=quiet) as runner:
        for stride in STRIDES:
            sides = _probe_sides(low, high, stride)
            if sides is None:
                break
            try:
                runner.infer({view.name: _zero_batch(InputSpec(name=view.name, height=sides[0], width=sides[1],
                                                               **convention), batch)})
                return stride
            except Exception as err:  # noqa: BLE001 - onnxruntime's refusal of a size the graph cannot take
                tried.append((sides, (str(err).strip().splitlines() or [type(err).__name__])[-1][:200]))
    sizes = ", ".join(f"{h}x{w}" for (h, w), _ in tried)
    raise ContractError(f"{source.name} input '{view.name}' runs in onnxruntime at no size tried within "
                        f"--image-size-range {low},{high} ({sizes}){': ' + tried[0][1] if tried else ''}",
                        fix="give the range of sizes the model was made for, or its stride (--stride N)")


def _probe_sides(low: int, high: int, stride: int) -> tuple[int, int] | None:
    """``(height, width)``, multiples ``k × stride`` within ``[low, high]`` that fail in a net needing a
    larger stride, whether its halvings round down or up: height's ``k`` ends in as many 1 bits as
    the range allows (it stays odd halved down), width's ``k - 1`` in as many 0 bits (``k`` stays odd
    halved up); ``None`` where the range holds no multiple."""
    counts = range(-(-low // stride), high // stride + 1)
    if not counts:
        return None
    down = max(counts, key=lambda k: ((k ^ (k + 1)).bit_length(), -k))
    up = max(counts, key=lambda k: (((k - 1) & (1 - k)).bit_length() if k > 1 else STRIDES[-1], -k))
    return down * stride, up * stride


def _adapted_outputs(source: Path, view: TensorSpec, convention: dict[str, str], image_size, post: dict[str, Any],
                     task: str, classes: Sequence[str]) -> tuple[list[TensorSpec], int]:
    """The outputs the adapter makes of one run (the raw ones are not the contract's), and the batch run."""
    _, height, width = check_input(task, [view], image_size, source.name)
    spec = InputSpec(name=view.name, height=height, width=width, **convention)
    with OnnxRuntimeRunner(source) as runner:
        batch = view.shape[0] if isinstance(view.shape[0], int) and view.shape[0] > 0 else 1
        found = runner.infer({view.name: _zero_batch(spec, batch)})
    values = adapt(found, post, height, width)
    scores = values.get("candidate_scores")
    if scores is not None and scores.shape[-1] != len(classes):
        raw = ", ".join(f"'{n}' {list(found[n].shape)}" for n in raw_names(post, list(found)).values())
        raise ContractError(f"{source.name} output {raw} read as {post['output_layout']} gives {scores.shape[-1]} "
                            f"class score(s) per candidate; --classes names {len(classes)}",
                            fix="check --output-layout (yolov5 [N,A,5+C], yolov8 [N,4+C,A], ssd with background) "
                                "and the class names")
    return [TensorSpec(name, array.shape, array.dtype.name) for name, array in values.items()], batch


def _check_run(model_dir: ModelDir, source: str) -> None:
    """One batch of black images through onnxruntime as the runtime feeds it (which also proves the copy
    loads: external weight files are not copied); the actual output shapes (adapted where the manifest
    records an output layout) against the contract."""
    spec = model_dir.manifest.input
    post = model_dir.manifest.postprocess
    side = spec.size_range[0] if spec.size_range else (
        post.get("min_side", 64) * (post.get("scale", 1) if post.get("model_input") == "bicubic" else 1))
    run_spec = dataclasses.replace(spec, height=spec.height or side, width=spec.width or side)
    with open_runner(model_dir, "onnxruntime") as runner:
        batch = runner.inputs[0].shape[0] if isinstance(runner.inputs[0].shape[0], int) else 1
        values = runner.infer({spec.name: _zero_batch(run_spec, batch)})
    found = [TensorSpec(name, array.shape, array.dtype.name) for name, array in values.items()]
    check_outputs(model_dir.manifest.task, found, model_dir.manifest.classes, run_spec.height, run_spec.width,
                  source=f"{source} (run in onnxruntime)", batch=batch)


# command line ----------------------------------------------------------------------------
def read_classes(path: Path) -> list[str]:
    """Class names from a text file, one a line (blank lines skipped)."""
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as err:
        raise InputError(f"cannot read class names from {path}: {err.strerror}",
                         fix="pass a text file with one class name a line") from err
    if not names:
        raise InputError(f"{path} holds no class names", fix="write one class name a line")
    return names


def _floats(text: str) -> tuple[float, ...]:
    """Argument type: comma-separated finite numbers (``--mean``; ``--std`` checks > 0 in the manifest)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW (or one side for a square), got {text!r}")
    return (sides[0], sides[-1])


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_description_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that describe a model to the manifest (``import``, ``export --module``)."""
    p.add_argument("--classes", type=existing_file, help="text file of the class names, one a line (pose: joint names)")
    p.add_argument("--image-size", type=_image_size, help="input HxW the images are resized to (needed where "
                                                          "the model's own input size is dynamic)")
    p.add_argument("--mean", type=_floats, help="per-channel mean of pixels in [0, 1], e.g. 0.485,0.456,0.406 "
                                                "(default 0,0,0)")
    p.add_argument("--std", type=_floats, help="per-channel std, e.g. 0.229,0.224,0.225 (default 1,1,1)")
    p.add_argument("--resize", choices=RESIZE_POLICIES, default="bilinear",
                   help="resize policy to the input size: stretch with an interpolation, letterbox (keep the "
                        "aspect, pad) or center-crop (keep the aspect, crop); default bilinear")
    p.add_argument("--postprocess", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                   help="a post-processing parameter (JSON value), repeatable, e.g. score_threshold=0.4")
    p.add_argument("--name", help="the model's name in reports (default: the file's or factory's name)")


def description(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`import_onnx` / ``export_module`` from :func:`add_description_arguments`."""
    return {"classes": read_classes(args.classes) if args.classes else (), "image_size": args.image_size,
            "mean": args.mean, "std": args.std, "resize": args.resize, "postprocess": dict(args.postprocess),
            "name": args.name}


def _role(text: str) -> tuple[str, str]:
    """Argument type of ``--output NAME=ROLE``."""
    name, sep, role = text.rpartition("=")
    if not sep or not name or not role:
        raise argparse.ArgumentTypeError(f"expected NAME=ROLE (an output's name and its role), got {text!r}")
    return name, role


def cmd_import(args: argparse.Namespace) -> None:
    with atomic.transaction(args.out):  # a failed import leaves --out as it was (or absent)
        model_dir = import_onnx(args.onnx, args.task, args.out, **description(args), layout=args.layout,
                                channels=args.channels, scale=args.scale, outputs=args.outputs,
                                output_layout=args.output_layout, output_roles=args.output,
                                image_size_range=args.image_size_range, stride=args.stride)
    m = model_dir.manifest
    outputs = ", ".join(f"{o.name} {o.shape}" for o in m.outputs)
    payload = {"model_dir": str(model_dir.root), "task": m.task, "outputs": [o.name for o in m.outputs],
               "scores": m.postprocess.get("outputs"), "input": {"layout": m.input.layout, "color": m.input.color,
                                                                 "scale": m.input.scale, "dtype": m.input.dtype}}
    print(json.dumps(payload, indent=2) if args.json else
          f"model directory written to {model_dir.root} ({m.task}; outputs {outputs}; scores are "
          f"{m.postprocess.get('outputs')}{' (' + m.model['last_op'] + ' in the graph)' if m.model.get('last_op') else ''}; "
          f"input {m.input.layout} {m.input.color} {m.input.dtype} {m.input.scale})")


def register(command) -> None:
    """Add ``import`` to the root CLI (``command(name, func, help) -> parser``)."""
    p = command("import", cmd_import, "turn an ONNX file into a model directory (predict, bench, serve, build)")
    p.add_argument("onnx", type=existing_file, help="the ONNX file")
    p.add_argument("--task", required=True, choices=tuple(CONTRACTS))
    p.add_argument("--out", required=True, type=output_dir, help="the model directory to write")
    add_description_arguments(p)
    p.add_argument("--image-size-range", type=int_list, metavar="MIN,MAX", help="for an input of dynamic height and "
                   "width, instead of --image-size: px per side (MIN,MAX, or MIN,OPT,MAX with the size the engine "
                   "is tuned for; default opt: max); images are fed at their own size, fitted into the range")
    p.add_argument("--stride", type=positive_int, help="with --image-size-range: fed sides are multiples of it "
                   "(default: the smallest power of two up to 64 the model runs at)")
    g = p.add_argument_group("conventions of other exporters")
    g.add_argument("--layout", choices=INPUT_LAYOUTS, help="the input's layout (default: from its shape)")
    g.add_argument("--channels", choices=COLORS, default="RGB", help="channel order the model takes "
                   "(default RGB; mean/std are in this order)")
    g.add_argument("--scale", choices=SCALES, default="0-1", help="pixel values before mean/std: "
                   "value/255 (0-1, default) or value (0-255)")
    g.add_argument("--outputs", choices=conventions.OUTPUT_KINDS, help="the scores the model returns (default: "
                   "probabilities where the graph ends in Softmax/Sigmoid, and for detectors; else logits)")
    g.add_argument("--output-layout", choices=tuple(LAYOUTS), help="a detector's raw output layout (yolov5 "
                   "[N,A,5+C], yolov8 [N,4+C,A], ssd boxes + scores with background column 0), or binary "
                   "(a one-channel segmenter); box format and units: --postprocess box_format=xyxy|yxyx|cxcywh, "
                   "box_units=pixels|normalised")
    g.add_argument("--output", type=_role, action="append", default=[], metavar="NAME=ROLE",
                   help="which output plays which role (repeatable; outputs not named are ignored)")
