"""Reading a dataset directory's splits (numpy only): what the tasks' held-out data and training read.

Layout (what ``visionrt data`` writes): ``annotations/<split>.json`` (COCO), the RGB images in
``images/<split>/`` and, for segmentation, the semantic maps in ``semantic/<split>/`` under the
same file names; photo datasets list their splits in ``dataset.json``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from .errors import BackendUnavailable, VisionRTError


class DatasetError(VisionRTError):
    """A dataset directory or generator setting that is missing, invalid or inconsistent."""


@dataclasses.dataclass(frozen=True)
class CocoSplit:
    """One split: the parsed COCO json and, aligned with ``coco["images"]``, the paths of the RGB
    images and of the semantic maps (palette PNGs whose pixel values are class indices, 0 = background)."""

    annotation_file: Path
    coco: dict
    image_paths: list[Path]
    semantic_paths: list[Path]

    @property
    def images(self) -> list[dict]:
        return self.coco["images"]

    @property
    def categories(self) -> list[dict]:
        """The categories sorted by id: class ``i`` is ``categories[i]``."""
        return sorted(self.coco["categories"], key=lambda c: c["id"])

    @property
    def class_index(self) -> dict[int, int]:
        """COCO category id -> class index."""
        return {c["id"]: i for i, c in enumerate(self.categories)}

    def annotations_per_image(self) -> list[list[dict]]:
        """Each image's annotations, in image order."""
        found: dict[int, list[dict]] = {image["id"]: [] for image in self.images}
        for annotation in self.coco["annotations"]:
            found[annotation["image_id"]].append(annotation)
        return [found[image["id"]] for image in self.images]

    def single_annotations(self) -> list[dict]:
        """The one annotation of each image, in image order; :class:`DatasetError` when an image
        holds none or several (a split not built with one object per image)."""
        per_image = self.annotations_per_image()
        for image, annotations in zip(self.images, per_image):
            if len(annotations) != 1:
                raise DatasetError(f"{self.annotation_file} is not a single-object split: image {image['id']} has "
                                   f"{len(annotations)} objects", fix="build it with objects_per_image=(1, 1)")
        return [annotations[0] for annotations in per_image]


def read_coco_split(data_dir: str | os.PathLike, split: str, count: int | None = None) -> CocoSplit:
    """The COCO split ``split`` of ``data_dir``, its first ``count`` images (all for ``None``)
    with their annotations; :class:`DatasetError` when the split is missing."""
    data_dir = Path(data_dir)
    annotation_file = data_dir / "annotations" / f"{split}.json"
    if not annotation_file.is_file():
        raise DatasetError(f"no split {split!r} in {data_dir} ({annotation_file} is missing)",
                           fix="pass a dataset directory written by `visionrt data`, or build the split")
    coco = json.loads(annotation_file.read_text())
    if count is not None:
        images = coco["images"][:count]
        kept = {image["id"] for image in images}
        coco = {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in kept]}
    names = [image["file_name"] for image in coco["images"]]
    return CocoSplit(annotation_file, coco, [data_dir / "images" / split / name for name in names],
                     [data_dir / "semantic" / split / name for name in names])


def photo_split_names(data_dir: str | os.PathLike, split: str, count: int | None = None) -> list[str]:
    """The first ``count`` (or all) image names of ``split`` in a photo dataset's ``dataset.json``."""
    return json.loads((Path(data_dir) / "dataset.json").read_text())["splits"][split][:count]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """bool ``[H, W]`` -> COCO uncompressed RLE ``{"size": [H, W], "counts": [...]}`` (column-major runs,
    starting with background; JSON-ready, numpy only), which pycocotools' ``frPyObjects`` reads."""
    flat = np.asarray(mask, bool).ravel(order="F")
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    counts = ([0] if flat.size and flat[0] else []) + runs.tolist()
    return {"size": list(mask.shape), "counts": counts}


def compressed_rle(mask: np.ndarray) -> dict:
    """bool ``[H, W]`` -> COCO compressed RLE ``{"size": [H, W], "counts": str}`` (JSON-ready), by pycocotools."""
    try:
        from pycocotools import mask as coco_mask
    except ImportError as err:
        raise BackendUnavailable("COCO masks need pycocotools", fix="pip install pycocotools") from err
    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}
