"""``visionrt doctor``: which backends, precisions and plugins are usable on this machine."""
from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import platform
from typing import Any

from . import tensorrt_env


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def diagnose() -> dict[str, Any]:
    """Facts only; never raises for something missing (that is a finding, with its fix)."""
    import onnxruntime as ort

    from .backends.onnxruntime import available_providers
    from .plugins.status import plugin_status

    trt = tensorrt_env.report()
    plugins = plugin_status()
    torch_installed = importlib.util.find_spec("torch") is not None
    return {
        "visionrt": _version("visionrt"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "gpu": trt["gpus"] or f"none ({trt['no_gpu_reason']})",
        "backends": {
            "onnxruntime": {"version": ort.__version__, "providers": available_providers(),
                            "precisions": ["fp32", "fp16 (fp16 ONNX)", "int8 (QDQ ONNX)"]},
            "torch": {"version": _version("torch"), "installed": torch_installed,
                      **({} if torch_installed else {"fix": "pip install 'visionrt[train]'"})},
            **{name: {**entry, "precisions": ["fp32", "fp16", "int8"] if entry["installed"] else []}
               for name, entry in trt["flavours"].items()},
        },
        "plugins": plugins,
        "tasks": task_support(plugins["tensorrt"]),
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
        if name == "onnxruntime":
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
    lines += ["", f"plugins (NVRTC {plugins['nvrtc']}, compiled for {plugins['arch']}):"]
    for row in plugins["plugins"]:
        state = f"compiles ({row['seconds']:.2f}s)" if row["compiles"] else f"does not compile: {row['error']}"
        lines.append(f"  {row['plugin']:<24} {row['kernel']:<24} {state}")
    lines += [f"  TensorRT can take them: {flavour}: {verdict}" for flavour, verdict in plugins["tensorrt"].items()]
    lines += ["", "tasks (architecture: what its engine needs):"]
    for task, models in report["tasks"].items():
        needs = [f"{arch}" + (f" (plugins {', '.join(entry['plugins'])})" if entry["plugins"] else "")
                 for arch, entry in models.items()]
        lines.append(f"  {task:<9} {', '.join(needs)}")
    return "\n".join(lines)
