"""OpenVINO runner: the same ONNX files (fp32, fp16, the int8 Q/DQ ones) compiled for the CPU plugin.

``precision="bf16"`` asks the CPU plugin to compute in bfloat16
(``INFERENCE_PRECISION_HINT``), which pays only on CPUs with native bf16 (AVX512-BF16, AMX):
:func:`cpu_supports_bf16` says whether this one has it. Needs the ``openvino`` extra.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import ArtifactError, BackendUnavailable
from ..file_kind import require_file
from .base import Runner, TensorSpec

_OV_TYPES = {"f32": "float32", "f16": "float16", "f64": "float64", "i64": "int64", "i32": "int32",
             "u8": "uint8", "i8": "int8", "boolean": "bool"}


def _openvino():
    try:
        import openvino
    except ImportError as err:
        raise BackendUnavailable("OpenVINO is not installed", fix="pip install 'visionrt[openvino]'") from err
    return openvino


def cpu_supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively here."""
    return "BF16" in _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoRunner(Runner):
    """Runs an ONNX file in OpenVINO on the CPU; ``threads`` sets ``INFERENCE_NUM_THREADS`` (0: its
    default); ``compute`` sets the precision hint for the float ops: ``fp32``, ``bf16``, or
    ``None`` for OpenVINO's own choice (bf16 on CPUs with AMX)."""

    def __init__(self, onnx_path: str | os.PathLike, threads: int = 0, compute: str | None = None):
        super().__init__()
        self.path = Path(onnx_path)
        self.threads = threads
        if compute not in (None, "bf16", "fp32"):
            raise BackendUnavailable(f"OpenVINO cannot compute in '{compute}' here", fix="use bf16 or fp32")
        self.compute = compute
        self.name = "openvino-cpu" + (f"-{compute}" if compute == "bf16" else "")
        self.compiled = None
        self.request = None
        #: The ONNX's own input and output names, in port order (compiling can add aliases, e.g.
        #: the Cast an fp16 file starts with, and ``get_any_name`` may return one of those).
        self._names: dict[str, list[str]] = {}

    def _activate(self) -> None:
        ov = _openvino()
        require_file(self.path, "ONNX file", ArtifactError)
        core = ov.Core()
        config = {}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        if self.compute == "bf16":
            if not cpu_supports_bf16():
                raise BackendUnavailable("this CPU has no native bf16 (OpenVINO would emulate it slowly)",
                                         fix="use precision fp32 or int8 on this machine")
            config["INFERENCE_PRECISION_HINT"] = "bf16"
        elif self.compute == "fp32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            model = core.read_model(str(self.path))
            self._names = {"inputs": [port.get_any_name() for port in model.inputs],
                           "outputs": [port.get_any_name() for port in model.outputs]}
            self.compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as err:
            lines = [line.strip(" -") for line in str(err).splitlines() if line.strip()]
            cause = next((line for line in lines if line.startswith("No conversion rule")), lines[-1] if lines else "")
            raise ArtifactError(f"OpenVINO cannot compile {self.path.name}: {cause}",
                                fix="run it on onnxruntime, which takes every op visionrt exports") from err
        self.request = self.compiled.create_infer_request()

    def _deactivate(self) -> None:
        self.request = self.compiled = None

    def _ports(self, kind: str):
        if self.compiled is None:
            self.activate()
        return getattr(self.compiled, kind)

    def _specs(self, kind: str) -> list[TensorSpec]:
        specs = []
        for name, port in zip(self._names[kind], self._ports(kind)):
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            type_name = port.get_element_type().get_type_name()
            specs.append(TensorSpec(name, shape, _OV_TYPES.get(type_name, type_name)))
        return specs

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._specs("inputs")

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._specs("outputs")

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer([feed[name] for name in self._names["inputs"]])
        return {name: np.array(results[port], copy=True)
                for name, port in zip(self._names["outputs"], self.compiled.outputs)}
