"""Read a dataset directory written by ``build_dataset``."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DatasetError


@dataclass(frozen=True)
class CocoSplit:
    """One split: the parsed COCO json and, aligned with ``coco["images"]``, the paths of
    the RGB images and of the semantic maps (palette PNGs whose pixel values are
    category ids, 0 = background)."""

    annotation_file: Path
    coco: dict
    image_paths: list[Path]
    semantic_paths: list[Path]


def load_coco(data_dir: str | os.PathLike, split: str) -> CocoSplit:
    data_dir = Path(data_dir)
    annotation_file = data_dir / "annotations" / f"{split}.json"
    if not annotation_file.is_file():
        raise DatasetError(
            f"no split {split!r} in {data_dir} ({annotation_file} is missing)",
            fix="build it with visionrt.train.data.build_dataset(out_dir, splits={...})",
        )
    coco = json.loads(annotation_file.read_text())
    names = [image["file_name"] for image in coco["images"]]
    return CocoSplit(
        annotation_file=annotation_file,
        coco=coco,
        image_paths=[data_dir / "images" / split / name for name in names],
        semantic_paths=[data_dir / "semantic" / split / name for name in names],
    )


def load_single_objects(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, list[dict], list[dict]]:
    """Images uint8 [N, H, W, 3], the one COCO annotation of each image (in image order) and
    the categories sorted by id.

    Every image must hold exactly one object (a dataset built with ``objects_per_image=(1, 1)``,
    or of one figure per image).
    """
    data = load_coco(data_dir, split)
    found: dict[int, list[dict]] = {image["id"]: [] for image in data.coco["images"]}
    for annotation in data.coco["annotations"]:
        found[annotation["image_id"]].append(annotation)
    crowded = [image_id for image_id, annotations in found.items() if len(annotations) != 1]
    if crowded:
        raise DatasetError(
            f"{data.annotation_file} is not a single-object split: image {crowded[0]} has "
            f"{len(found[crowded[0]])} objects",
            fix="build it with objects_per_image=(1, 1)",
        )
    images = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in data.image_paths])
    annotations = [found[image["id"]][0] for image in data.coco["images"]]
    return images, annotations, sorted(data.coco["categories"], key=lambda c: c["id"])


def load_classification(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images uint8 [N, H, W, 3], labels int64 [N] (index into classes), class names.

    Every image must hold exactly one object (see :func:`load_single_objects`); its
    category is the label.
    """
    images, annotations, categories = load_single_objects(data_dir, split)
    label_of = {c["id"]: i for i, c in enumerate(categories)}
    labels = np.array([label_of[a["category_id"]] for a in annotations], dtype=np.int64)
    return images, labels, [c["name"] for c in categories]
