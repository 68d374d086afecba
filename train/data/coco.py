"""Scenes as COCO records: images, annotations (RLE masks), categories."""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from .scenes import Scene, SceneObject
from .sources import DIGIT_CLASSES

#: COCO categories: id = class index + 1 = the object's value in the semantic map.
CATEGORIES = tuple({"id": c + 1, "name": name, "supercategory": "digit"} for c, name in enumerate(DIGIT_CLASSES))

def file_name(image_id: int) -> str:
    return f"{image_id:06d}.png"


def encode_mask(mask: np.ndarray) -> dict:
    """bool [H, W] -> COCO RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}


def image_record(image_id: int, scene: Scene) -> dict:
    height, width = scene.semantic.shape
    return {"id": image_id, "file_name": file_name(image_id), "width": width, "height": height}


def annotation_record(image_id: int, obj: SceneObject) -> dict:
    """One object, without its ``id`` (numbered per split by the caller);
    ``keypoints``/``num_keypoints`` only for objects that carry keypoints."""
    record = {
        "image_id": image_id,
        "category_id": obj.category + 1,
        "bbox": list(obj.bbox),
        "area": float(obj.mask.sum()),
        "iscrowd": 0,
        "segmentation": encode_mask(obj.mask),
    }
    if obj.keypoints is not None:
        record["keypoints"] = [round(float(v), 2) for v in obj.keypoints.ravel()]
        record["num_keypoints"] = int((obj.keypoints[:, 2] > 0).sum())
    return record
