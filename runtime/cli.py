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
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

from .argtypes import output_dir
from .backends import RUNTIME_BACKENDS
from .backends.onnxruntime import PROVIDERS
from .errors import BackendUnavailable, InputError, VisionRTError
from .precision import PRECISIONS
from .tasks import prediction_options

#: Subcommands of the stages: name -> (module whose ``register(command)`` adds it, the extra it
#: needs or None). ``command(name, func, help) -> argparse.ArgumentParser`` adds one subcommand
#: (with ``--json``) running ``func(args)``. Adding a command is one line here.
COMMANDS: dict[str, tuple[str, str | None]] = {
    "data": ("visionrt.train.cli", "train"),
    "train": ("visionrt.train.cli", "train"),
    "export": ("visionrt.export.cli", "train"),
    "build": ("visionrt.export.cli", None),
    "bench": ("visionrt.benchmarks.cli", None),
    "bench-prepost": ("visionrt.benchmarks.prepost", "train"),
    "pipeline": ("visionrt.benchmarks.cli", "train"),
    "zoo": ("visionrt.benchmarks.cli", "train"),
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


def emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    """The command's result on stdout: ``payload`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(payload, indent=2, default=str) if args.json else text)


def option_type(option: Any) -> Callable[[str], Any]:
    """Argument type of a task's post-processing option: parsed and checked by its spec, so a bad
    value gets the words it gets from the Python API and the server."""
    def parse(text: str) -> Any:
        try:
            return option.parse(text.strip())
        except InputError as err:
            raise argparse.ArgumentTypeError(err.args[0]) from None
    return parse


# subcommands --------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> None:
    from . import atomic
    from .images import load_image
    from .predictor import Predictor
    from .tasks.base import ImageResult

    options = {name: getattr(args, name) for name in prediction_options() if getattr(args, name) is not None}
    with Predictor(args.model_dir, backend=args.backend, provider=args.provider, precision=args.precision) as predictor:
        images = [load_image(path) for path in args.images]
        results = predictor.predict(images, **options)
    rows = []
    stems = saved_stems(args.images)
    for path, stem, image, result in zip(args.images, stems, images, results):
        row = {"image": str(path), **result.to_dict()}
        if args.save_dir:
            from PIL import Image

            row["drawn"] = str(args.save_dir / f"{stem}.{predictor.manifest.task}.png")
            with atomic.atomic_path(row["drawn"]) as tmp:
                Image.fromarray(result.draw(image)).save(tmp, format="PNG")
            if isinstance(result, ImageResult):  # super-resolution, style
                row["output"] = str(args.save_dir / f"{stem}.{predictor.manifest.task}.output.png")
                with atomic.atomic_path(row["output"]) as tmp:
                    Image.fromarray(result.output()).save(tmp, format="PNG")
        rows.append(row)
    emit(args, rows, "\n".join(f"{row['image']}: {result.summary()}" + (f" -> {row['drawn']}" if "drawn" in row else "")
                                for row, result in zip(rows, results)))


def saved_stems(paths: list[Path]) -> list[str]:
    """A distinct file-name stem per input for ``--save-dir``: the file's stem, or, where several
    inputs share it (``a/cat.png``, ``b/cat.png``), ``<parent>-<stem>``, then ``-<index>`` as a last resort."""
    stems = [p.stem for p in paths]
    clashing = {s for s in stems if stems.count(s) > 1}
    stems = [f"{p.parent.name}-{p.stem}" if p.stem in clashing and p.parent.name else p.stem for p in paths]
    return [f"{s}-{i}" if stems.count(s) > 1 else s for i, s in enumerate(stems)]


def cmd_doctor(args: argparse.Namespace) -> None:
    from .doctor import diagnose, format_report

    report = diagnose()
    emit(args, report, format_report(report))


# parser ---------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``visionrt CMD: error: ... (see visionrt CMD --help)``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(text: str) -> str:
    """``text`` on one line: its non-blank lines joined with '; '."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="visionrt", description=__doc__.splitlines()[0])
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
    p.add_argument("--backend", default="onnxruntime", choices=RUNTIME_BACKENDS,
                   help="auto: the fastest CPU backend measured for the precision (the benchmark's figures)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="which of the model's files to run (export --precision writes fp16 and int8)")
    p.add_argument("--provider", default="cpu", choices=tuple(PROVIDERS),
                   help="onnxruntime execution provider")
    for name, (option, tasks) in prediction_options().items():
        p.add_argument(f"--{name.replace('_', '-')}", type=option_type(option), dest=name,
                       help=f"{'/'.join(tasks)}: {option.help} (default: the manifest's postprocess)")
    p.add_argument("--save-dir", type=output_dir, help="write each result drawn onto its image (PNG) here, and the "
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


class _StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is at the time (``main`` may run many times in one process)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(level: int) -> None:
    """The ``visionrt`` logger's messages (and its modules') go to stderr, one short line each."""
    logger = logging.getLogger("visionrt")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[visionrt] %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False  # a library that configures the root logger must not print ours twice
    logger.setLevel(level)


#: Exit code after a broken pipe (``visionrt doctor | head -1``): 128 + SIGPIPE, as a Unix tool killed by it.
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends as one line on stderr: a visionrt error or bad usage exits 2,
    an unexpected exception 1 (``internal error: ...``), Ctrl-C 130, a closed stdout pipe 141 silently."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown and not getattr(args, "stand_in", False):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exit_:  # bad usage (its one line is printed) or --help
        return exit_.code if isinstance(exit_.code, int) else 2
    configure_logging(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    try:
        args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"visionrt {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        error = as_visionrt_error(err)
        if error is None:
            print(f"visionrt {args.command}: internal error: {type(err).__name__}: {one_line(err)[:500]} "
                  "(re-run with --debug and report it)", file=sys.stderr)
            return 1
        print(f"visionrt {args.command}: error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    return 0


def as_visionrt_error(err: Exception) -> VisionRTError | None:
    """``err`` as the visionrt error it stands for: itself, an :class:`InputError` for an OS error
    on a path (a name too long, a directory where a file belongs, no permission, a full disk), or
    None for an unexpected error (a bug)."""
    if isinstance(err, VisionRTError):
        return err
    if isinstance(err, OSError) and err.filename is not None:
        where = str(err.filename)[:200] + (f" -> {str(err.filename2)[:200]}" if err.filename2 else "")
        return InputError(f"cannot use {where}: {err.strerror or err}",
                          fix="check the path, its type (file or directory) and its permissions")
    return None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush into the closed pipe stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # stdout is not a file descriptor (captured): nothing will flush into a pipe


if __name__ == "__main__":
    sys.exit(main())
