"""Semantic segmentation in the runtime: logits ``[N, K, H, W]`` -> a class map per image.

Class 0 is the background; the manifest's ``classes`` name every class and
``postprocess["palette"]`` gives each its colour (the dataset's semantic palette). The model
sees its fixed input size; each class map is mapped back (nearest, through the manifest's resize
policy) to its original image. Target pixels of value 255 (:data:`~visionrt.runtime.folders.IGNORE`)
are not labelled and count nowhere.
Images under half the model's input side are refused (:func:`prepare`): enlarged more, they
are a blur. Metrics: IoU per class from one confusion matrix over all pixels of the split,
and their mean (mIoU) over the classes that occur in the targets.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from ..datasets import read_coco_split
from ..folders import is_mask_folder, read_mask_folder
from ..manifest import Manifest
from ..preprocess import map_to_original, require_detail
from ..render import PALETTE, legend, overlay, side_by_side
from .base import Architecture, Contract, Imported, RuntimeTask, Tensor, Variant

#: Classes of the built-in dataset: background, then the digits (semantic value c + 1 = digit c).
CLASSES = ("background", *(str(digit) for digit in range(10)))
#: Allowed |ONNX - PyTorch| of the metrics: a pixel whose two best logits tie within float
#: rounding may flip; 1e-3 is a few pixels of a class in a 500-image split, no real change.
PARITY_TOLERANCE = {name: (1e-3, 0.0) for name in ("miou", "pixel_accuracy", *(f"iou/{c}" for c in CLASSES))}
#: Largest share of pixels whose class may differ between two backends (see :func:`compare`).
MAX_DIFFERING_PIXELS = 1e-3
#: Opacity of the class colours in drawn overlays.
OVERLAY_ALPHA = 0.55


@dataclasses.dataclass
class Segmentation:
    """One image's result: ``class_map`` uint8 ``[H, W]`` at the image's own size (values index
    ``classes``) and the share of its pixels per class found (``fractions``, largest first)."""

    class_map: np.ndarray
    classes: list[str]
    palette: np.ndarray
    fractions: dict[str, float]

    def to_dict(self) -> dict:
        return {"size": list(self.class_map.shape), "fractions": self.fractions,
                "classes_present": [name for name in self.fractions if name != self.classes[0]]}

    def summary(self) -> str:
        found = [f"{name}: {share:.1%}" for name, share in self.fractions.items() if name != self.classes[0]]
        return ", ".join(found) if found else f"only {self.classes[0]}"

    def draw(self, image: np.ndarray) -> np.ndarray:
        """The image (RGB uint8) with each non-background class blended in its colour, above a
        legend of the classes found and their pixel shares."""
        index = {name: i for i, name in enumerate(self.classes)}
        entries = [(f"{name}: {share:.0%}", self.palette[index[name]])
                   for name, share in self.fractions.items() if name != self.classes[0]]
        return legend(overlay(image, self.class_map, self.palette, OVERLAY_ALPHA),
                      entries or [(f"only {self.classes[0]}", self.palette[0])])


def prepare(image: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Refuse images under half the model's input side; the resize to the input comes later."""
    return require_detail(image, manifest.input)


def class_maps(logits: np.ndarray) -> np.ndarray:
    """Per-pixel argmax: ``[N, K, H, W]`` float -> ``[N, H, W]`` uint8; a class map the model
    computed itself (an ArgMax at its end, ``[N, H, W]`` integers) as it is."""
    if logits.ndim == 3:
        return logits.astype(np.uint8)
    return logits.argmax(axis=1).astype(np.uint8)


def own_class_maps(outputs: dict[str, np.ndarray], manifest: Manifest) -> np.ndarray:
    """The model's own class maps ``[N, H, W]`` (targets of an imported model's reduced precisions)."""
    return class_maps(outputs[manifest.outputs[0].name])


def resize_map(class_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """A class map ``[h, w]`` scaled (nearest) to ``[height, width]``."""
    if class_map.shape == (height, width):
        return class_map
    return np.asarray(Image.fromarray(class_map).resize((width, height), Image.NEAREST))


def postprocess(outputs: dict[str, np.ndarray], manifest: Manifest,
                image_sizes: list[tuple[int, int]]) -> list[Segmentation]:
    """One :class:`Segmentation` per image; ``image_sizes`` are the originals' ``(height, width)``."""
    palette = np.asarray(manifest.postprocess["palette"], np.uint8)
    results = []
    for class_map, (height, width) in zip(class_maps(outputs[manifest.outputs[0].name]), image_sizes):
        class_map = map_to_original(class_map, manifest.input, height, width)
        counts = np.bincount(class_map.ravel(), minlength=len(manifest.classes))
        fractions = {manifest.classes[i]: float(counts[i] / class_map.size)
                     for i in np.argsort(-counts, kind="stable") if counts[i]}
        results.append(Segmentation(class_map, list(manifest.classes), palette, fractions))
    return results


def report_picture(result: Segmentation, image: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Image | prediction | truth, the maps blended over the image, with the image's mIoU."""
    truth = resize_map(target, *image.shape[:2])
    score = iou_metrics(confusion_matrix(result.class_map, truth, len(result.classes)), result.classes)["miou"]
    return side_by_side([("image", image), (f"predicted (mIoU {score:.2f})", result.draw(image)),
                         ("truth", overlay(image, truth, result.palette, OVERLAY_ALPHA))])


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], targets: np.ndarray,
            manifest: Manifest) -> dict:
    """Parity after post-processing: the two backends' class maps agree on all but at most
    :data:`MAX_DIFFERING_PIXELS` of the pixels.

    Logits alone can differ legitimately: in DeconvNet a near-tie within a max-pool window,
    broken differently by float rounding, sends a value to another pixel when unpooling, so a
    few logits differ by far more than rounding. The per-output figures are still reported."""
    name = manifest.outputs[0].name
    ref, cand = class_maps(reference[name]), class_maps(candidate[name])
    if ref.shape != cand.shape:
        return {"passed": False, "shapes": f"{list(ref.shape)} vs {list(cand.shape)}"}
    differing = int(np.count_nonzero(ref != cand))
    return {"pixels": int(ref.size), "differing_pixels": differing, "differing_share": differing / ref.size,
            "passed": differing <= MAX_DIFFERING_PIXELS * ref.size}


