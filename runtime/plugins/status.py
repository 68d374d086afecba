"""What ``visionrt doctor`` reports about the plugins: whether each kernel compiles here
(NVRTC present, how long it took) and whether each installed TensorRT can take the plugins.

Never raises for a missing piece: a missing NVRTC or TensorRT is a finding, with its fix.
"""
from __future__ import annotations

from typing import Any

from .. import tensorrt_env
from ..errors import PluginError
from . import nvrtc, tensorrt_registration


def plugin_status(arch: int | None = None) -> dict[str, Any]:
    """``{"nvrtc": ..., "arch": ..., "tensorrt": {flavour: verdict}, "plugins": [row per plugin]}``.

    Kernels compile for ``arch`` (default: the first GPU here, else the newest CI target);
    a verdict is ``"yes"``, ``"not installed"``, ``"broken: <cause>"`` or the reason the flavour
    cannot take them.
    """
    arch = arch or _local_arch() or nvrtc.ARCHS[-1]
    names = tensorrt_registration.plugin_names()
    try:
        version: str | None = ".".join(map(str, nvrtc.nvrtc_version()))
        nvrtc_error = None
    except PluginError as err:
        version, nvrtc_error = None, str(err)
    plugins = []
    for module in tensorrt_registration.op_modules():
        compiled = {"compiles": False, "error": nvrtc_error} if nvrtc_error else _compile(module, arch)
        plugins += [{"plugin": name, "kernel": f"{module.KERNEL.parent.name}/{module.KERNEL.name}", **compiled} for name in module.PLUGINS]
    return {"nvrtc": version or f"missing: {nvrtc_error}", "arch": f"sm_{arch}",
            "tensorrt": {spec.title: _verdict(spec.name, names) for spec in tensorrt_env.FLAVOURS.values()},
            "plugins": plugins}


def _compile(module, arch: int) -> dict[str, Any]:
    try:
        compiled = nvrtc.compile_file(module.KERNEL, arch, module.EXAMPLE_DEFINES)
    except PluginError as err:
        return {"compiles": False, "error": str(err)}
    return {"compiles": True, "seconds": round(compiled.seconds, 3)}


def _verdict(flavour: str, names: list[str]) -> str:
    try:
        trt = tensorrt_env.installed(flavour)
    except tensorrt_env.BrokenInstall as err:
        return f"broken: {err}"
    if trt is None:
        return "not installed"
    try:
        tensorrt_registration.check_tensorrt_takes_plugins(trt, names)
    except PluginError as err:
        return f"no: {err}"
    return f"yes ({tensorrt_env.version(trt)}, ahead-of-time plugins)"


def _local_arch() -> int | None:
    gpus, _ = tensorrt_env.find_gpus()
    if not gpus:
        return None
    major, minor = gpus[0].compute_capability.split(".")
    return int(major) * 10 + int(minor)
