"""The ``visionrt`` command line: one subcommand per stage, plus ``pipeline`` and ``doctor``.

Stages that need training/export code (torch) import it only when run, so ``predict``,
``bench``, ``build`` and ``doctor`` work on a runtime-only install. Errors are one line on
stderr and a non-zero exit; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import BackendUnavailable, InputError, VisionRTError
from .tasks import TASKS


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _size_range(text: str) -> int | tuple[int, int, int]:
    values = _ints(text)
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected N or MIN,OPT,MAX, got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def _require_training_extra() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as err:
        raise BackendUnavailable("this stage needs PyTorch, which is not installed",
                                 fix="pip install 'visionrt[train]'") from err


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if args.json else text)


#: ``predict`` flags passed to the task's post-processing when given.
PREDICT_OPTIONS = ("top_k", "score_threshold", "iou_threshold", "max_detections", "mask_threshold")


# subcommands --------------------------------------------------------------------------
def cmd_data(args: argparse.Namespace) -> None:
    from .pipeline import build_data

    path = build_data(args.task, args.out, quick=not args.full, seed=args.seed)
    _emit(args, {"data": str(path)}, f"dataset written to {path}")


def cmd_train(args: argparse.Namespace) -> None:
    _require_training_extra()
    if args.nproc > 1:
        from .pipeline import train_distributed

        sys.exit(train_distributed(args.nproc, sys.argv[1:]))
    from ..train.loop import fit
    from ..train.tasks import configure

    config = configure(args.task, not args.full, args.model, seed=args.seed, resume=args.resume,
                       threads=args.threads, max_minutes=args.max_minutes,
                       **{k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                            ("lr", args.lr)) if v is not None})
    model_dir = fit(config, args.data, args.out)
    if model_dir is not None:
        metrics = model_dir.manifest.metrics["pytorch"]["test"]
        _emit(args, {"model_dir": str(model_dir.root), "test": metrics},
              f"model written to {model_dir.root} (test {metrics})")


def cmd_export(args: argparse.Namespace) -> None:
    _require_training_extra()
    from .manifest import ModelDir
    from ..export.verify import export_and_verify

    log = (lambda message: print(message, file=sys.stderr)) if args.json else print
    report = export_and_verify(ModelDir.open(args.model_dir), args.data, samples=args.samples, log=log)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    if not report.passed:
        sys.exit(1)


def cmd_build(args: argparse.Namespace) -> None:
    from ..export.build import build

    result = build(args.model_dir, flavour=args.flavour, onnx_key=args.onnx_key, min_batch=args.min_batch,
                   opt_batch=args.opt_batch, max_batch=args.max_batch, height=args.height, width=args.width,
                   compute_capabilities=args.compute_capability, workspace_mib=args.workspace_mib)
    f = result.facts
    _emit(args, {"key": result.key, "path": str(result.path), **f},
          f"engine written to {result.path} ({f['flavour']} {f['tensorrt_version']}, {f['precision']}, "
          f"{f['build_seconds']:.1f}s, {f['engine_bytes'] / 1e6:.1f} MB, "
          f"compute capability {', '.join(f['compute_capabilities'])})")


def cmd_predict(args: argparse.Namespace) -> None:
    from . import atomic
    from .images import load_image
    from .predictor import Predictor

    options = {name: getattr(args, name) for name in PREDICT_OPTIONS if getattr(args, name) is not None}
    with Predictor(args.model_dir, backend=args.backend, provider=args.provider) as predictor:
        images = [load_image(path) for path in args.images]
        results = predictor.predict(images, **options)
    rows = []
    for path, image, result in zip(args.images, images, results):
        row = {"image": str(path), **result.to_dict()}
        if args.save_dir:
            from PIL import Image

            row["drawn"] = str(args.save_dir / f"{path.stem}.{predictor.manifest.task}.png")
            with atomic.atomic_path(row["drawn"]) as tmp:
                Image.fromarray(result.draw(image)).save(tmp, format="PNG")
            if hasattr(result, "output"):  # tasks whose result is an image (super-resolution, style)
                row["output"] = str(args.save_dir / f"{path.stem}.{predictor.manifest.task}.output.png")
                with atomic.atomic_path(row["output"]) as tmp:
                    Image.fromarray(result.output()).save(tmp, format="PNG")
        rows.append(row)
    _emit(args, rows, "\n".join(f"{row['image']}: {result.summary()}" + (f" -> {row['drawn']}" if "drawn" in row else "")
                                for row, result in zip(rows, results)))


def cmd_bench(args: argparse.Namespace) -> None:
    from .manifest import ModelDir
    from ..benchmarks.run import bench_model_dir

    paths = bench_model_dir(ModelDir.open(args.model_dir), backends=args.backends, batch_sizes=args.batch_sizes,
                            data_dir=args.data, out_dir=args.out, min_seconds=args.seconds, threads=args.threads)
    _emit(args, {k: str(v) for k, v in paths.items()}, f"benchmark report: {paths['markdown']}")


def cmd_pipeline(args: argparse.Namespace) -> None:
    _require_training_extra()
    from .pipeline import run_all, run_pipeline

    options = dict(quick=not args.full, seed=args.seed, build=not args.no_build, bench_seconds=args.bench_seconds)
    if args.task == "all":
        if args.model:
            raise InputError("--model names one task's architecture", fix="leave it out with 'all'")
        result = run_all(list(TASKS), args.out, **options)
        _emit(args, result, f"pipeline done for every task: summary at {result['markdown']}")
        return
    result = run_pipeline(args.task, args.out, model=args.model, **options)
    _emit(args, result, f"pipeline done: report at {result['report']}")


def cmd_doctor(args: argparse.Namespace) -> None:
    from .doctor import diagnose, format_report

    report = diagnose()
    _emit(args, report, format_report(report))


# parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visionrt", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.set_defaults(func=func)
        return p

    p = command("data", cmd_data, "generate the built-in dataset (real digits on real photos, no downloads)")
    p.add_argument("--task", choices=TASKS, default="classify")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--full", action="store_true", help="the larger dataset (default: quick)")
    p.add_argument("--seed", type=int, default=0)

    p = command("train", cmd_train, "train a model; writes weights + manifest into --out")
    p.add_argument("--task", choices=TASKS, default="classify")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model", help="architecture (default: the task's; `visionrt doctor` lists them)")
    p.add_argument("--full", action="store_true", help="the task's full configuration (default: the quick one)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = default)")
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints")
    p.add_argument("--nproc", type=int, default=1, help="data-parallel processes (torchrun, DDP)")

    p = command("export", cmd_export, "export ONNX and check its parity with PyTorch on held-out images")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--data", type=Path, help="dataset for the parity check (default: the training data)")
    p.add_argument("--samples", type=int, help="held-out images for the parity check (default: the whole test split)")

    p = command("build", cmd_build, "build a TensorRT (or TensorRT-RTX) engine from the model's ONNX")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--flavour", choices=("auto", "tensorrt", "tensorrt_rtx"), default="auto")
    p.add_argument("--onnx-key", help="which ONNX file of the manifest to build (default: the TensorRT "
                                      "flavour onnx_trt where export wrote one, else onnx)")
    p.add_argument("--min-batch", type=int, help="optimisation profile (default 1, 8, 32)")
    p.add_argument("--opt-batch", type=int)
    p.add_argument("--max-batch", type=int)
    p.add_argument("--height", type=_size_range, help="dynamic input height: N or MIN,OPT,MAX (pixels)")
    p.add_argument("--width", type=_size_range, help="dynamic input width: N or MIN,OPT,MAX (pixels)")
    p.add_argument("--compute-capability", action="append",
                   help="TensorRT-RTX target, e.g. 8.6 (repeatable; default: every supported one)")
    p.add_argument("--workspace-mib", type=int)

    p = command("predict", cmd_predict, "run a model on image files")
    p.add_argument("model_dir", type=Path)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"))
    p.add_argument("--provider", default="cpu", choices=("cpu", "cuda", "tensorrt"),
                   help="onnxruntime execution provider")
    p.add_argument("--top-k", type=int, help="classify: how many classes to list")
    p.add_argument("--score-threshold", type=float, help="detect/instance: keep detections scoring above it "
                                                         "(default: the manifest's postprocess)")
    p.add_argument("--iou-threshold", type=float, help="detect: NMS IoU threshold (models with NMS in the runtime)")
    p.add_argument("--max-detections", type=int, help="detect/instance: at most this many per image")
    p.add_argument("--mask-threshold", type=float, help="instance: mask probability threshold")
    p.add_argument("--save-dir", type=Path, help="write each result drawn onto its image (PNG) here, and the "
                                                 "output image of tasks that make one (superres, style)")

    p = command("bench", cmd_bench, "latency and throughput per backend and batch size")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--backends", default="onnxruntime,torch",
                   type=lambda s: [b for b in s.split(",") if b],
                   help="comma-separated: onnxruntime, torch, tensorrt (unavailable ones are skipped)")
    p.add_argument("--batch-sizes", type=_ints, default=[1, 8, 32])
    p.add_argument("--data", type=Path, help="dataset whose test images feed the end-to-end runs")
    p.add_argument("--out", type=Path, help="report directory (default: <model_dir>/bench)")
    p.add_argument("--seconds", type=float, default=1.0, help="minimum measuring time per case")
    p.add_argument("--threads", type=int, help="intra-op threads for onnxruntime and torch alike "
                                               "(default: the usable cores)")

    p = command("pipeline", cmd_pipeline, "every stage for a task: data, train, export, build, bench, report")
    p.add_argument("task", choices=(*TASKS, "all"), help="a task, or all of them one after another "
                                                         "(then also <out>/summary.md)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--quick", action="store_true", help="the quick CPU configuration (the default)")
    p.add_argument("--full", action="store_true", help="larger data and longer training")
    p.add_argument("--model", help="architecture (default: the task's; `visionrt doctor` lists them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-build", action="store_true", help="skip the TensorRT engine build")
    p.add_argument("--bench-seconds", type=float, default=1.0, help="minimum measuring time per benchmark point")

    command("doctor", cmd_doctor, "which backends, precisions and plugins are usable here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except VisionRTError as err:
        if args.debug:
            raise
        print(f"visionrt {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
