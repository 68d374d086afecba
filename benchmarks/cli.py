"""The benchmark stage's subcommands: ``visionrt bench`` and ``visionrt pipeline`` (every stage).

Registered by the root CLI (:data:`visionrt.runtime.cli.COMMANDS`); the stages' code is
imported only when a command runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..runtime import atomic
from ..runtime.backends import BACKENDS
from ..runtime.argtypes import (existing_dir, existing_file, int_list, name_list, non_negative_int, output_dir,
                                positive_float, positive_int)
from ..runtime.cli import Command, emit
from ..runtime.errors import InputError
from ..runtime.precision import PRECISIONS
from ..runtime.tasks import TASKS


def cmd_bench(args: argparse.Namespace) -> None:
    from ..runtime.manifest import ModelDir
    from . import onnx_file
    from .run import bench_model_dir

    if onnx_file.is_onnx_file(args.model_dir):
        return onnx_file.cmd_bench_onnx(args)

    precisions = args.precision
    saved = None
    if args.compare:
        from .compare import load

        saved = load(args.compare)  # before measuring: a wrong path fails at once
    model_dir = ModelDir.open(args.model_dir)
    batch_sizes = args.batch_sizes or [1, 8, 32]
    check_batch_memory(model_dir.manifest, batch_sizes)
    with atomic.transaction(model_dir.root):  # a failure keeps the earlier report and manifest
        paths = bench_model_dir(model_dir, backends=args.backends, batch_sizes=batch_sizes,
                                data_dir=args.data, out_dir=args.out, min_seconds=args.seconds, threads=args.threads,
                                precisions=precisions)
    emit(args, {k: str(v) for k, v in paths.items()}, f"benchmark report: {paths['markdown']}")
    if saved is not None:
        from .compare import compare, load

        result = compare(saved, load(paths["json"]), max_slowdown=args.max_slowdown, normalise=args.normalise)
        print("\n".join(result.lines()), file=sys.stderr)
        if result.failed:
            raise SystemExit(1)


def check_batch_memory(manifest, batch_sizes: list[int]) -> None:
    """Refuse batch sizes whose inputs would not fit (:func:`.machine.check_bench_memory`): the float32
    batches bench keeps, one per size plus as much again for the backend's working copies, estimated
    from the manifest's input shape (models of any size: the task's smallest benchmark side, else 224 px)."""
    from ..runtime.tasks import runtime_task
    from .machine import check_bench_memory

    spec = manifest.input
    sides = runtime_task(manifest.task).bench_sides or (224,)
    pixels = (spec.height or min(sides)) * (spec.width or min(sides))
    check_bench_memory(2 * sum(batch_sizes) * spec.channels * pixels * 4,
                       f"batch sizes {','.join(map(str, batch_sizes))} of {spec.channels}×{spec.height or min(sides)}"
                       f"×{spec.width or min(sides)} inputs")


def cmd_pipeline(args: argparse.Namespace) -> None:
    from .pipeline import run_all, run_pipeline

    options = dict(quick=not args.full, seed=args.seed, build=not args.no_build, bench_seconds=args.bench_seconds,
                   precisions=["fp32", *(p for p in args.precision if p != "fp32")],
                   bench_batch_sizes=args.bench_batch_sizes, epochs=args.epochs)
    if args.task == "all":
        if args.model:
            raise InputError("--model names one task's architecture", fix="leave it out with 'all'")
        result = run_all(list(TASKS), args.out, **options)
        emit(args, result, f"pipeline done for every task: summary at {result['markdown']}")
        return
    result = run_pipeline(args.task, args.out, model=args.model, **options)
    emit(args, result, f"pipeline done: report at {result['report']}")


def cmd_zoo(args: argparse.Namespace) -> None:
    from .zoo import run_zoo

    result = run_zoo(args.out, only=args.only, seed=args.seed, build=not args.no_build,
                     bench_seconds=args.bench_seconds, bench_batch_sizes=args.bench_batch_sizes,
                     precisions=["fp32", *(p for p in args.precision if p != "fp32")])
    missed = result["missed"]
    emit(args, result, f"zoo: {', '.join(missed)} failed or missed the target ({result['markdown']})" if missed
         else f"zoo: every row at its target ({result['markdown']})")
    if missed:
        raise SystemExit(1)


def register(command: Command) -> None:
    from . import onnx_file

    p = command("bench", cmd_bench, "latency and throughput per backend and batch size, of a model "
                                    "directory or of any ONNX file (then on generated inputs)")
    p.add_argument("model_dir", type=Path, metavar="MODEL", help="a model directory or an .onnx file")
    p.add_argument("--backends", default="onnxruntime,torch", type=name_list(*BACKENDS),
                   help="comma-separated: onnxruntime, torch, tensorrt (unavailable ones are skipped)")
    p.add_argument("--batch-sizes", type=int_list, help="default: 1,8,32")
    onnx_file.add_arguments(p)
    p.add_argument("--data", type=existing_dir, help="dataset whose test images feed the end-to-end runs")
    p.add_argument("--out", type=output_dir, help="report directory (default: <model_dir>/bench)")
    p.add_argument("--seconds", type=positive_float, default=1.0, help="minimum measuring time per case")
    p.add_argument("--threads", type=non_negative_int, help="intra-op threads for onnxruntime and torch alike "
                                               "(default: the usable cores)")
    p.add_argument("--precision", default=["fp32"], type=name_list(*PRECISIONS),
                   help="comma-separated: fp32, fp16, int8 (the files export wrote)")
    p.add_argument("--compare", type=existing_file, help="a saved bench.json: print the change per point, exit 1 when "
                                                "slower than --max-slowdown or accuracy dropped beyond tolerance")
    p.add_argument("--max-slowdown", type=positive_float, default=1.15)
    p.add_argument("--normalise", action="store_true",
                   help="compare latency / the reference workload timed in each run (CI machines differ)")

    p = command("pipeline", cmd_pipeline, "every stage for a task: data, train, export, build, bench, report")
    p.add_argument("task", choices=(*TASKS, "all"), help="a task, or all of them one after another "
                                                         "(then also <out>/summary.md)")
    p.add_argument("--out", required=True, type=output_dir)
    p.add_argument("--full", action="store_true", help="larger data and longer training")
    p.add_argument("--model", help="architecture (default: the task's; `visionrt doctor` lists them)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--epochs", type=positive_int, help="train this many epochs (default: the configuration's)")
    p.add_argument("--no-build", action="store_true", help="skip the TensorRT engine build")
    p.add_argument("--bench-seconds", type=positive_float, default=1.0, help="minimum measuring time per benchmark point")
    p.add_argument("--bench-batch-sizes", type=int_list, default=[1, 8, 32], help="batch sizes to benchmark (default 1,8,32)")
    p.add_argument("--precision", default=list(PRECISIONS), type=name_list(*PRECISIONS),
                   help="precisions to export, build and benchmark beside fp32 (default: fp32,fp16,int8)")

    p = command("zoo", cmd_zoo, "every architecture of every task through every stage, against its target: "
                                "<out>/zoo.md")
    p.add_argument("--out", required=True, type=output_dir)
    p.add_argument("--only", type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
                   help="comma-separated rows (task/architecture, e.g. detect/ssd,superres/vdsr-x3) or tasks; "
                        "the other rows of an earlier zoo.json are kept")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--no-build", action="store_true", help="skip the TensorRT engine builds")
    p.add_argument("--bench-seconds", type=positive_float, default=0.3, help="minimum measuring time per benchmark point")
    p.add_argument("--bench-batch-sizes", type=int_list, default=[1], help="batch sizes to benchmark (default 1)")
    p.add_argument("--precision", default=list(PRECISIONS), type=name_list(*PRECISIONS),
                   help="precisions to export, build and benchmark beside fp32 (default: fp32,fp16,int8)")
