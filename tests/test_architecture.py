"""The import graph points one way: benchmarks -> export -> train -> runtime, and the runtime never needs torch."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("runtime", "train", "export", "benchmarks")
#: stage -> the stages it may not import.
FORBIDDEN = {"runtime": {"train", "export", "benchmarks"}, "train": {"export", "benchmarks"},
             "export": {"benchmarks"}}


def imported_stages(source: str, package: list[str]) -> set[tuple[str, int]]:
    """``(stage, line)`` of every import of a visionrt stage in ``source``, a module of ``package``
    (e.g. ``["visionrt", "runtime"]``): absolute or relative, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = [*base, *node.module.split(".")] if node.module else base
            names = [".".join([*module, alias.name]) for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if len(parts) > 1 and parts[0] == "visionrt" and parts[1] in STAGES:
                found.add((parts[1], node.lineno))
    return found


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_stage_imports_only_lower_stages(stage):
    offenders = []
    for path in sorted((ROOT / stage).rglob("*.py")):
        package = ["visionrt", stage, *path.parent.relative_to(ROOT / stage).parts]
        offenders += [f"{path.relative_to(ROOT)}:{line} imports visionrt.{target}"
                      for target, line in sorted(imported_stages(path.read_text(), package))
                      if target in FORBIDDEN[stage]]
    assert not offenders, "\n".join(offenders)


def test_the_import_check_sees_relative_and_absolute_imports():
    source = textwrap.dedent("""
        from ..train import loop
        from .. import export
        from . import fine
        from .sub.deeper import thing
        def later():
            import visionrt.benchmarks.run
    """)
    assert imported_stages(source, ["visionrt", "runtime"]) == {
        ("train", 2), ("export", 3), ("runtime", 4), ("runtime", 5), ("benchmarks", 7)}
    assert imported_stages("from ..train import loop", ["visionrt", "runtime", "tasks"]) == {("runtime", 1)}


# no import cycles ---------------------------------------------------------------------------------
def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Every visionrt module (``visionrt.runtime.cli``; a package by its ``__init__.py``) -> its file."""
    found = {}
    for stage in STAGES:
        for path in sorted((root / stage).rglob("*.py")):
            parts = ["visionrt", stage, *path.relative_to(root / stage).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(source: str, package: list[str], known: set[str]) -> set[str]:
    """The modules of ``known`` that ``source`` (a module of ``package``) imports, at module level or
    inside functions (not under ``if TYPE_CHECKING``): ``from a import b`` counts as module ``a.b``
    where that is a module, else as ``a``; ``import a.b.c`` as its longest known prefix."""
    def module_of(name: str) -> str | None:
        parts = name.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in known), None)

    found = set()
    pending: list[ast.AST] = [ast.parse(source)]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending += node.orelse
            continue
        pending += ast.iter_child_nodes(node)
        if isinstance(node, ast.Import):
            found |= {module_of(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*(package[:len(package) - node.level + 1] if node.level else []),
                             *(node.module.split(".") if node.module else [])])
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else module_of(base)
                      for alias in node.names}
    return found - {None}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module in ``graph`` (module -> modules it
    imports), each sorted: modules that import each other, directly or around a circle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_imports_itself_around_a_circle():
    """Modules that import each other (even inside functions) are one concept split badly, or a
    registry that gathers what depends on it: split them so imports form no cycle."""
    modules = module_names()
    graph = {name: imports_of(path.read_text(), name.split(".") if path.name == "__init__.py"
                              else name.split(".")[:-1], set(modules)) - {name}
             for name, path in modules.items()}
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_finds_circles_through_functions_and_relative_imports():
    known = {"visionrt.runtime.plugins", "visionrt.runtime.plugins.registry", "visionrt.runtime.plugins.nms",
             "visionrt.runtime.plugins.nms.onnx_node", "visionrt.runtime.errors"}
    registry = textwrap.dedent("""
        from ..errors import PluginError
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from . import nms
        def plugins():
            from .nms.onnx_node import NMS
    """)
    assert imports_of(registry, ["visionrt", "runtime", "plugins"], known) == {
        "visionrt.runtime.errors", "visionrt.runtime.plugins.nms.onnx_node"}
    node = "from ..registry import PluginOp\nimport visionrt.runtime.errors.sub"
    assert imports_of(node, ["visionrt", "runtime", "plugins", "nms"], known) == {
        "visionrt.runtime.plugins.registry", "visionrt.runtime.errors"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_runtime_imports_no_torch():
    """The base install (the runtime, plus the torch-free modules above it) loads neither torch nor TensorRT."""
    modules = ["visionrt.runtime", "visionrt.runtime.cli", "visionrt.runtime.predictor", "visionrt.runtime.doctor",
               "visionrt.runtime.backends", "visionrt.runtime.backends.onnxruntime",
               "visionrt.runtime.backends.tensorrt", "visionrt.runtime.backends.torch",
               "visionrt.runtime.tensorrt_env", "visionrt.runtime.plugins.registry",
               "visionrt.runtime.plugins.onnxruntime_ops", "visionrt.runtime.plugins.tensorrt_registration",
               "visionrt.export.build", "visionrt.benchmarks.run", "visionrt.benchmarks.harness",
               "visionrt.benchmarks.report", "visionrt.benchmarks.gpu_plugins",
               "visionrt.train.cli", "visionrt.export.cli", "visionrt.benchmarks.cli"]
    if importlib.util.find_spec("visionrt.runtime.server") is not None:
        modules.append("visionrt.runtime.server")
    code = textwrap.dedent(f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        from visionrt.runtime.cli import build_parser
        from visionrt.runtime.plugins import plugins, tensorrt_registration
        from visionrt.benchmarks import report
        build_parser(); plugins(); tensorrt_registration.op_modules(); report.describe_machine()
        bad = [m for m in ("torch", "tensorrt", "tensorrt_rtx_bindings") if m in sys.modules]
        assert not bad, f"imported {{bad}}"
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


#: Makes ``import torch`` fail as on a runtime-only install.
HIDE_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoTorch())
"""


def run_without_torch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "sitecustomize.py").write_text(HIDE_TORCH)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "visionrt.runtime.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("args", [("data", "--out", "x"), ("train", "--data", "d", "--out", "o"),
                                  ("export", "m"), ("pipeline", "classify", "--out", "o"), ("data",)])
def test_a_stage_without_its_extra_says_what_to_install(tmp_path, args):
    result = run_without_torch(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr == (f"visionrt {args[0]}: error: this command needs PyTorch, which is not installed "
                             "(pip install 'visionrt[train]')\n")
    assert result.stdout == ""


def test_help_without_torch_lists_every_command(tmp_path):
    helped = run_without_torch(tmp_path, "--help")
    assert helped.returncode == 0, helped.stderr
    for name in ("predict", "doctor", "data", "train", "export", "build", "bench", "pipeline"):
        assert f"    {name} " in helped.stdout
