"""``visionrt doctor``: which backends, precisions and plugins are usable on this machine."""
from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import platform
from typing import Any, Callable

from . import tensorrt_env
from .precision import PRECISIONS


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def guarded(compute: Callable[[], Any], fix: str) -> Any:
    """``compute()``, or ``{"broken": "<type>: <message>", "fix": fix}`` when it raises anything: an
    optional package that fails on import, a shared library with a missing symbol, a bug in one row.
    A broken row is a finding; the rest of the report still prints."""
    try:
        return compute()
    except Exception as err:  # noqa: BLE001 - whatever a broken install raises is that row's finding
        message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        return {"broken": f"{type(err).__name__}: {message[:300]}", "fix": fix}


def _onnxruntime_row() -> dict[str, Any]:
    import onnxruntime as ort

    from .backends.onnxruntime import available_providers

    return {"version": ort.__version__, "providers": available_providers(),
            "precisions": ["fp32", "fp16 (fp16 ONNX)", "int8 (QDQ ONNX)"]}


def _torch_row() -> dict[str, Any]:
    installed = importlib.util.find_spec("torch") is not None
    return {"version": _version("torch"), "installed": installed,
            **({} if installed else {"fix": "pip install 'visionrt[train]'"})}


def _plugins() -> dict[str, Any]:
    from .plugins.status import plugin_status

    return plugin_status()


def diagnose() -> dict[str, Any]:
    """Facts only; never raises: something missing is a finding with its fix, and a row whose
    package is broken says so (:func:`guarded`) while the others are still reported."""
    reinstall = "reinstall the package named in the error, or uninstall it"
    trt = guarded(tensorrt_env.report, reinstall)
    if "broken" in trt:
        gpu: Any = f"unknown ({trt['broken']})"
        flavours = {name: {"installed": True, **trt} for name in tensorrt_env.FLAVOURS}
    else:
        gpu = trt["gpus"] or f"none ({trt['no_gpu_reason']})"
        flavours = {name: {**entry, "precisions": list(PRECISIONS) if entry["installed"] else []}
                    for name, entry in trt["flavours"].items()}
    plugins = guarded(_plugins, "reinstall visionrt[cuda] (NVRTC) or the TensorRT package named in the error")
    verdicts = plugins.get("tensorrt", {flavour.title: f"unknown ({plugins.get('broken')})"
                                        for flavour in tensorrt_env.FLAVOURS.values()})
    return {
        "visionrt": _version("visionrt"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "gpu": gpu,
        "backends": {"onnxruntime": guarded(_onnxruntime_row, "pip install --force-reinstall onnxruntime"),
                     "torch": guarded(_torch_row, reinstall), **flavours},
        "plugins": plugins,
        "tasks": guarded(lambda: task_support(verdicts), "re-install visionrt"),
    }


def task_support(plugin_verdicts: dict[str, str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task and architecture: the plugin ops its engine needs and, where it needs any,
    whether each TensorRT flavour can take them (``plugin_verdicts`` from :func:`plugin_status`)."""
    from .tasks import TASKS, architectures

    return {task: {name: {"plugins": list(a.plugin_ops), "default": a.default,
                          "engine": "any TensorRT" if not a.plugin_ops else plugin_verdicts}
                   for name, a in architectures(task).items()}
            for task in TASKS}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"visionrt {report['visionrt']} on Python {report['python']} ({report['platform']})",
             f"GPU: {report['gpu']}", "", "backends:"]
    for name, entry in report["backends"].items():
        if "broken" in entry:
            lines.append(f"  {name}: broken ({entry['broken']}; {entry['fix']})")
        elif name == "onnxruntime":
            lines.append(f"  onnxruntime {entry['version']}: providers {', '.join(entry['providers'])}")
        elif name == "torch":
            lines.append(f"  torch: {entry['version'] if entry['installed'] else 'not installed (' + entry['fix'] + ')'}")
        elif entry["installed"]:
            lines.append(f"  {name} {entry['version']}: build {'yes' if entry['can_build'] else 'no'}, "
                         f"run {'yes' if entry['can_run'] else 'no (no GPU)'}"
                         + (f", targets {', '.join(entry['compute_capabilities'])}"
                            if entry.get("compute_capabilities") else ""))
        else:
            lines.append(f"  {name}: not installed ({entry['fix']})")
    plugins = report["plugins"]
    if "broken" in plugins:
        lines += ["", f"plugins: broken ({plugins['broken']}; {plugins['fix']})"]
    else:
        lines += ["", f"plugins (NVRTC {plugins['nvrtc']}, compiled for {plugins['arch']}):"]
        for row in plugins["plugins"]:
            state = f"compiles ({row['seconds']:.2f}s)" if row["compiles"] else f"does not compile: {row['error']}"
            lines.append(f"  {row['plugin']:<24} {row['kernel']:<24} {state}")
        lines += [f"  TensorRT can take them: {flavour}: {verdict}" for flavour, verdict in plugins["tensorrt"].items()]
    lines += ["", "tasks (architecture: what its engine needs):"]
    if "broken" in report["tasks"]:
        lines.append(f"  broken ({report['tasks']['broken']}; {report['tasks']['fix']})")
        return "\n".join(lines)
    for task, models in report["tasks"].items():
        needs = [f"{arch}" + (f" (plugins {', '.join(entry['plugins'])})" if entry["plugins"] else "")
                 for arch, entry in models.items()]
        lines.append(f"  {task:<9} {', '.join(needs)}")
    return "\n".join(lines)
