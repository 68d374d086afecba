"""Write a dataset directory: PNG images, semantic maps, COCO annotations, dataset.json.

The directory appears whole or not at all: it is written beside ``out_dir`` under a
temporary name and renamed into place. Building again with the same configuration is a
no-op; with another one, the directory is regenerated.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .coco import CATEGORIES, annotation_record, file_name, image_record
from .errors import DatasetError
from .figures import FIGURE_CATEGORIES, FigureConfig, make_figure
from .people import PeopleConfig, make_people
from .scenes import Scene, SceneConfig, make_scene
from .sources import backgrounds, check_split

#: Bump when the same configuration would produce different files.
GENERATOR_VERSION = 1
DEFAULT_SPLITS = {"train": 6000, "val": 1000, "test": 1000}
#: Scenes rendered per task handed to a worker process.
CHUNK = 250
#: Palette of the semantic PNGs: black background, then one colour per category.
SEMANTIC_PALETTE = np.array([
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190),
], dtype=np.uint8)

Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class SceneKind:
    """A kind of scene: its name in ``dataset.json``, how one is drawn, its COCO categories."""

    name: str
    make: Callable[..., Scene]   # make(config, seed, split, index) -> Scene
    categories: tuple[dict, ...]


#: The scene kinds, by their configuration class.
SCENE_KINDS = {SceneConfig: SceneKind("digits", make_scene, CATEGORIES),
               FigureConfig: SceneKind("figures", make_figure, FIGURE_CATEGORIES),
               PeopleConfig: SceneKind("people", make_people, FIGURE_CATEGORIES)}


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Everything that determines a dataset's files: name, scenes per split, scene kind and
    look (a ``SceneConfig`` for digits, a ``FigureConfig`` for pose figures), seed."""

    name: str = "classify"
    splits: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict(DEFAULT_SPLITS))
    scene: SceneConfig | FigureConfig | PeopleConfig = SceneConfig()
    seed: int = 0

    def __post_init__(self):
        for split, count in self.splits.items():
            check_split(split)
            if count < 1:
                raise DatasetError(f"split {split!r} asks for {count} images", fix="ask for at least 1")
        if self.seed < 0:
            raise DatasetError(f"seed {self.seed} is negative", fix="use a seed >= 0")

    @property
    def kind(self) -> SceneKind:
        return SCENE_KINDS[type(self.scene)]

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "splits": dict(self.splits), "scene_kind": self.kind.name}

    def hash(self) -> str:
        """sha256 (hex) of the configuration and ``GENERATOR_VERSION``."""
        text = json.dumps({"config": self.to_json(), "generator_version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def build_dataset(
    out_dir: str | os.PathLike,
    name: str = "classify",
    splits: Mapping[str, int] | None = None,
    image_size: int | tuple[int, int] = 64,
    objects_per_image: tuple[int, int] = (1, 1),
    digit_scale: tuple[float, float] = (0.45, 0.8),
    seed: int = 0,
    *,
    scene: FigureConfig | PeopleConfig | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> Path:
    """Build (or keep) the dataset in ``out_dir`` and return its path.

    image_size: side in pixels, or (height, width). splits: images per split
    (default ``DEFAULT_SPLITS``). scene: another kind of scene than digits (a
    ``FigureConfig``: one articulated figure with keypoints per image), whose configuration
    replaces ``image_size``, ``objects_per_image`` and ``digit_scale``. progress: called as
    ``progress(done, total)`` in images. workers: processes rendering scenes (default: all
    cores; 1 renders inline). The files do not depend on ``workers``.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    config = DatasetConfig(
        name=name,
        splits=dict(DEFAULT_SPLITS if splits is None else splits),
        scene=scene or SceneConfig(image_size=size, objects_per_image=tuple(objects_per_image),
                                   digit_scale=tuple(digit_scale)),
        seed=seed,
    )
    return build_atomically(Path(out_dir), config.hash(),
                            lambda tmp: _write(tmp, config, progress, workers or os.cpu_count() or 1))


def is_builtin_digits(data_dir: str | os.PathLike) -> bool:
    """Whether ``data_dir`` holds built-in digit scenes (its ``dataset.json`` says so)."""
    try:
        kind = json.loads((Path(data_dir) / "dataset.json").read_text())["config"]["scene_kind"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return kind == SCENE_KINDS[SceneConfig].name



def build_atomically(out_dir: Path, config_hash: str, write: Callable[[Path], None]) -> Path:
    """``out_dir`` as it is if its ``dataset.json`` records ``config_hash``; else ``write(tmp)``
    fills a sibling directory (``dataset.json`` included), renamed into place at the end, so an
    interrupted build leaves the previous dataset (or nothing). Refuses to replace a non-empty
    directory that is not a dataset."""
    built = _built_hash(out_dir)
    if built == config_hash:
        return out_dir
    if built is None and out_dir.exists() and any(out_dir.iterdir()):
        raise DatasetError(f"{out_dir} exists and is not a visionrt dataset", fix="choose an empty or new directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out_dir, "tmp")
    tmp.mkdir()
    try:
        write(tmp)
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _built_hash(out_dir: Path) -> str | None:
    """The config hash recorded in ``out_dir/dataset.json``; None if there is none."""
    try:
        return json.loads((out_dir / "dataset.json").read_text())["config_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(root: Path, config: DatasetConfig, progress: Progress | None, workers: int) -> None:
    tasks = [
        (config, split, start, min(start + CHUNK, count), root)
        for split, count in config.splits.items()
        for start in range(0, count, CHUNK)
    ]
    for split in config.splits:
        (root / "images" / split).mkdir(parents=True)
        (root / "semantic" / split).mkdir(parents=True)
    (root / "annotations").mkdir()
    results: dict[str, list] = {split: [] for split in config.splits}
    total, done = sum(config.splits.values()), 0
    for (_, split, start, stop, _), chunk in zip(tasks, _render_all(tasks, workers)):
        results[split].extend(chunk)
        done += stop - start
        if progress is not None:
            progress(done, total)
    counts = {split: _write_annotations(root, config, split, rendered) for split, rendered in results.items()}
    manifest = {
        "name": config.name,
        "generator_version": GENERATOR_VERSION,
        "config_hash": config.hash(),
        "config": config.to_json(),
        "categories": list(config.kind.categories),
        "splits": counts,
    }
    (root / "dataset.json").write_text(json.dumps(manifest, indent=2))


def _render_all(tasks: list, workers: int) -> Iterator[list]:
    """``_render`` of each task, in order: inline for one worker, else in a process pool."""
    if workers == 1 or len(tasks) == 1:
        yield from map(_render, tasks)
        return
    backgrounds()  # loaded once here: forked workers inherit it
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        try:
            yield from pool.map(_render, tasks)
        finally:
            pool.shutdown(cancel_futures=True)


def _render(task: tuple[DatasetConfig, str, int, int, Path]) -> list[tuple[dict, list[dict]]]:
    """Render scenes ``start..stop-1`` of a split to PNGs; return (image record, annotation
    records without ids) per scene. Image id = scene index + 1."""
    config, split, start, stop, root = task
    rendered = []
    for index in range(start, stop):
        scene = config.kind.make(config.scene, config.seed, split, index)
        image_id = index + 1
        Image.fromarray(scene.image).save(root / "images" / split / file_name(image_id))
        semantic = Image.fromarray(scene.semantic)
        semantic.putpalette(SEMANTIC_PALETTE.tobytes())  # mode L -> P
        semantic.save(root / "semantic" / split / file_name(image_id))
        rendered.append((image_record(image_id, scene), [annotation_record(image_id, o) for o in scene.objects]))
    return rendered


def _write_annotations(root: Path, config: DatasetConfig, split: str, rendered: list) -> dict:
    """Write ``annotations/<split>.json``; return its image and annotation counts."""
    images = [image for image, _ in rendered]
    records = [record for _, records in rendered for record in records]
    coco = {
        "info": {
            "description": f"visionrt synthetic {config.kind.name} '{config.name}', split {split}",
            "version": str(GENERATOR_VERSION),
            "config_hash": config.hash(),
        },
        "licenses": [],
        "images": images,
        "annotations": [{"id": i, **record} for i, record in enumerate(records, start=1)],
        "categories": list(config.kind.categories),
    }
    (root / "annotations" / f"{split}.json").write_text(json.dumps(coco))
    return {"images": len(images), "annotations": len(records)}


def _replace_dir(new: Path, out_dir: Path) -> None:
    """Move ``new`` to ``out_dir``, replacing an earlier dataset there."""
    if not out_dir.exists():
        os.replace(new, out_dir)
        return
    old = _sibling(out_dir, "old")
    os.replace(out_dir, old)
    os.replace(new, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _sibling(out_dir: Path, kind: str) -> Path:
    """A fresh hidden path beside ``out_dir``, e.g. ``.classify.tmp-1f2e3d4c``."""
    return out_dir.with_name(f".{out_dir.name}.{kind}-{uuid.uuid4().hex[:8]}")
