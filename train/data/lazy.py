"""Images of a split read lazily from disk and fitted to the model input by the runtime's resize policy.

:class:`LazyImages` indexes like the uint8 tensor ``[N, H, W, C]`` the tasks used to hold
(``images[indices]``, ``images[a:b]``, ``len``, ``.shape``): each image is decoded when first
asked for (:func:`visionrt.runtime.images.load_image`), fitted to the input with
:func:`visionrt.runtime.preprocess.fit_image` (the one resize of training, runtime and
server) and, while the fitted split stays under ``cache_bytes``, kept for later epochs.
A batch's images are decoded by ``workers`` threads (Pillow releases the GIL while decoding).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ...runtime.images import load_image
from ...runtime.manifest import InputSpec
from ...runtime.preprocess import fit_image

#: Fitted splits up to this size stay in memory after their first epoch.
CACHE_BYTES = 4 * 1024 ** 3


class LazyImages:
    """``paths``' images fitted to ``spec``'s input size and resize policy; ``read(path) -> array``
    decodes one (default: RGB); ``method``/``pad_value`` override the interpolation and the
    letterbox border (index masks: ``"nearest"`` and the ignore value)."""

    def __init__(self, paths: list[Path], spec: InputSpec, read: Callable[[Path], np.ndarray] = load_image,
                 method: str | None = None, pad_value: int | None = None, workers: int = 0,
                 cache_bytes: int = CACHE_BYTES):
        self.paths, self.spec, self.read = list(paths), spec, read
        self.method, self.pad_value = method, pad_value
        self.channels = spec.channels if read is load_image else None
        item = spec.height * spec.width * (self.channels or 1)
        self.cache: dict[int, np.ndarray] | None = {} if len(self.paths) * item <= cache_bytes else None
        self.pool = ThreadPoolExecutor(workers) if workers > 0 else None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), self.spec.height, self.spec.width) + ((self.channels,) if self.channels else ())

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` fitted to the input."""
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        fitted = fit_image(self.read(self.paths[i]), self.spec, self.pad_value, self.method)
        if self.cache is not None:
            self.cache[i] = fitted
        return fitted

    def __getitem__(self, index) -> torch.Tensor:
        """uint8 ``[B, H, W(, C)]`` for a slice, an index tensor or a list; ``[H, W(, C)]`` for an int."""
        if isinstance(index, (int, np.integer)):
            return torch.from_numpy(self.load(int(index)))
        if isinstance(index, slice):
            indices = range(*index.indices(len(self)))
        elif isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            indices = index.nonzero().flatten().tolist()
        else:
            indices = torch.as_tensor(index).flatten().tolist()
        fitted = list(self.pool.map(self.load, indices)) if self.pool else [self.load(i) for i in indices]
        if not fitted:
            return torch.zeros(self.shape[1:], dtype=torch.uint8)[None][:0]
        return torch.from_numpy(np.stack(fitted))

    def sample(self, limit: int = 5000) -> torch.Tensor:
        """All images while the split is cached (as the stats of the whole split), else ``limit``
        evenly spaced ones: what the input normalisation is computed on."""
        if self.cache is not None or len(self) <= limit:
            return self[:]
        return self[np.linspace(0, len(self) - 1, limit).round().astype(int).tolist()]
