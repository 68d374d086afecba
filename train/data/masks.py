"""Segmentation splits: images with index masks, from a mask folder (VOC style, see
:mod:`visionrt.runtime.folders`) or the built-in data's semantic maps, read lazily and fitted
to the model input (masks by nearest neighbour, a letterbox border = :data:`IGNORE`)."""
from __future__ import annotations

import os

from ...runtime.datasets import read_coco_split
from ...runtime.folders import IGNORE, is_mask_folder, read_class_names, read_mask_folder
from ...runtime.manifest import InputSpec
from ...runtime.tasks.segment import CLASSES, read_map
from .lazy import LazyImages

__all__ = ["IGNORE", "segmentation_classes", "segmentation_split"]


def segmentation_classes(data_dir: str | os.PathLike) -> list[str]:
    """A mask folder's class names (``classes.txt``/``classes.json``), or the built-in classes."""
    return read_class_names(data_dir) if is_mask_folder(data_dir) else list(CLASSES)


def segmentation_split(data_dir: str | os.PathLike, split: str, spec: InputSpec) -> tuple[LazyImages, LazyImages]:
    """Images and their index masks (uint8, values = class indices or :data:`IGNORE`), fitted to ``spec``."""
    if is_mask_folder(data_dir):
        images, masks = read_mask_folder(data_dir, split)
    else:
        coco = read_coco_split(data_dir, split)
        images, masks = coco.image_paths, coco.semantic_paths
    return (LazyImages(images, spec),
            LazyImages(masks, spec, read=read_map, method="nearest", pad_value=IGNORE))
