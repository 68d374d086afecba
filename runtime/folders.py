"""Datasets laid out as folders (numpy only): what held-out data, training and ``visionrt data check`` read.

* **ImageFolder** (classify): ``DIR/<split>/<class>/*.jpg`` for the splits ``train``, ``val``,
  ``test``; or ``DIR/<class>/*.jpg`` (no split folders), split per class by a seeded ratio
  (:data:`SPLIT_RATIOS`). Classes are the class folders' names, sorted.
* **Photo folder** (superres: high-resolution photos; style: content photos): ``DIR/<split>/*.jpg``,
  or ``DIR/*.jpg`` split by ratio.
* **Mask folder** (segment, VOC style): ``DIR/images/<split>/<name>.jpg`` with the index mask
  ``DIR/masks/<split>/<name>.png`` (pixel value = class index, :data:`IGNORE` = not labelled) and
  the class names in ``DIR/classes.txt`` (one per line, line ``i`` = class ``i``) or
  ``DIR/classes.json`` (a list). Or PASCAL VOC's own layout (``JPEGImages/``,
  ``SegmentationClass/``, ``ImageSets/Segmentation/{train,val}.txt``; VOC's 21 class names unless
  a ``classes.txt`` says otherwise).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from .datasets import DatasetError

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Share of each class's images per split when one folder of class folders is split by ratio.
SPLIT_RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}
#: Mask value of pixels without a label: excluded from the loss and from mIoU (as in PASCAL VOC).
IGNORE = 255
#: PASCAL VOC's own layout, read as it is: images, class masks (palette PNGs), split lists. Its
#: test masks are not public: the test split is its val list, as VOC results are reported.
VOC_IMAGES, VOC_MASKS, VOC_LISTS = "JPEGImages", "SegmentationClass", "ImageSets/Segmentation"
VOC_SPLIT_LISTS = {"train": "train", "val": "val", "test": "val"}
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_image_folder(data_dir: str | os.PathLike) -> bool:
    """Whether ``data_dir`` is an ImageFolder (folders of images, no COCO annotations, no masks)."""
    data_dir = Path(data_dir)
    return (data_dir.is_dir() and not (data_dir / "annotations").is_dir() and not (data_dir / "masks").is_dir()
            and bool(_subfolders(data_dir)))


def is_voc(data_dir: str | os.PathLike) -> bool:
    """Whether ``data_dir`` is laid out as PASCAL VOC (``VOCdevkit/VOC2012``): ``SegmentationClass/``
    and ``ImageSets/Segmentation/``."""
    return (Path(data_dir) / VOC_MASKS).is_dir() and (Path(data_dir) / VOC_LISTS).is_dir()


def is_mask_folder(data_dir: str | os.PathLike) -> bool:
    """Whether ``data_dir`` is a mask folder (``masks/`` beside ``images/``, or PASCAL VOC's layout)."""
    return (Path(data_dir) / "masks").is_dir() or is_voc(data_dir)


@dataclasses.dataclass(frozen=True)
class FolderSplit:
    """One split of an ImageFolder: image paths, their class indices int64 ``[N]`` and the class names."""

    image_paths: list[Path]
    labels: np.ndarray
    classes: list[str]


def has_split_folders(data_dir: Path) -> bool:
    return any((data_dir / split).is_dir() for split in SPLITS)


def read_image_folder(data_dir: str | os.PathLike, split: str, count: int | None = None,
                      seed: int = 0) -> FolderSplit:
    """The first ``count`` (or all) images of ``split``; :class:`DatasetError` when it is missing
    or holds a class the training split lacks."""
    data_dir = Path(data_dir)
    if has_split_folders(data_dir):
        if not (data_dir / "train").is_dir():
            raise DatasetError(f"{data_dir} has split folders but no train/",
                               fix=f"put the training images in {data_dir}/train/<class>/")
        classes = [p.name for p in _subfolders(data_dir / "train")]
        folder = data_dir / split
        if not folder.is_dir():
            raise DatasetError(f"no split {split!r} in {data_dir} ({folder} is missing)",
                               fix=f"add {folder}/<class>/*.jpg, or put the class folders directly in {data_dir} "
                                   "to split them by ratio")
        per_class = {}
        for sub in _subfolders(folder):
            if sub.name not in classes:
                raise DatasetError(f"class folder {sub} is not in {data_dir}/train",
                                   fix=f"add {data_dir}/train/{sub.name}/ or remove {sub}")
            per_class[sub.name] = image_files(sub)
    else:
        classes = [p.name for p in _subfolders(data_dir)]
        per_class = {name: ratio_split(image_files(data_dir / name), split, seed) for name in classes}
    paths = [(path, classes.index(name)) for name, files in per_class.items() for path in files][:count]
    return FolderSplit([p for p, _ in paths], np.array([c for _, c in paths], np.int64), classes)


def ratio_split(files: list[Path], split: str, seed: int = 0) -> list[Path]:
    """``split``'s share (:data:`SPLIT_RATIOS`) of one class's ``files``, drawn by ``seed``; with 3 or
    more files, val and test get at least one each."""
    order = np.random.default_rng(seed).permutation(len(files))
    n = len(files)
    held = [max(int(n >= 3), round(SPLIT_RATIOS[s] * n)) for s in ("val", "test")]
    bounds = {"train": (0, n - sum(held)), "val": (n - sum(held), n - held[1]), "test": (n - held[1], n)}
    lo, hi = bounds[split]
    return sorted(files[i] for i in order[lo:hi])


def read_photo_folder(data_dir: str | os.PathLike, split: str, seed: int = 0) -> list[Path]:
    """A folder of photos (super-resolution's high-resolution images, style transfer's content
    photos): the images of ``DIR/<split>/``, or ``split``'s share of ``DIR/*`` (no split folders;
    :data:`SPLIT_RATIOS`, seeded). :class:`DatasetError` when the split is missing or empty."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir} is not a folder of photos", fix="pass a folder of images")
    if has_split_folders(data_dir):
        folder = data_dir / split
        files = image_files(folder) if folder.is_dir() else []
        where = folder
    else:
        files, where = ratio_split(image_files(data_dir), split, seed), data_dir
    if not files:
        raise DatasetError(f"no {split} photos in {where}",
                           fix=f"put images in {data_dir}/{split}/, or at least 3 directly in {data_dir} to split "
                               "them by ratio")
    return files


def training_images(data_dir: str | os.PathLike) -> list[Path]:
    """The training split's image files of a dataset in any layout visionrt reads: a mask folder
    (or VOC), ``images/train/`` (COCO, the built-in data, photo folders with splits), ``images/``
    split by ratio (a style folder), an ImageFolder, or a plain folder of photos (all of them)."""
    data_dir = Path(data_dir)
    if is_mask_folder(data_dir):
        return read_mask_folder(data_dir, "train")[0]
    if (data_dir / "images" / "train").is_dir():
        return image_files(data_dir / "images" / "train")
    if (data_dir / "images").is_dir():
        return read_photo_folder(data_dir / "images", "train")
    if is_image_folder(data_dir):
        return read_image_folder(data_dir, "train").image_paths
    if data_dir.is_dir() and image_files(data_dir):  # a plain folder of photos: an imported model's calibration set
        return image_files(data_dir)
    raise DatasetError(f"{data_dir} holds no training images in a layout visionrt reads",
                       fix="pass the dataset the model was trained on (see train/data/README.md)")


def read_class_names(data_dir: str | os.PathLike) -> list[str]:
    """A mask folder's class names: ``classes.txt`` (one per line) or ``classes.json`` (a list)."""
    data_dir = Path(data_dir)
    text, js = data_dir / "classes.txt", data_dir / "classes.json"
    if text.is_file():
        names = [line.strip() for line in text.read_text().splitlines() if line.strip()]
    elif js.is_file():
        names = json.loads(js.read_text())
    elif is_voc(data_dir):
        names = list(VOC_CLASSES)
    else:
        raise DatasetError(f"{data_dir} has masks/ but no classes.txt",
                           fix=f"write {text} with one class name per line (line 1 = mask value 0, the background)")
    if not names or len(names) >= IGNORE:
        raise DatasetError(f"{text if text.is_file() else js} names {len(names)} classes",
                           fix=f"name between 1 and {IGNORE - 1} classes, mask value i = class i")
    return list(map(str, names))


def read_mask_folder(data_dir: str | os.PathLike, split: str,
                     count: int | None = None) -> tuple[list[Path], list[Path]]:
    """The first ``count`` (or all) image paths of ``split`` and their mask paths (same stem, ``.png``)."""
    data_dir = Path(data_dir)
    if is_voc(data_dir):
        listing = data_dir / VOC_LISTS / f"{VOC_SPLIT_LISTS[split]}.txt"
        if not listing.is_file():
            raise DatasetError(f"no split {split!r} in {data_dir} ({listing} is missing)",
                               fix=f"write {listing} with one image name (no extension) per line")
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()][:count]
        return ([data_dir / VOC_IMAGES / f"{name}.jpg" for name in names],
                [data_dir / VOC_MASKS / f"{name}.png" for name in names])
    folder = data_dir / "images" / split
    if not folder.is_dir():
        raise DatasetError(f"no split {split!r} in {data_dir} ({folder} is missing)",
                           fix=f"put the {split} images in {folder}/ and their masks in {data_dir}/masks/{split}/")
    images = image_files(folder)[:count]
    return images, [data_dir / "masks" / split / f"{p.stem}.png" for p in images]
