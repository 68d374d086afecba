"""``visionrt data check``: validate a dataset for a task before training on it.

:func:`check_dataset` reads every split the task trains on, in the task's format (ImageFolder,
COCO json + images, mask folder; see ``README.md``), decodes every image and mask, and returns a
:class:`Report`: a summary (images per split, instances per class, image-size range) and one
line per problem naming the file and the fix. It never raises for a bad dataset.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from ...runtime.datasets import DatasetError
from ...runtime.errors import VisionRTError
from ...runtime.folders import (IGNORE, SPLITS, is_image_folder, is_mask_folder, read_class_names,
                                read_image_folder, read_mask_folder, read_photo_folder)
from ...runtime.images import load_image
from ...runtime.tasks.segment import read_map
from ...runtime.tasks.style import style_image

@dataclasses.dataclass
class Report:
    """``summary``: per split ``images`` and ``instances`` per class, ``classes``, the image
    ``sizes`` range ``[[min w, min h], [max w, max h]]``; ``problems``: one line each."""

    task: str
    data_dir: str
    summary: dict = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, where: str | os.PathLike, what: str, fix: str) -> None:
        self.problems.append(f"{where}: {what} (fix: {fix})")

    def text(self, limit: int = 50) -> str:
        """The summary and the first ``limit`` problems, for people."""
        lines = [f"{self.task} dataset {self.data_dir}"]
        for split, facts in self.summary.get("splits", {}).items():
            sizes = facts.get("sizes")
            size_text = f", sizes {sizes[0][0]}x{sizes[0][1]}..{sizes[1][0]}x{sizes[1][1]}" if sizes else ""
            counts = ", ".join(f"{name} {n}" for name, n in facts.get("instances", {}).items())
            lines.append(f"  {split}: {facts['images']} images{size_text}" + (f"; {counts}" if counts else ""))
        if "classes" in self.summary:
            lines.append(f"  classes ({len(self.summary['classes'])}): {', '.join(self.summary['classes'])}")
        lines += [f"problem: {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more problems")
        lines.append("ok" if self.ok else f"{len(self.problems)} problem(s)")
        return "\n".join(lines)


def check_dataset(data_dir: str | os.PathLike, task: str, splits: tuple[str, ...] = SPLITS) -> Report:
    """The :class:`Report` of ``data_dir`` for ``task``."""
    data_dir = Path(data_dir)
    report = Report(task, str(data_dir))
    if not data_dir.is_dir():
        report.problem(data_dir, "is not a directory", "pass the dataset's root folder")
        return report
    report.summary["splits"] = {}
    checker = {"classify": _check_classify, "segment": _check_segment, "superres": _check_photos,
               "style": _check_photos}.get(task, _check_coco)
    for split in splits:
        try:
            checker(data_dir, split, task, report)
        except VisionRTError as err:  # a whole split unreadable: one line, then the next split
            report.problem(data_dir, str(err).split(" (")[0], err.fix or "see train/data/README.md")
    return report


def _image_size(path: Path, report: Report, fix: str = "re-save or remove it") -> tuple[int, int] | None:
    """(width, height) of the decoded image, or ``None`` after noting why it cannot be read."""
    try:
        image = load_image(path)
    except VisionRTError as err:
        report.problem(path, str(err).split(" (")[0].replace(f"{path} ", "").replace(str(path), "image"), fix)
        return None
    return image.shape[1], image.shape[0]


def _split_summary(report: Report, split: str, sizes: list[tuple[int, int]], instances: collections.Counter,
                   images: int) -> None:
    found = np.array(sizes).reshape(-1, 2)
    report.summary["splits"][split] = {
        "images": images, "instances": dict(sorted(instances.items())),
        "sizes": [found.min(0).tolist(), found.max(0).tolist()] if len(found) else None}


def _check_classify(data_dir: Path, split: str, task: str, report: Report) -> None:
    if not is_image_folder(data_dir):
        return _check_coco(data_dir, split, task, report)
    folder = read_image_folder(data_dir, split)
    report.summary["classes"] = folder.classes
    if not folder.image_paths:
        report.problem(data_dir / split, "holds no images", f"put images in {data_dir}/{split}/<class>/")
    sizes = [s for s in (_image_size(p, report) for p in folder.image_paths) if s]
    counts = collections.Counter(folder.classes[i] for i in folder.labels)
    if split == "train":
        for name in folder.classes:
            if not counts[name]:
                report.problem(data_dir / "train" / name, "class folder without images", "add images or remove it")
    _split_summary(report, split, sizes, counts, len(folder.image_paths))


#: The smallest photo side (px) each photo task trains on: a super-resolution patch, a style crop's floor.
MIN_PHOTO_SIDE = {"superres": 48, "style": 16}


def _check_photos(data_dir: Path, split: str, task: str, report: Report) -> None:
    """A folder of photos (superres: ``DIR/`` or the built-in ``DIR/hr/``; style: ``DIR/images/``
    beside a style image)."""
    if task == "style":
        if split == SPLITS[0]:
            try:
                style_image(data_dir)
            except VisionRTError as err:
                report.problem(data_dir, "has no style image", err.fix)
        folder = data_dir / "images"
    else:
        folder = data_dir / "hr" if (data_dir / "dataset.json").is_file() else data_dir
    paths = read_photo_folder(folder, split)
    sizes = [s for s in (_image_size(p, report) for p in paths) if s]
    for path, size in zip(paths, sizes):
        if min(size) < MIN_PHOTO_SIDE[task]:
            report.problem(path, f"is {size[0]}x{size[1]} px, under {MIN_PHOTO_SIDE[task]} px a side",
                           "remove it or use a larger photo")
    _split_summary(report, split, sizes, collections.Counter(), len(paths))


def _check_segment(data_dir: Path, split: str, task: str, report: Report) -> None:
    if not is_mask_folder(data_dir):
        return _check_coco(data_dir, split, task, report)
    classes = read_class_names(data_dir)
    report.summary["classes"] = classes
    images, masks = read_mask_folder(data_dir, split)
    if not images:
        report.problem(data_dir / "images" / split, "holds no images", "add the split's images")
    sizes, pixels = [], collections.Counter()
    for image, mask in zip(images, masks):
        size = _image_size(image, report)
        if size is None:
            continue
        sizes.append(size)
        if not mask.is_file():
            report.problem(mask, f"missing: {image.name} has no mask", f"write its index mask as {mask}")
            continue
        try:
            values = read_map(mask)
        except Exception as err:  # a PNG parser on the user's bytes: any failure means a bad file
            report.problem(mask, f"unreadable mask ({type(err).__name__})", "re-save it as an 8-bit PNG")
            continue
        if values.shape[::-1] != size:
            report.problem(mask, f"mask is {values.shape[1]}x{values.shape[0]}, its image {size[0]}x{size[1]}",
                           "save the mask at the image's size")
        bad = sorted(set(np.unique(values).tolist()) - set(range(len(classes))) - {IGNORE})
        if bad:
            report.problem(mask, f"values {bad[:5]} are not classes (classes.txt names {len(classes)}: 0.."
                                 f"{len(classes) - 1}, {IGNORE} = ignore)", "add the classes to classes.txt or fix "
                                                                          "the mask")
        pixels.update(classes[v] for v in np.unique(values) if v < len(classes))
    _split_summary(report, split, sizes, pixels, len(images))


def _check_coco(data_dir: Path, split: str, task: str, report: Report) -> None:
    annotation_file = data_dir / "annotations" / f"{split}.json"
    if not annotation_file.is_file():
        raise DatasetError(f"split {split!r} is missing ({annotation_file} not found)",
                           fix=f"write the {split} annotations there as COCO json, images in {data_dir}/images/{split}/")
    try:
        coco = json.loads(annotation_file.read_text())
        images, annotations, categories = coco["images"], coco["annotations"], coco["categories"]
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{annotation_file} is not COCO json ({err})",
                           fix="write images, annotations and categories lists") from err
    names = {c["id"]: c["name"] for c in categories}
    report.summary["classes"] = [names[k] for k in sorted(names)]
    by_image: dict = {im["id"]: [] for im in images}
    for a in annotations:
        if a.get("image_id") not in by_image:
            report.problem(annotation_file, f"annotation {a.get('id')} names image {a.get('image_id')}, which is not listed",
                           "add the image record or remove the annotation")
        elif a.get("category_id") not in names:
            report.problem(annotation_file, f"annotation {a.get('id')} has category {a.get('category_id')}, not in "
                                            "categories", "add the category or fix the annotation")
        else:
            by_image[a["image_id"]].append(a)
    if task == "pose" and (len(categories) != 1 or not categories[0].get("keypoints")):
        report.problem(annotation_file, "pose needs one category with `keypoints` names (and a `skeleton`)",
                       "list the joint names in the category's `keypoints`")
    sizes, instances = [], collections.Counter()
    for record in images:
        path = data_dir / "images" / split / record["file_name"]
        size = _image_size(path, report)
        if size is None:
            continue
        sizes.append(size)
        if size != (record.get("width"), record.get("height")):
            report.problem(path, f"is {size[0]}x{size[1]} but {annotation_file.name} says "
                                 f"{record.get('width')}x{record.get('height')}", "correct width/height in the json")
        objects = [a for a in by_image[record["id"]] if not a.get("iscrowd", 0)]
        if task in ("localize", "pose") and len(objects) != 1:
            report.problem(path, f"has {len(objects)} objects; {task} takes exactly one per image",
                           "keep one annotation per image, or train `detect`")
        for a in objects:
            instances[names[a["category_id"]]] += 1
            _check_annotation(a, size, task, path, report)
    _split_summary(report, split, sizes, instances, len(images))


def _check_annotation(a: dict, size: tuple[int, int], task: str, path: Path, report: Report) -> None:
    width, height = size
    x, y, w, h = a.get("bbox", (0, 0, 0, 0))
    what = f"annotation {a.get('id')}"
    if w <= 0 or h <= 0:
        report.problem(path, f"{what} has a box of zero area ({w}x{h})", "remove it or fix its bbox [x, y, w, h]")
    elif x < -0.5 or y < -0.5 or x + w > width + 0.5 or y + h > height + 0.5:
        report.problem(path, f"{what} box [{x}, {y}, {w}, {h}] lies outside the {width}x{height} image",
                       "clip the bbox to the image")
    if task == "instance":
        segmentation = a.get("segmentation")
        if not segmentation:
            report.problem(path, f"{what} has no segmentation (boxes only); instance needs masks",
                           "add polygon or RLE masks, or train `detect`")
        elif isinstance(segmentation, list) and any(len(p) < 6 or len(p) % 2 for p in segmentation):
            report.problem(path, f"{what} has a polygon of fewer than 3 points or an odd number of coordinates",
                           "write polygons as [x1, y1, x2, y2, x3, y3, ...]")
    if task == "pose":
        points = np.reshape(a.get("keypoints", []), (-1, 3))
        shown = points[points[:, 2] > 0]
        if len(shown) and ((shown[:, 0] < 0) | (shown[:, 0] > width) | (shown[:, 1] < 0) | (shown[:, 1] > height)).any():
            report.problem(path, f"{what} has labelled keypoints outside the {width}x{height} image",
                           "set their visibility to 0 or fix x, y")