def read_map(path: Path) -> np.ndarray:
    """An index-mask PNG (palette or gray, pixel value = class index) -> uint8 ``[H, W]``."""
    with Image.open(path) as image:
        return np.asarray(image if image.mode in ("P", "L") else image.convert("L"))


def read_maps(paths: list[Path]) -> np.ndarray:
    """Index-mask PNGs -> uint8 ``[N, H, W]``, or an object array of ``[H, W]`` maps when their sizes differ."""
    maps = [read_map(path) for path in paths]
    if len({m.shape for m in maps}) <= 1:
        return np.stack(maps) if maps else np.zeros((0, 0, 0), np.uint8)
    out = np.empty(len(maps), dtype=object)
    out[:] = maps
    return out


def heldout(data_dir: str | Path, count: int | None = None,
            manifest: Manifest | None = None) -> tuple[list[Path], np.ndarray]:
    """Test-split image paths and their index masks (:func:`read_maps`): a mask folder's or the
    built-in dataset's semantic maps."""
    if is_mask_folder(data_dir):
        images, masks = read_mask_folder(data_dir, "test", count)
        return images, read_maps(masks)
    split = read_coco_split(data_dir, "test", count)
    return split.image_paths, read_maps(split.semantic_paths)


def confusion_matrix(predicted: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """``[K, K]`` int64 pixel counts, rows = target class, columns = predicted class; target pixels
    that are no class (:data:`IGNORE`) are left out."""
    labelled = target.ravel() < num_classes
    pairs = target.astype(np.int64).ravel()[labelled] * num_classes + predicted.astype(np.int64).ravel()[labelled]
    return np.bincount(pairs, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_metrics(confusion: np.ndarray, classes: list[str]) -> dict[str, float]:
    """``miou``, ``pixel_accuracy`` and ``iou/<class>`` from a confusion matrix; classes absent
    from the targets have no IoU and do not count in the mean."""
    true_positive = np.diag(confusion).astype(np.float64)
    in_target, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    iou = true_positive / np.maximum(in_target + predicted - true_positive, 1)
    present = in_target > 0
    per_class = {f"iou/{name}": float(iou[i]) for i, name in enumerate(classes) if present[i]}
    return {"miou": float(iou[present].mean()), "pixel_accuracy": float(true_positive.sum() / confusion.sum()),
            **per_class}


def evaluate(outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> dict[str, float]:
    """mIoU and per-class IoU of the logits against the index masks ``targets`` (:func:`heldout`);
    each prediction is mapped back to its target's size as :func:`postprocess` does."""
    k = len(manifest.classes)
    confusion = sum((confusion_matrix(map_to_original(m, manifest.input, *t.shape), t, k)
                     for m, t in zip(class_maps(outputs[manifest.outputs[0].name]), targets)),
                    np.zeros((k, k), np.int64))
    return iou_metrics(confusion, manifest.classes)


def import_defaults(variant: Variant, classes: list[str], bound: dict[str, int]) -> dict:
    """An imported model's palette: black background, then the render palette in turn."""
    return {"palette": [[0, 0, 0], *[list(PALETTE[i % len(PALETTE)]) for i in range(len(classes) - 1)]]}


TASK = RuntimeTask(
    name="segment",
    architectures=(Architecture("fcn", default=True), Architecture("unet"), Architecture("deeplab"),
                   Architecture("deconvnet", ("MaxPool2dWithIndices", "MaxUnpool2d"))),
    contract=Contract("fixed", "the class names, class 0 the background", (
        Variant("per-pixel logits", (Tensor("logits", ("N", "C", "h", "w"), "float",
                                            "per-pixel class scores; argmax over axis 1 is the class map"),),
                False, {"palette": "an RGB colour per class"}),
        Variant("class map", (Tensor("class_map", ("N", "h", "w"), "int",
                                     "per-pixel class index (an ArgMax in the graph)"),),
                False, {"palette": "an RGB colour per class"})), import_defaults),
    postprocess=postprocess, heldout=heldout, evaluate=evaluate, prepare=prepare, compare=compare,
    report_picture=report_picture, parity_tolerance=PARITY_TOLERANCE, precision_tolerance={"miou": (0.005, 0.0)},
    imported=Imported(output_layouts=("binary",), one_channel_layout="binary", own_targets=own_class_maps),
)
