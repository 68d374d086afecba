"""Images of a split read lazily from disk and fitted to the model input by the runtime's resize
policy, and read ahead of the training steps by a ``DataLoader``'s worker processes.

:class:`LazyImages` indexes like the uint8 tensor ``[N, H, W, C]`` the tasks used to hold
(``images[indices]``, ``images[a:b]``, ``len``, ``.shape``): each image is decoded when first
asked for (:func:`visionrt.runtime.images.load_image`), fitted to the input with
:func:`visionrt.runtime.preprocess.fit_image` (the one resize of training, runtime and
server) and, while the fitted split stays under ``cache_bytes``, kept for later epochs.

:func:`read_ahead` streams an epoch's batches through ``torch.utils.data.DataLoader`` with
``workers`` processes: each batch's images are decoded and fitted in a worker and handed to
the training process before its step asks for them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ...runtime.images import load_image
from ...runtime.manifest import InputSpec
from ...runtime.preprocess import fit_image

#: Fitted splits up to this size stay in memory after their first epoch.
CACHE_BYTES = 4 * 1024 ** 3
#: Batches each DataLoader worker reads ahead.
PREFETCH_BATCHES = 2


class LazyImages:
    """``paths``' images fitted to ``spec``'s input size and resize policy; ``read(path) -> array``
    decodes one (default: RGB); ``method``/``pad_value`` override the interpolation and the
    letterbox border (index masks: ``"nearest"`` and the ignore value)."""

    def __init__(self, paths: list[Path], spec: InputSpec, read: Callable[[Path], np.ndarray] = load_image,
                 method: str | None = None, pad_value: int | None = None, cache_bytes: int = CACHE_BYTES):
        self.paths, self.spec, self.read = list(paths), spec, read
        self.method, self.pad_value = method, pad_value
        self.channels = spec.channels if read is load_image else None
        item = spec.height * spec.width * (self.channels or 1)
        self.cache: dict[int, np.ndarray] | None = {} if len(self.paths) * item <= cache_bytes else None
        self.staged: dict[int, np.ndarray] = {}  # read ahead by a DataLoader worker, used once

    def __getstate__(self) -> dict:
        """What a DataLoader worker gets (spawned or forked): no cache, nothing staged."""
        return {**self.__dict__, "cache": None, "staged": {}}

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), self.spec.height, self.spec.width) + ((self.channels,) if self.channels else ())

    @property
    def fully_cached(self) -> bool:
        return self.cache is not None and len(self.cache) == len(self)

    def fitted(self, i: int) -> np.ndarray:
        """Image ``i`` decoded and fitted to the input (no cache)."""
        return fit_image(self.read(self.paths[i]), self.spec, self.pad_value, self.method)

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` fitted to the input: from the cache, else as staged, else decoded now."""
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        image = self.staged.pop(i) if i in self.staged else self.fitted(i)
        if self.cache is not None:
            self.cache[i] = image
        return image

    def stage(self, indices: Sequence[int], images: np.ndarray) -> None:
        """Hand over images read ahead (``images[k]`` is image ``indices[k]``) for the next :meth:`load`."""
        self.staged.update(zip(indices, images))

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
        fitted = [self.load(i) for i in indices]
        if not fitted:
            return torch.zeros(self.shape[1:], dtype=torch.uint8)[None][:0]
        return torch.from_numpy(np.stack(fitted))

    def sample(self, limit: int = 5000) -> torch.Tensor:
        """All images while the split is cached (as the stats of the whole split), else ``limit``
        evenly spaced ones: what the input normalisation is computed on."""
        if self.cache is not None or len(self) <= limit:
            return self[:]
        return self[np.linspace(0, len(self) - 1, limit).round().astype(int).tolist()]


class _Batches(Dataset):
    """Item ``k``: batch ``k``'s images of every source, fitted (what one worker reads)."""

    def __init__(self, sources: Sequence[LazyImages], batches: Sequence[list[int]]):
        self.sources, self.batches = list(sources), list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> list[np.ndarray]:
        return [np.stack([source.fitted(i) for i in self.batches[k]]) for source in self.sources]


def _as_is(item):
    return item


def read_ahead(sources: Sequence[LazyImages], batches: Sequence[torch.Tensor], workers: int) -> Iterator[torch.Tensor]:
    """Yield each of ``batches`` (index tensors, in order) once its images are staged in every
    source, read by a ``DataLoader`` with ``workers`` processes; with no workers, no sources or
    every image cached already, yield them at once (the sources then read on demand)."""
    if workers == 0 or not sources or all(source.fully_cached for source in sources):
        yield from batches
        return
    lists = [batch.tolist() for batch in batches]
    loader = DataLoader(_Batches(sources, lists), batch_size=None, num_workers=workers,
                        prefetch_factor=PREFETCH_BATCHES, collate_fn=_as_is)
    for batch, indices, images in zip(batches, lists, loader):
        for source, fitted in zip(sources, images):
            source.stage(indices, fitted)
        yield batch
