"""Read a dataset directory written by ``build_dataset``."""
from __future__ import annotations

import os

import numpy as np

from ...runtime.datasets import CocoSplit, read_coco_split
from ...runtime.images import load_image
from .coco import clip_boxes

__all__ = ["CocoSplit", "load_coco", "load_single_objects", "load_classification"]


def load_coco(data_dir: str | os.PathLike, split: str) -> CocoSplit:
    """Every image and annotation of ``split`` (see :func:`~visionrt.runtime.datasets.read_coco_split`),
    boxes overflowing their image by under a pixel clipped to it (:func:`.coco.clip_boxes`)."""
    data = read_coco_split(data_dir, split)
    clip_boxes(data.coco)
    return data


def load_single_objects(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, list[dict], list[dict]]:
    """Images uint8 [N, H, W, 3], the one COCO annotation of each image (in image order) and
    the categories sorted by id.

    Every image must hold exactly one object (a dataset built with ``objects_per_image=(1, 1)``,
    or of one figure per image).
    """
    data = load_coco(data_dir, split)
    annotations = data.single_annotations()
    images = np.stack([load_image(path) for path in data.image_paths])
    return images, annotations, data.categories


def load_classification(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images uint8 [N, H, W, 3], labels int64 [N] (index into classes), class names.

    Every image must hold exactly one object (see :func:`load_single_objects`); its
    category is the label.
    """
    images, annotations, categories = load_single_objects(data_dir, split)
    label_of = {c["id"]: i for i, c in enumerate(categories)}
    labels = np.array([label_of[a["category_id"]] for a in annotations], dtype=np.int64)
    return images, labels, [c["name"] for c in categories]
