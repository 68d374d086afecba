"""Datasets of whole real photos (shipped in scikit-image and scikit-learn), as PNG files.

Super-resolution and style transfer learn from photos themselves rather than from
generated scenes. Photos are split by name: a held-out photo is a whole image that no
training crop ever came from. Nothing is downloaded.

    write_photo_dataset(out_dir, config, write)   # atomic; a no-op when `config` is unchanged
    load_photo("astronaut", max_side=512)          # RGB uint8 [H, W, 3]
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from ...runtime.images import load_image
from ...runtime.preprocess import centre_square
from .build import build_atomically
from .errors import DatasetError
from .sources import _load_background

#: Bump when the same configuration would produce different files.
PHOTO_GENERATOR_VERSION = 1

#: Photos per split, by name (see :func:`load_photo`). Gray ones (camera, coins, textures,
#: microscopy, text scans) become RGB. ``stereo_motorcycle`` contributes its left view only:
#: the right one is nearly the same picture.
PHOTO_SPLITS: Mapping[str, tuple[str, ...]] = {
    "train": ("rocket", "motorcycle_left", "hubble_deep_field", "retina", "ihc", "china", "brick", "grass",
              "gravel", "moon", "clock", "cell", "page", "text"),
    "val": ("chelsea", "coins"),
    "test": ("astronaut", "coffee", "flower", "camera"),
}


_photo = functools.lru_cache(maxsize=None)(_load_background)


def load_photo(name: str, max_side: int | None = None, multiple: int = 1) -> np.ndarray:
    """Photo ``name`` as RGB uint8 ``[H, W, 3]``: shrunk (Lanczos) so its longer side is at most
    ``max_side``, then cropped (bottom/right) so that H and W are multiples of ``multiple``."""
    try:
        array = _photo(name)
    except AttributeError as err:
        raise DatasetError(f"unknown photo {name!r}", fix=f"use one of {', '.join(all_photos())}") from err
    if max_side is not None:
        array = shrink(array, max_side)
    h, w = array.shape[0] // multiple * multiple, array.shape[1] // multiple * multiple
    return np.ascontiguousarray(array[:h, :w])


def shrink(image: np.ndarray, side: int) -> np.ndarray:
    """An RGB uint8 image with its longer side shrunk (Lanczos) to at most ``side`` px."""
    picture = Image.fromarray(image)
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(picture)


def all_photos() -> tuple[str, ...]:
    return tuple(name for names in PHOTO_SPLITS.values() for name in names)


def save_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")


def read_png(path: str | os.PathLike) -> np.ndarray:
    """An RGB uint8 ``[H, W, 3]`` PNG of a photo dataset."""
    return load_image(path)


def read_split(root: str | os.PathLike, folder: str, split: str) -> dict[str, np.ndarray]:
    """``{photo name: image}`` of ``root/folder/split/*.png``, in the order of ``dataset.json``."""
    names = dataset_info(root)["splits"][split]
    return {name: read_png(Path(root) / folder / split / f"{name}.png") for name in names}


def dataset_info(root: str | os.PathLike, name: str | None = None,
                 fix: str = "build it with `visionrt data --task superres|style --out DIR`") -> dict[str, Any]:
    """The ``dataset.json`` of the photo dataset ``root``; with ``name``, it must be a ``name`` one
    (else a :class:`DatasetError` with ``fix``)."""
    path = Path(root) / "dataset.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path} is missing or unreadable: {root} is not a photo dataset", fix=fix) from err
    if name is not None and info.get("name") != name:
        raise DatasetError(f"{root} is a '{info.get('name')}' dataset, not a {name} one", fix=fix)
    return info


def write_photo_dataset(out_dir: str | os.PathLike, config: Mapping[str, Any],
                        write: Callable[[Path], Mapping[str, Any]]) -> Path:
    """Build the dataset ``config`` describes in ``out_dir`` with ``write(tmp_dir) -> info``.

    ``config`` (JSON-able; must include ``splits``: photo names per split) identifies the
    files; ``info`` is merged into ``dataset.json``. The directory appears whole or not at
    all, and is kept as it is when it already holds the same configuration.
    """
    text = json.dumps({"config": config, "generator_version": PHOTO_GENERATOR_VERSION}, sort_keys=True)
    config_hash = hashlib.sha256(text.encode()).hexdigest()

    def write_with_info(tmp: Path) -> None:
        info = dict(write(tmp))
        body = {"name": config["name"], "generator_version": PHOTO_GENERATOR_VERSION, "config_hash": config_hash,
                "config": dict(config), "splits": {k: list(v) for k, v in config["splits"].items()}, **info}
        (tmp / "dataset.json").write_text(json.dumps(body, indent=2))

    return build_atomically(Path(out_dir), config_hash, write_with_info)


def write_bench_inputs(root: Path, image: np.ndarray, sides: Sequence[int]) -> None:
    """``root/bench/<side>x<side>.png``: the largest centred square of ``image`` resized (bicubic)
    to each side (:func:`~visionrt.runtime.preprocess.centre_square`), for benchmarks per input size."""
    for side in sides:
        save_png(root / "bench" / f"{side}x{side}.png", centre_square(image, side))


def photo_splits(exclude: Sequence[str] = ()) -> dict[str, list[str]]:
    """:data:`PHOTO_SPLITS` without the photos named in ``exclude``."""
    return {split: [n for n in names if n not in exclude] for split, names in PHOTO_SPLITS.items()}
