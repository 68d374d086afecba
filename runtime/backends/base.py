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
        """Run once: ``feed`` maps every input name to an array; returns every output by name.

        A model file whose inputs fix the batch (exporters often write 1) takes a batch of any
        size: it runs in chunks of its batch, the last one padded, and the outputs are joined
        along axis 0."""
        if not self.is_active:
            self.activate()
        fixed = fixed_batch(self.inputs)
        self.check_feed(feed, any_batch=fixed is not None)
        start = time.perf_counter()
        result = self._infer(feed) if fixed is None else self._infer_in_chunks(feed, fixed)
        self.last_infer_ms = (time.perf_counter() - start) * 1e3
        return result

    def _infer_in_chunks(self, feed: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
        """:meth:`_infer` over chunks of ``size`` rows of a feed of any batch."""
        rows = {len(array) for array in feed.values()}
        if len(rows) != 1 or 0 in rows:
            raise InputError(f"{self.name}: inputs with batch sizes {sorted(rows)}; they need one, of at least 1")
        (count,) = rows
        if count == size:
            return self._infer(feed)
        parts = []
        for first in range(0, count, size):
            chunk = {name: _padded(array[first:first + size], size) for name, array in feed.items()}
            parts.append({name: out[:min(size, count - first)] for name, out in self._infer(chunk).items()})
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def check_feed(self, feed: Mapping[str, np.ndarray], any_batch: bool = False) -> None:
        """Raise :class:`InputError` unless ``feed`` has exactly the inputs, dtypes and ranks expected
        (and the fixed sizes, axis 0 aside where ``any_batch``)."""
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
                if isinstance(want, int) and want >= 0 and got != want and not (axis == 0 and any_batch):
                    raise InputError(f"{self.name}: input '{name}' has shape {array.shape}, "
                                     f"expected {_shape_text(spec.shape)} (axis {axis} must be {want})")

    @abc.abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:
        """Release what :meth:`_activate` took; the default keeps nothing."""

    @abc.abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def fixed_batch(inputs: list[TensorSpec]) -> int | None:
    """The batch size that every input fixes on axis 0 of the model file, else ``None`` (any batch)."""
    sizes = {spec.shape[0] if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0 else None
             for spec in inputs}
    return sizes.pop() if len(sizes) == 1 and None not in sizes else None


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    """``rows`` with its last row repeated up to ``size`` rows."""
    return rows if len(rows) == size else np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)])


def _shape_text(shape: tuple[Any, ...]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) and d >= 0 else str(d or "?") for d in shape) + "]"
