"""Built-in datasets: handwritten digits on real photos, generated deterministically,
nothing downloaded. See README.md for the on-disk format."""
from .build import DEFAULT_SPLITS, DatasetConfig, build_dataset
from .coco import CATEGORIES
from .errors import DatasetError
from .readers import CocoSplit, load_classification, load_coco
from .scenes import Scene, SceneConfig, SceneObject, make_scene
from .sources import DIGIT_CLASSES, SPLITS, backgrounds, digit_pool

__all__ = [
    "CATEGORIES", "DEFAULT_SPLITS", "DIGIT_CLASSES", "SPLITS",
    "CocoSplit", "DatasetConfig", "DatasetError", "Scene", "SceneConfig", "SceneObject",
    "backgrounds", "build_dataset", "digit_pool", "load_classification", "load_coco", "make_scene",
]
