"""One runner interface for every backend (onnxruntime, TensorRT, TensorRT-RTX, PyTorch).

A runner is activated (loads its model and allocates), takes ``infer(dict of arrays)``
and returns a dict of arrays, and describes its inputs and outputs. Parity checks and
benchmarks are written once against this interface.
"""
from __future__ import annotations

import abc
import dataclasses
import time
from typing import Any, Mapping

import numpy as np

from ..errors import InputError


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape (``None`` or a string for a dynamic axis) and numpy dtype name of a tensor."""

    name: str
    shape: tuple[Any, ...]
    dtype: str


class Runner(abc.ABC):
    """Base of every backend runner; use as a context manager or call activate/deactivate."""

    #: Short backend name as shown in reports, e.g. ``onnxruntime-cpu``.
    name: str = "runner"

    def __init__(self) -> None:
        self.is_active = False
        self.last_infer_ms: float | None = None

    # lifecycle -------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # metadata --------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def inputs(self) -> list[TensorSpec]:
        """Input tensors, in order."""

    @property
    @abc.abstractmethod
    def outputs(self) -> list[TensorSpec]:
        """Output tensors, in order."""

    # inference -------------------------------------------------------------------------
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once: ``feed`` maps every input name to an array; returns every output by name."""
        if not self.is_active:
            self.activate()
        self.check_feed(feed)
        start = time.perf_counter()
        result = self._infer(feed)
        self.last_infer_ms = (time.perf_counter() - start) * 1e3
        return result

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        """Raise :class:`InputError` unless ``feed`` has exactly the inputs, dtypes and ranks expected."""
        expected = {spec.name: spec for spec in self.inputs}
        missing = sorted(set(expected) - set(feed))
        extra = sorted(set(feed) - set(expected))
        if missing or extra:
            raise InputError(f"{self.name}: inputs {sorted(feed)} given, expected {sorted(expected)}")
        for name, spec in expected.items():
            array = feed[name]
            if not isinstance(array, np.ndarray):
                raise InputError(f"{self.name}: input '{name}' must be a numpy array, got {type(array).__name__}")
            if array.dtype != np.dtype(spec.dtype):
                raise InputError(f"{self.name}: input '{name}' has dtype {array.dtype}, expected {spec.dtype}")
            if array.ndim != len(spec.shape):
                raise InputError(f"{self.name}: input '{name}' has shape {array.shape}, "
                                 f"expected rank {len(spec.shape)} {_shape_text(spec.shape)}")
            for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
                if isinstance(want, int) and want >= 0 and got != want:
                    raise InputError(f"{self.name}: input '{name}' has shape {array.shape}, "
                                     f"expected {_shape_text(spec.shape)} (axis {axis} must be {want})")

    @abc.abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:
        """Release what :meth:`_activate` took; the default keeps nothing."""

    @abc.abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def _shape_text(shape: tuple[Any, ...]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) and d >= 0 else str(d or "?") for d in shape) + "]"
