"""Classification splits: an ImageFolder (:mod:`visionrt.runtime.folders`) or a COCO split of one
object per image (the built-in data), as lazily read images and labels."""
from __future__ import annotations

import os

import torch

from ...runtime.datasets import read_coco_split
from ...runtime.folders import is_image_folder, read_image_folder
from ...runtime.manifest import InputSpec
from .lazy import LazyImages


def classification_split(data_dir: str | os.PathLike, split: str, spec: InputSpec) -> tuple[LazyImages, torch.Tensor, list[str]]:
    """Images fitted to ``spec`` (:class:`LazyImages`), labels int64 ``[N]`` and the class names."""
    if is_image_folder(data_dir):
        folder = read_image_folder(data_dir, split)
        paths, labels, classes = folder.image_paths, torch.from_numpy(folder.labels), folder.classes
    else:
        coco = read_coco_split(data_dir, split)
        index_of = coco.class_index
        paths = coco.image_paths
        labels = torch.tensor([index_of[a["category_id"]] for a in coco.single_annotations()], dtype=torch.int64)
        classes = [c["name"] for c in coco.categories]
    return LazyImages(paths, spec), labels, classes
