"""onnxruntime runner: CPU, CUDA or TensorRT execution providers over an ONNX file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ArtifactError, BackendUnavailable
from ..file_kind import require_file
from .base import Runner, TensorSpec

#: Short provider names accepted by ``providers=`` and the onnxruntime provider they mean.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8",
    "tensor(int8)": "int8", "tensor(bool)": "bool",
}


def available_providers() -> list[str]:
    import onnxruntime as ort

    wanted = set(ort.get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in wanted]


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file in onnxruntime.

    ``provider`` is ``cpu``, ``cuda`` or ``tensorrt``; ``threads`` sets intra-op threads
    (0 = onnxruntime's default). ``session_setup`` may adjust the ``SessionOptions`` before
    the session is made (e.g. to register custom-op libraries).
    """

    def __init__(self, onnx_path: str | os.PathLike, provider: str = "cpu", threads: int = 0,
                 session_setup=None):
        super().__init__()
        self.path = Path(onnx_path)
        if provider not in PROVIDERS:
            raise BackendUnavailable(f"unknown onnxruntime provider '{provider}'",
                                     fix=f"use one of {', '.join(PROVIDERS)}")
        self.provider = provider
        self.threads = threads
        self.session_setup = session_setup
        self.name = f"onnxruntime-{provider}"
        self.session = None
        self._tensors: tuple[list[TensorSpec], list[TensorSpec]] = ([], [])  # the session's inputs, outputs

    def _activate(self) -> None:
        import onnxruntime as ort

        require_file(self.path, "ONNX file", ArtifactError)
        if self.provider not in available_providers():
            raise BackendUnavailable(
                f"onnxruntime here has no {PROVIDERS[self.provider]} (it has {ort.get_available_providers()})",
                fix="install onnxruntime-gpu and run on a machine with an NVIDIA GPU" if self.provider != "cpu" else None)
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        if self.session_setup is not None:
            self.session_setup(options)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=[PROVIDERS[self.provider]])
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ArtifactError(f"onnxruntime cannot load {self.path}: {_last_line(err)}",
                                fix="the file is corrupt or truncated; re-run `visionrt export`") from err
        # read once: the server asks for them on every batch
        self._tensors = (self._specs(self.session.get_inputs()), self._specs(self.session.get_outputs()))

    def _deactivate(self) -> None:
        self.session = None

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._loaded_tensors()[0]

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._loaded_tensors()[1]

    def _loaded_tensors(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if self.session is None:
            self.activate()
        return self._tensors

    @staticmethod
    def _specs(args: Sequence) -> list[TensorSpec]:
        return [TensorSpec(a.name, tuple(a.shape), _ORT_TYPES.get(a.type, a.type)) for a in args]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self._tensors[1]]
        values = self.session.run(names, dict(feed))
        return dict(zip(names, values))


def _last_line(err: Exception) -> str:
    """The last line of ``err``'s message (onnxruntime ends a load failure with its reason), or its type's name."""
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
