"""The ``visionrt`` command line: the root of every stage's subcommands, plus ``predict`` and ``doctor``.

Each stage owns its subcommands in its ``cli`` module (``visionrt.train.cli``: data, train; ...),
listed in :data:`COMMANDS` by module path and imported only when the parser is built; a command
whose extra is not installed gets a stand-in that says which extra to install. Errors are one line
on stderr and a non-zero exit; ``--debug`` shows the traceback. Progress and notes are logged to
stderr through the ``visionrt`` logger (``--quiet``: warnings only, ``--verbose``: debug).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import BackendUnavailable, VisionRTError

#: Subcommands of the stages: name -> (module whose ``register(command)`` adds it, the extra it
#: needs or None). ``command(name, func, help) -> argparse.ArgumentParser`` adds one subcommand
#: (with ``--json``) running ``func(args)``. Adding a command is one line here.
COMMANDS: dict[str, tuple[str, str | None]] = {
    "data": ("visionrt.train.cli", "train"),
    "train": ("visionrt.train.cli", "train"),
    "export": ("visionrt.export.cli", "train"),
    "build": ("visionrt.export.cli", None),
    "bench": ("visionrt.benchmarks.cli", None),
    "pipeline": ("visionrt.benchmarks.cli", "train"),
    "serve": ("visionrt.runtime.server.cli", "serve"),
    "import": ("visionrt.export.import_onnx", None),
    "export-triton": ("visionrt.export.triton", None),
    "loadtest": ("visionrt.benchmarks.loadtest", "serve"),
}

#: Extra -> (the module whose presence means it is installed, what to call it in messages).
EXTRAS: dict[str, tuple[str, str]] = {
    "train": ("torch", "PyTorch"),
    "serve": ("fastapi", "FastAPI"),
}

Command = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


def int_list(text: str) -> list[int]:
    """Argument type: comma-separated positive integers."""
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    """The command's result on stdout: ``payload`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(payload, indent=2, default=str) if args.json else text)


#: ``predict`` flags passed to the task's post-processing when given.
PREDICT_OPTIONS = ("top_k", "score_threshold", "iou_threshold", "max_detections", "mask_threshold")


# subcommands --------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> None:
    from . import atomic
    from .images import load_image
    from .predictor import Predictor
    from .tasks.base import ImageResult

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
            if isinstance(result, ImageResult):  # super-resolution, style
                row["output"] = str(args.save_dir / f"{path.stem}.{predictor.manifest.task}.output.png")
                with atomic.atomic_path(row["output"]) as tmp:
                    Image.fromarray(result.output()).save(tmp, format="PNG")
        rows.append(row)
    emit(args, rows, "\n".join(f"{row['image']}: {result.summary()}" + (f" -> {row['drawn']}" if "drawn" in row else "")
                                for row, result in zip(rows, results)))


def cmd_doctor(args: argparse.Namespace) -> None:
    from .doctor import diagnose, format_report

    report = diagnose()
    emit(args, report, format_report(report))


# parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visionrt", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    loudness.add_argument("--verbose", action="store_true", help="log debug messages too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.set_defaults(func=func)
        return p

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
    command("doctor", cmd_doctor, "which backends, precisions and plugins are usable here")
    register_stages(command)
    return parser


def register_stages(command: Command) -> None:
    """Add every command of :data:`COMMANDS` through its module's ``register(command)``; a command
    whose extra (or module) is missing gets a stand-in that exits 2 naming what to install."""
    modules: dict[str, list[str]] = {}
    for name, (module, _) in COMMANDS.items():
        modules.setdefault(module, []).append(name)
    for module, names in modules.items():
        missing = {name: _missing_extra(COMMANDS[name][1]) for name in names}
        if all(missing.values()):
            register = None
        else:
            try:
                register = importlib.import_module(module).register
            except ImportError as err:
                missing = {name: _missing_module(err, module, COMMANDS[name][1]) for name in names}
                register = None
        for name, problem in missing.items():
            if problem:
                command(name, _stand_in(problem), f"(not installed: {problem})").set_defaults(stand_in=True)
        if register is not None:
            register(lambda name, func, help: argparse.ArgumentParser(add_help=False) if missing.get(name)
                     else command(name, func, help))


def _missing_extra(extra: str | None) -> str | None:
    """What a command of ``extra`` needs that is not installed, or None."""
    if extra is None or extra not in EXTRAS or _installed(EXTRAS[extra][0]):
        return None
    return f"this command needs {EXTRAS[extra][1]}, which is not installed (pip install 'visionrt[{extra}]')"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a None placeholder in sys.modules
        return False


def _missing_module(err: ImportError, module: str, extra: str | None) -> str:
    lacking = err.name or str(err)
    if module == lacking or module.startswith(f"{lacking}."):
        return f"this command is not part of this installation (no module {module})"
    known = next((title for key, title in EXTRAS.values() if lacking.split(".")[0] == key), lacking)
    hint = f" (pip install 'visionrt[{extra}]')" if extra else ""
    return f"this command needs {known}, which is not installed{hint}"


def _stand_in(problem: str) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        raise BackendUnavailable(problem)
    return run


def configure_logging(level: int) -> None:
    """The ``visionrt`` logger's messages (and its modules') go to stderr, one short line each."""
    logger = logging.getLogger("visionrt")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[visionrt] %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "stand_in", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    configure_logging(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
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
