"""Built-in datasets: handwritten digits and articulated figures on real photos, generated
deterministically, nothing downloaded. See README.md for the on-disk format."""
from .build import DEFAULT_SPLITS, DatasetConfig, build_dataset
from .coco import CATEGORIES
from .errors import DatasetError
from .figures import FigureConfig, make_figure
from .readers import CocoSplit, load_classification, load_coco, load_single_objects
from .scenes import Scene, SceneConfig, SceneObject, make_scene
from .sources import DIGIT_CLASSES, SPLITS, backgrounds, digit_pool

__all__ = [
    "CATEGORIES", "DEFAULT_SPLITS", "DIGIT_CLASSES", "SPLITS",
    "CocoSplit", "DatasetConfig", "DatasetError", "FigureConfig", "Scene", "SceneConfig", "SceneObject",
    "backgrounds", "build_dataset", "digit_pool", "load_classification", "load_coco", "load_single_objects",
    "make_figure", "make_scene",
]
