"""``visionrt data check``: validate a dataset for a task before training on it.

:func:`check_dataset` reads every split the task trains on, in the task's format (ImageFolder,
COCO json + images, mask folder, photo folder; see ``README.md``), decodes every image and mask,
and returns a :class:`Report`: a summary (images per split, instances per class, image-size range)
and one line per problem naming the file and the fix. It never raises for a bad dataset.

The checks of each format are here (:func:`check_image_folder`, :func:`check_mask_folder`,
:func:`check_photo_folder`, :func:`check_coco`); which a task's data takes, with the task's own
rules, is its ``TrainTask.check_split`` (``train/tasks/<task>.py``).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ...runtime.datasets import DatasetError
from ...runtime.errors import VisionRTError
from ...runtime.folders import IGNORE, SPLITS, read_class_names, read_image_folder, read_mask_folder, read_photo_folder
from ...runtime.images import load_image
from ...runtime.tasks.segment import read_map
from .coco import BOX_OVERFLOW_PX, clip_box


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
        if self.summary.get("clipped_boxes"):
            lines.append(f"  clipped {self.summary['clipped_boxes']} boxes that overflowed their image by "
                         f"<= {BOX_OVERFLOW_PX:g} px")
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
    from ..tasks import get

    check_split = get(task).Task.check_split
    report.summary["splits"] = {}
    for split in splits:
        try:
            check_split(data_dir, split, report)
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


def check_image_folder(data_dir: Path, split: str, report: Report) -> None:
    """An ImageFolder split: ``DIR/<split>/<class>/*``, every class with images in ``train``."""
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


def check_photo_folder(folder: Path, split: str, report: Report, min_side: int) -> None:
    """A split of a folder of photos (``FOLDER/<split>/*``), each at least ``min_side`` px a side."""
    paths = read_photo_folder(folder, split)
    sizes = [s for s in (_image_size(p, report) for p in paths) if s]
    for path, size in zip(paths, sizes):
        if min(size) < min_side:
            report.problem(path, f"is {size[0]}x{size[1]} px, under {min_side} px a side",
                           "remove it or use a larger photo")
    _split_summary(report, split, sizes, collections.Counter(), len(paths))


def check_mask_folder(data_dir: Path, split: str, report: Report) -> None:
    """A split of index-mask PNGs: ``DIR/images/<split>/``, ``DIR/masks/<split>/`` and ``DIR/classes.txt``."""
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


#: A task's rule on a COCO file's categories: ``rule(categories, annotation_file, report)``.
CategoryRule = Callable[[list, Path, Report], None]
#: A task's rule on one COCO annotation: ``rule(annotation, (width, height) of its image, image path, report)``.
AnnotationRule = Callable[[dict, tuple[int, int], Path, Report], None]


def check_coco(data_dir: Path, split: str, report: Report, one_object: bool = False,
               category_rule: CategoryRule | None = None, annotation_rule: AnnotationRule | None = None) -> None:
    """A COCO split (``DIR/annotations/<split>.json``, images in ``DIR/images/<split>/``): every
    image decodes at its recorded size, every annotation names a listed image and category, every
    box lies inside its image (:func:`_check_box`); then the task's rules: exactly one object per
    image where ``one_object``, ``category_rule`` on the categories, ``annotation_rule`` on each object."""
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
    if category_rule is not None:
        category_rule(categories, annotation_file, report)
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
        if one_object and len(objects) != 1:
            report.problem(path, f"has {len(objects)} objects; {report.task} takes exactly one per image",
                           "keep one annotation per image, or train `detect`")
        for a in objects:
            instances[names[a["category_id"]]] += 1
            _check_box(a, size, path, report)
            if annotation_rule is not None:
                annotation_rule(a, size, path, report)
    _split_summary(report, split, sizes, instances, len(images))


def _check_box(a: dict, size: tuple[int, int], path: Path, report: Report) -> None:
    """Annotation ``a``'s box: of some area and inside the ``(width, height)`` image."""
    width, height = size
    x, y, w, h = a.get("bbox", (0, 0, 0, 0))
    what = f"annotation {a.get('id')}"
    if w <= 0 or h <= 0:
        report.problem(path, f"{what} has a box of zero area ({w}x{h})", "remove it or fix its bbox [x, y, w, h]")
    elif (inside := clip_box([x, y, w, h], width, height)) is None:
        report.problem(path, f"{what} box [{x}, {y}, {w}, {h}] lies outside the {width}x{height} image by more than "
                             f"{BOX_OVERFLOW_PX:g} px", "clip the bbox to the image")
    elif inside != [x, y, w, h]:  # under a pixel over: training clips it (train/data/coco.py)
        report.summary["clipped_boxes"] = report.summary.get("clipped_boxes", 0) + 1
