"""COCO records: the built-in scenes written as COCO (images, annotations with RLE masks,
categories), and what training reads of anyone's COCO (crowd regions, masks of any encoding)."""
from __future__ import annotations

import numpy as np

from ...runtime.datasets import DatasetError, compressed_rle
from .scenes import Scene, SceneObject
from .sources import DIGIT_CLASSES

#: COCO categories: id = class index + 1 = the object's value in the semantic map.
CATEGORIES = tuple({"id": c + 1, "name": name, "supercategory": "digit"} for c, name in enumerate(DIGIT_CLASSES))


def file_name(image_id: int) -> str:
    return f"{image_id:06d}.png"


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
        "segmentation": compressed_rle(obj.mask),
    }
    if obj.keypoints is not None:
        record["keypoints"] = [round(float(v), 2) for v in obj.keypoints.ravel()]
        record["num_keypoints"] = int((obj.keypoints[:, 2] > 0).sum())
    return record


#: A box may overflow its image by up to this many pixels (coordinates rounded by the tool that
#: wrote them): it is clipped to the image. A larger overflow is an error (``visionrt data check``).
BOX_OVERFLOW_PX = 1.0


def clip_box(bbox: list[float], width: int, height: int) -> list[float] | None:
    """A COCO ``[x, y, w, h]`` box clipped to the ``width`` x ``height`` image: the box itself
    when inside, clipped when it overflows by at most :data:`BOX_OVERFLOW_PX`, ``None`` when more."""
    x, y, w, h = bbox
    overflow = max(-x, -y, x + w - width, y + h - height)
    if overflow <= 0:
        return bbox
    if overflow > BOX_OVERFLOW_PX:
        return None
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    return [x1, y1, x2 - x1, y2 - y1]


def clip_boxes(coco: dict) -> int:
    """Clip (in place) the boxes of a COCO dict that overflow their image by at most
    :data:`BOX_OVERFLOW_PX`; the number clipped (larger overflows are left for the check to refuse)."""
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    clipped = 0
    for annotation in coco["annotations"]:
        bbox, size = annotation.get("bbox"), sizes.get(annotation.get("image_id"))
        if bbox is None or size is None:
            continue
        inside = clip_box(bbox, *size)
        if inside is not None and inside is not bbox:
            annotation["bbox"], clipped = inside, clipped + 1
    return clipped


def training_annotations(annotations: list[dict]) -> list[dict]:
    """The objects a model learns from: crowd regions (``iscrowd`` 1) are left out, as COCO does
    (its evaluation ignores detections matching them)."""
    return [a for a in annotations if not a.get("iscrowd", 0)]


def annotation_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """An annotation's ``segmentation`` (polygons, uncompressed or compressed RLE) -> uint8 ``[height, width]``
    0/1, by pycocotools; :class:`DatasetError` when it has none (boxes only)."""
    from pycocotools import mask as coco_mask

    segmentation = annotation.get("segmentation")
    if not segmentation:
        raise DatasetError(f"annotation {annotation.get('id')} of image {annotation.get('image_id')} has no "
                           "segmentation (boxes only)", fix="add polygon or RLE masks, or train `detect` instead")
    if isinstance(segmentation, list):  # polygons: [[x1, y1, x2, y2, ...], ...]
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return coco_mask.decode(rle)


def require_masks(split) -> None:
    """:class:`DatasetError` naming the first non-crowd annotation of a :class:`CocoSplit` without a mask."""
    for annotation in split.coco["annotations"]:
        if not annotation.get("iscrowd", 0) and not annotation.get("segmentation"):
            raise DatasetError(f"{split.annotation_file}: annotation {annotation.get('id')} (image "
                               f"{annotation.get('image_id')}) has no segmentation; `instance` needs a mask per object",
                               fix="add polygon or RLE masks, or train `detect` on these boxes")
