"""The built-in dataset generator: determinism, disjoint splits, annotation consistency, I/O."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from visionrt.train.data import (
    SPLITS, DatasetError, FigureConfig, SceneConfig, SceneObject, build_dataset, digit_pool,
    load_classification, load_coco, make_scene,
)
from visionrt.train.data.people import PeopleConfig
from visionrt.train.data.coco import annotation_record

SMALL = {"train": 12, "val": 4, "test": 4}
MULTI = SceneConfig(image_size=(96, 96), objects_per_image=(2, 4), digit_scale=(0.2, 0.4))


def files(root):
    """Relative path -> bytes of every file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return build_dataset(tmp_path_factory.mktemp("small") / "ds", splits=SMALL, workers=1)


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    return build_dataset(
        tmp_path_factory.mktemp("multi") / "ds", name="detect", splits={"val": 8}, image_size=96,
        objects_per_image=(2, 4), digit_scale=(0.2, 0.4), workers=1,
    )


def test_digit_pools_are_disjoint_stratified_and_complete():
    pools = {split: digit_pool(split) for split in SPLITS}
    indices = [set(pool.indices.tolist()) for pool in pools.values()]
    assert not indices[0] & indices[1] and not indices[0] & indices[2] and not indices[1] & indices[2]
    assert len(set.union(*indices)) == 1797
    for split, share in zip(SPLITS, (0.70, 0.15, 0.15)):
        counts = np.bincount(pools[split].labels, minlength=10)
        assert np.all(np.abs(counts / 180 - share) < 0.03), (split, counts)


def test_unknown_split_is_refused():
    with pytest.raises(DatasetError, match="unknown split"):
        digit_pool("calibration")


@pytest.mark.parametrize("config", [SceneConfig(), MULTI], ids=["classify", "multi"])
def test_scene_annotations_are_consistent(config):
    for index in range(10):
        scene = make_scene(config, 0, "val", index)
        h, w = config.image_size
        assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8
        assert scene.semantic.shape == (h, w) and scene.semantic.dtype == np.uint8
        lo, hi = config.objects_per_image
        assert 1 <= len(scene.objects) <= hi
        union = np.zeros((h, w), dtype=np.int64)
        for obj in scene.objects:
            rows, cols = np.nonzero(obj.mask)
            x, y, bw, bh = obj.bbox
            assert (x, y, bw, bh) == (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
            assert np.all(scene.semantic[obj.mask] == obj.category + 1)
            union += obj.mask
        assert union.max() == 1, "visible masks overlap"
        assert np.array_equal(union > 0, scene.semantic > 0)


def test_classification_digit_is_large_and_fully_inside():
    for index in range(20):
        (obj,) = make_scene(SceneConfig(), 0, "train", index).objects
        x, y, w, h = obj.bbox
        assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
        assert max(w, h) >= 0.3 * 64


def test_scenes_are_deterministic_and_seeded():
    a, b = make_scene(MULTI, 3, "test", 7), make_scene(MULTI, 3, "test", 7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.semantic, b.semantic)
    assert not np.array_equal(a.image, make_scene(MULTI, 4, "test", 7).image)
    assert not np.array_equal(a.image, make_scene(MULTI, 3, "val", 7).image)


def test_build_is_deterministic_and_independent_of_workers(small, tmp_path):
    again = build_dataset(tmp_path / "again", splits=SMALL, workers=2)
    assert files(again) == files(small)
    other = build_dataset(tmp_path / "other", splits=SMALL, seed=1, workers=1)
    assert files(other)["images/train/000001.png"] != files(small)["images/train/000001.png"]


def test_layout_and_manifest(small):
    manifest = json.loads((small / "dataset.json").read_text())
    assert manifest["name"] == "classify" and manifest["config"]["splits"] == SMALL
    assert len(manifest["config_hash"]) == 64
    for split, count in SMALL.items():
        assert manifest["splits"][split] == {"images": count, "annotations": count}
        assert len(list((small / "images" / split).glob("*.png"))) == count
        semantic = Image.open(small / "semantic" / split / "000001.png")
        assert semantic.mode == "P" and semantic.size == (64, 64)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools
def test_coco_json_loads_in_pycocotools_and_rle_decodes_to_the_scene(multi):
    from pycocotools.coco import COCO

    data = load_coco(multi, "val")
    coco = COCO(str(data.annotation_file))
    assert sorted(coco.getCatIds()) == list(range(1, 11))
    for image, path, semantic_path in zip(data.coco["images"], data.image_paths, data.semantic_paths):
        scene = make_scene(MULTI, 0, "val", image["id"] - 1)
        assert np.array_equal(np.asarray(Image.open(path)), scene.image)
        assert np.array_equal(np.asarray(Image.open(semantic_path)), scene.semantic)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert len(annotations) == len(scene.objects)
        for annotation, obj in zip(annotations, scene.objects):
            assert np.array_equal(coco.annToMask(annotation).astype(bool), obj.mask)
            assert annotation["bbox"] == list(obj.bbox) and annotation["area"] == obj.mask.sum()
            assert annotation["category_id"] == obj.category + 1 and annotation["iscrowd"] == 0
            assert "keypoints" not in annotation


def test_multi_object_scenes_have_several_annotations(multi):
    coco = load_coco(multi, "val").coco
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]])[1:]
    assert len(per_image) == 8 and per_image.min() >= 1 and per_image.max() >= 3
    assert per_image.sum() >= 2 * 8 - 2


