"""The export stage's subcommands: ``visionrt export`` (ONNX + parity) and ``visionrt build`` (engine).

Registered by the root CLI (:data:`visionrt.runtime.cli.COMMANDS`); torch and TensorRT are
imported only when a command runs. ``build`` needs no torch.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from ..runtime import atomic
from ..runtime.argtypes import existing_dir, existing_file, int_list, name_list, output_dir, positive_int
from ..runtime.cli import Command, emit
from ..runtime.errors import InputError
from ..runtime.manifest import DTYPES, INPUT_LAYOUTS
from ..runtime.precision import PRECISIONS
from ..runtime.tasks import TASKS
from ..runtime.tensorrt_env import FLAVOURS
from .import_onnx import add_description_arguments


def size_range(text: str) -> int | tuple[int, int, int]:
    """Argument type: one size ``N`` or a range ``MIN,OPT,MAX`` (pixels)."""
    values = int_list(text)
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected N or MIN,OPT,MAX, got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def cmd_export(args: argparse.Namespace) -> None:
    from ..runtime.manifest import ModelDir
    from .fp32_reference import check_backends, is_imported
    from .pixel_input import set_pixel_input
    from .stage import export_and_verify

    if args.module:
        from .user_module import cmd_export_module

        with atomic.transaction(args.out) if args.out else contextlib.nullcontext():
            return cmd_export_module(args)
    if args.model_dir is None:
        raise InputError("export needs a MODEL_DIR (or --module PKG.MOD:FACTORY for a module of your own)",
                         fix="e.g. visionrt export runs/classify-resnet")

    reduced = [p for p in args.precision if p != "fp32"]
    model_dir = ModelDir.open(args.model_dir)
    with atomic.transaction(model_dir.root):  # a failure leaves the model directory as it was
        set_pixel_input(model_dir, args.input_dtype, args.input_layout)
        if is_imported(model_dir):  # an imported ONNX: parity of the other backends against onnxruntime fp32
            report = check_backends(model_dir, args.data, samples=args.samples)
        else:
            report = export_and_verify(model_dir, args.data, samples=args.samples)
        precisions = {}
        if reduced:
            from .precision import export_precisions

            precisions = export_precisions(model_dir, args.data, reduced, samples=args.samples)
    facts = report.to_dict() if report else {"parity": "no backend beside onnxruntime to compare"}
    if args.json:
        print(json.dumps({**facts, "precisions": precisions} if reduced else facts, indent=2))
    if (report and not report.passed) or not all(precisions[p].get("passed") for p in reduced):
        sys.exit(1)


def check_profile(min_batch: int | None, opt_batch: int | None, max_batch: int | None) -> None:
    """Refuse an optimisation profile whose given batch sizes are not ``min <= opt <= max``."""
    given = [(n, v) for n, v in (("--min-batch", min_batch), ("--opt-batch", opt_batch), ("--max-batch", max_batch))
             if v is not None]
    for (name_a, a), (name_b, b) in zip(given, given[1:]):
        if a > b:
            raise InputError(f"{name_a} {a} is larger than {name_b} {b}", fix="give min <= opt <= max batch sizes")


def cmd_build(args: argparse.Namespace) -> None:
    from .build import build, build_onnx_file, parse_shapes

    if args.model_dir.suffix == ".onnx":
        result = build_onnx_file(args.model_dir, out=args.out, shapes=parse_shapes(args.shapes or ""),
                                 flavour=args.flavour, min_batch=args.min_batch, opt_batch=args.opt_batch,
                                 max_batch=args.max_batch, height=args.height, width=args.width,
                                 compute_capabilities=args.compute_capability, workspace_mib=args.workspace_mib)
    else:
        check_profile(args.min_batch, args.opt_batch, args.max_batch)
        with atomic.transaction(args.model_dir) if args.model_dir.is_dir() else contextlib.nullcontext():
            result = build(args.model_dir, flavour=args.flavour, onnx_key=args.onnx_key, min_batch=args.min_batch,
                           opt_batch=args.opt_batch, max_batch=args.max_batch, height=args.height, width=args.width,
                           compute_capabilities=args.compute_capability, workspace_mib=args.workspace_mib,
                           precision=args.precision)
    f = result.facts
    emit(args, {"key": result.key, "path": str(result.path), **f},
         f"engine written to {result.path} ({f['flavour']} {f['tensorrt_version']}, {f['precision']}, "
         f"{f['build_seconds']:.1f}s, {f['engine_bytes'] / 1e6:.1f} MB, "
         f"compute capability {', '.join(f['compute_capabilities'])})")


def register(command: Command) -> None:
    p = command("export", cmd_export, "export ONNX and check its parity with PyTorch on held-out images "
                                      "(a trained model directory, or --module: an nn.Module of your own)")
    p.add_argument("model_dir", type=Path, nargs="?")
    p.add_argument("--data", type=existing_dir, help="dataset for the parity check (default: the training data)")
    p.add_argument("--samples", type=positive_int, help="held-out images for the parity check (default: the whole test split)")
    p.add_argument("--precision", default=["fp32"], type=name_list(*PRECISIONS),
                   help="comma-separated: fp32, fp16, int8 (int8 calibrates on the training images); "
                        "each file's accuracy vs PyTorch fp32 is checked against its tolerance")
    p.add_argument("--input-dtype", choices=DTYPES,
                   help="the ONNX input: uint8 takes decoded pixels and does cast, /255 and mean/std inside "
                        "the graph (recorded in the manifest's input spec); default: as the manifest says")
    p.add_argument("--input-layout", choices=INPUT_LAYOUTS, help="the ONNX input's layout (default: as the manifest says)")

    p.add_argument("--module", metavar="PKG.MOD:FACTORY", help="your nn.Module: a function or class that builds it")
    p.add_argument("--module-kwargs", type=json.loads, default={}, metavar="JSON", help="keyword arguments of it")
    p.add_argument("--weights", type=existing_file, help="its trained weights (.safetensors, or a .pt state dict)")
    p.add_argument("--task", choices=TASKS, help="the task whose output contract the module meets")
    p.add_argument("--out", type=output_dir, help="the model directory to write (with --module)")
    add_description_arguments(p)

    p = command("build", cmd_build, "build a TensorRT (or TensorRT-RTX) engine from a model directory's "
                                    "ONNX, or from any .onnx file (like trtexec)")
    p.add_argument("model_dir", type=Path, metavar="MODEL", help="a model directory or an .onnx file")
    p.add_argument("--shapes", help="an .onnx file's input shapes, trtexec style: name:AxBxC[,name:...]")
    p.add_argument("--out", type=Path, help="an .onnx file's engine path (default: beside it)")
    p.add_argument("--flavour", choices=("auto", *FLAVOURS), default="auto")
    p.add_argument("--onnx-key", help="which ONNX file of the manifest to build (default: the TensorRT "
                                      "flavour onnx_trt where export wrote one, else onnx)")
    p.add_argument("--min-batch", type=positive_int, help="optimisation profile (default 1, 8, 32)")
    p.add_argument("--opt-batch", type=positive_int)
    p.add_argument("--max-batch", type=positive_int)
    p.add_argument("--height", type=size_range, help="dynamic input height: N or MIN,OPT,MAX (pixels)")
    p.add_argument("--width", type=size_range, help="dynamic input width: N or MIN,OPT,MAX (pixels)")
    p.add_argument("--compute-capability", action="append",
                   help="TensorRT-RTX target, e.g. 8.6 (repeatable; default: every supported one)")
    p.add_argument("--workspace-mib", type=positive_int, help="TensorRT builder workspace limit (MiB)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="build from that precision's ONNX (export it first with --precision)")