def test_build_again_is_a_noop_and_a_new_config_regenerates(small, tmp_path):
    out = build_dataset(tmp_path / "ds", splits={"val": 3}, workers=1)
    stamp = (out / "dataset.json").stat().st_mtime_ns
    calls = []
    build_dataset(out, splits={"val": 3}, progress=lambda done, total: calls.append(done))
    assert (out / "dataset.json").stat().st_mtime_ns == stamp and not calls
    build_dataset(out, splits={"val": 3}, seed=5, progress=lambda done, total: calls.append((done, total)), workers=1)
    assert json.loads((out / "dataset.json").read_text())["config"]["seed"] == 5
    assert calls[-1] == (3, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["ds"], "temporary directories left behind"


def test_interrupted_build_keeps_the_previous_dataset(tmp_path):
    out = build_dataset(tmp_path / "ds", splits={"val": 2}, workers=1)
    before = files(out)

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(out, splits={"val": 2}, seed=9, progress=interrupt, workers=1)
    assert files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_a_foreign_directory_is_never_replaced(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a visionrt dataset"):
        build_dataset(tmp_path, splits={"val": 1}, workers=1)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_load_classification(small):
    images, labels, classes = load_classification(small, "train")
    assert images.shape == (12, 64, 64, 3) and images.dtype == np.uint8
    assert labels.shape == (12,) and labels.dtype == np.int64
    assert classes == [str(c) for c in range(10)]
    assert labels.min() >= 0 and labels.max() < 10
    expected = [make_scene(SceneConfig(), 0, "train", i).objects[0].category for i in range(12)]
    assert labels.tolist() == expected


def test_load_classification_refuses_multi_object_and_missing_splits(multi, small):
    with pytest.raises(DatasetError, match="objects_per_image"):
        load_classification(multi, "val")
    with pytest.raises(DatasetError, match="no split 'train'"):
        load_coco(multi, "train")


def test_keypoints_are_written_coco_style():
    keypoints = np.array([[3.0, 4.0, 2.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    obj = SceneObject(category=0, bbox=(1.0, 2.0, 3.0, 4.0), mask=np.ones((8, 8), bool), keypoints=keypoints)
    record = annotation_record(5, obj)
    assert record["keypoints"] == [3.0, 4.0, 2.0, 0.0, 0.0, 0.0] and record["num_keypoints"] == 1


def test_invalid_configs_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="objects_per_image"):
        build_dataset(tmp_path / "a", objects_per_image=(3, 2))
    with pytest.raises(DatasetError, match="unknown split"):
        build_dataset(tmp_path / "b", splits={"calib": 3})


@pytest.mark.parametrize("config, words", [
    (lambda: SceneConfig(image_size=(8, 64)), "image_size (8, 64) is too small"),
    (lambda: SceneConfig(digit_scale=(0.0, 0.5)), "digit_scale (0.0, 0.5) is not a range 0 < lo <= hi <= 1"),
    (lambda: PeopleConfig(image_size=(24, 96)), "image_size (24, 96) is too small for figures"),
    (lambda: PeopleConfig(people=(0, 2)), "people (0, 2) is not a range 1 <= lo <= hi"),
    (lambda: PeopleConfig(figure_scale=(0.8, 0.5)), "figure_scale (0.8, 0.5) is not a range"),
    (lambda: PeopleConfig(max_overlap=1.5), "max_overlap 1.5 is not in [0, 1]"),
    (lambda: FigureConfig(figure_scale=(0.5, 1.2)), "figure_scale (0.5, 1.2) is not a range"),
])
def test_scene_configs_refuse_bad_ranges_naming_the_field(config, words):
    """The digit, people and figure scenes share their checks of sizes and ranges."""
    with pytest.raises(DatasetError) as err:
        config()
    assert words in str(err.value)
    if "too small" in words:
        assert err.value.fix.startswith("use at least")
