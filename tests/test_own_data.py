"""Datasets in the formats people have, built from real photos (scikit-image / scikit-learn) of
varying sizes: ImageFolder (classify), COCO json with boxes and polygons (detect, instance),
index-mask PNGs with 255 = ignore (segment). Short trainings export, pass parity and predict on a
photo of another size; every malformed dataset gives a one-line error (CLI exit 2, no traceback)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from visionrt.runtime.manifest import InputSpec
from visionrt.runtime.preprocess import fit, fit_image, map_to_original, to_original_normalised
from visionrt.train.data.photos import load_photo

CLASSES = ("chelsea", "coffee", "rocket")
BACKGROUNDS = ("astronaut", "china", "moon", "camera")


def crops(name: str, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` random crops of photo ``name``, each of its own size (40-120 px sides)."""
    photo = load_photo(name, max_side=240)
    out = []
    for _ in range(count):
        h, w = rng.integers(40, min(120, photo.shape[0]) + 1), rng.integers(40, min(120, photo.shape[1]) + 1)
        y, x = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
        out.append(photo[y:y + h, x:x + w])
    return out


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("val", 4), ("test", 4)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i, crop in enumerate(crops(name, count, rng)):
                Image.fromarray(crop).save(root / split / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def scene(rng: np.random.Generator, index: int) -> tuple[np.ndarray, list[dict]]:
    """A background photo of its own size with 1-2 pasted discs cut from the class photos: the
    image and its COCO annotations (bbox, polygon of the disc)."""
    background = load_photo(BACKGROUNDS[index % len(BACKGROUNDS)], max_side=int(rng.integers(90, 160))).copy()
    h, w = background.shape[:2]
    annotations = []
    for _ in range(int(rng.integers(1, 3))):
        c = int(rng.integers(len(CLASSES)))
        r = int(rng.integers(12, min(h, w) // 3))
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
        patch = np.asarray(Image.fromarray(load_photo(CLASSES[c], max_side=240)).resize((2 * r, 2 * r)))
        yy, xx = np.mgrid[:2 * r, :2 * r]
        disc = (xx - r + 0.5) ** 2 + (yy - r + 0.5) ** 2 <= r * r
        region = background[cy - r:cy + r, cx - r:cx + r]
        region[disc] = patch[disc]
        angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        polygon = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).ravel().round(1).tolist()
        annotations.append({"category_id": c + 1, "bbox": [cx - r, cy - r, 2 * r, 2 * r], "area": float(disc.sum()),
                            "iscrowd": 0, "segmentation": [polygon]})
    return background, annotations


@pytest.fixture(scope="module")
def coco_photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(1)
    n = 0
    for split, count in (("train", 24), ("val", 6), ("test", 6)):
        (root / "images" / split).mkdir(parents=True)
        images, annotations = [], []
        for i in range(count):
            image, found = scene(rng, i)
            n += 1
            Image.fromarray(image).save(root / "images" / split / f"{n}.jpg", quality=95)
            images.append({"id": n, "file_name": f"{n}.jpg", "height": image.shape[0], "width": image.shape[1]})
            annotations += [{**a, "id": len(annotations) + 1, "image_id": n} for a in found]
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"{split}.json").write_text(json.dumps({
            "images": images, "annotations": annotations,
            "categories": [{"id": c + 1, "name": name} for c, name in enumerate(CLASSES)]}))
    return root


@pytest.fixture(scope="module")
def mask_folder(tmp_path_factory, coco_photos) -> Path:
    """The COCO scenes as a mask folder: disc pixels = class index, a 3-px ring around each = 255."""
    from pycocotools import mask as coco_mask

    root = tmp_path_factory.mktemp("masks")
    (root / "classes.txt").write_text("background\n" + "\n".join(CLASSES) + "\n")
    for split in ("train", "val", "test"):
        coco = json.loads((coco_photos / "annotations" / f"{split}.json").read_text())
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for record in coco["images"]:
            h, w = record["height"], record["width"]
            mask = np.zeros((h, w), np.uint8)
            for a in coco["annotations"]:
                if a["image_id"] == record["id"]:
                    inside = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(a["segmentation"], h, w)))
                    grown = np.asarray(Image.fromarray(inside * 255).filter(ImageFilter.MaxFilter(7))) > 0
                    mask[grown & (inside == 0)] = 255
                    mask[inside > 0] = a["category_id"]
            stem = Path(record["file_name"]).stem
            (root / "images" / split / record["file_name"]).write_bytes(
                (coco_photos / "images" / split / record["file_name"]).read_bytes())
            Image.fromarray(mask).save(root / "masks" / split / f"{stem}.png")
    return root


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visionrt.runtime.cli", *args], capture_output=True, text=True,
                          timeout=120)


# the resize policy -----------------------------------------------------------------------------
def test_letterbox_keeps_aspect_and_maps_points_back():
    spec = InputSpec(height=96, width=96, resize="letterbox", pad_value=114)
    geometry = fit(480, 640, spec)
    assert geometry.size == (72, 96) and geometry.pad == (0, 12)
    image = np.full((480, 640, 3), 200, np.uint8)
    fitted = fit_image(image, spec)
    assert fitted.shape == (96, 96, 3) and (fitted[:12] == 114).all() and (fitted[12:84] == 200).all()
    box = np.array([10.0, 20.0, 630.0, 470.0])
    np.testing.assert_allclose(geometry.to_original(geometry.to_input(box)), box)
    np.testing.assert_allclose(to_original_normalised(np.array([0.5, 12 / 96]), spec, 480, 640), [0.5, 0.0])
    class_map = np.zeros((96, 96), np.uint8)
    class_map[12:84, 48:] = 1
    back = map_to_original(class_map, spec, 480, 640)
    assert back.shape == (480, 640) and back[:, 320:].all() and not back[:, :320].any()


def test_stretch_is_the_old_mapping():
    spec = InputSpec(height=64, width=64)
    geometry = fit(128, 256, spec)
    assert geometry.scale == (0.25, 0.5) and geometry.pad == (0, 0)


# data check and malformed datasets ----------------------------------------------------------------
def test_check_summarises_each_format(image_folder, coco_photos, mask_folder):
    from visionrt.train.data.check import check_dataset

    report = check_dataset(image_folder, "classify")
    assert report.ok, report.problems
    assert report.summary["classes"] == list(CLASSES)
    assert report.summary["splits"]["train"]["images"] == 48
    low, high = report.summary["splits"]["train"]["sizes"]
    assert low != high  # images of varying sizes
    assert check_dataset(coco_photos, "instance").ok
    segment = check_dataset(mask_folder, "segment")
    assert segment.ok, segment.problems and segment.summary["classes"][0] == "background"


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case, task, expected", [
    ("truncated", "classify", "corrupt or truncated"),
    ("missing_split", "classify", "no split 'test'"),
    ("box_outside", "detect", "lies outside"),
    ("zero_box", "detect", "zero area"),
    ("boxes_only", "instance", "no segmentation"),
    ("mask_values", "segment", "are not classes"),
    ("keypoints_outside", "pose", "keypoints outside"),
    ("missing_coco_split", "detect", "split 'val' is missing"),
])
def test_malformed_datasets_are_one_line_errors(case, task, expected, image_folder, coco_photos, mask_folder,
                                                tmp_path):
    if task == "classify":
        root = _copy(image_folder, tmp_path / "d")
    elif task == "segment":
        root = _copy(mask_folder, tmp_path / "d")
    else:
        root = _copy(coco_photos, tmp_path / "d")
    train_json = root / "annotations" / "train.json"
    if case == "truncated":
        path = root / "train" / "coffee" / "1.jpg"
        path.write_bytes(path.read_bytes()[:200])
    elif case == "missing_split":
        import shutil
        shutil.rmtree(root / "test")
    elif case == "box_outside":
        _edit_json(train_json, lambda d: d["annotations"][0].update(bbox=[-50, 0, 400, 30]))
    elif case == "zero_box":
        _edit_json(train_json, lambda d: d["annotations"][0].update(bbox=[5, 5, 0, 10]))
    elif case == "boxes_only":
        _edit_json(train_json, lambda d: d["annotations"][0].pop("segmentation"))
    elif case == "mask_values":
        mask = next((root / "masks" / "train").iterdir())
        Image.fromarray(np.full((50, 50), 7, np.uint8)).save(mask)
    elif case == "keypoints_outside":
        def person(d):
            d["categories"] = [{"id": 1, "name": "person", "keypoints": ["a", "b"], "skeleton": [[1, 2]]}]
            d["annotations"] = [{**a, "category_id": 1, "keypoints": [1e4, 5, 2, 5, 5, 2]} for a in d["annotations"]]
        _edit_json(train_json, person)
    elif case == "missing_coco_split":
        (root / "annotations" / "val.json").unlink()
    result = cli("data", "check", str(root), "--task", task)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert problems and any(expected in line for line in problems), result.stdout
    assert all("fix:" in line for line in problems)


def test_train_runs_the_check_first(coco_photos, tmp_path):
    root = _copy(coco_photos, tmp_path / "d")
    _edit_json(root / "annotations" / "train.json", lambda d: d["annotations"][0].pop("segmentation"))
    result = cli("train", "--task", "instance", "--data", str(root), "--out", str(tmp_path / "m"), "--epochs", "1")
    assert result.returncode == 2 and "no segmentation" in result.stderr and "Traceback" not in result.stderr


def test_instance_targets_decode_polygons_into_the_letterboxed_input(coco_photos):
    from visionrt.train.config import TrainConfig
    from visionrt.train.tasks import load_task
    import torch

    task = load_task("instance", coco_photos, TrainConfig(task="instance", image_size=64))
    assert task.spec.resize == "letterbox" and task.splits["train"].images.shape == (24, 64, 64, 3)
    (target,) = task.targets("train", torch.tensor([0]))
    boxes, masks = target["boxes"], target["masks"]
    assert masks.shape[1:] == (64, 64) and len(masks) == len(boxes) > 0
    for box, mask in zip(boxes, masks):  # each mask lies within its (mapped) box
        ys, xs = mask.nonzero(as_tuple=True)
        assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1 and ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1


# short trainings: export, parity, predict on a photo of another size ----------------------------
def _train(task: str, data: Path, out: Path, **config):
    from visionrt.export.verify import export_and_verify
    from visionrt.train.config import TrainConfig
    from visionrt.train.loop import fit

    model_dir = fit(TrainConfig(task=task, seed=0, patience=10, **config), data, out)
    report = export_and_verify(model_dir, data)
    assert report.passed, report.summary()
    return model_dir


def _predict(model_dir, image: np.ndarray):
    from visionrt.runtime.predictor import Predictor

    with Predictor(model_dir.root, backend="onnxruntime") as predictor:
        return predictor.predict([image])[0]


@pytest.mark.slow
def test_imagefolder_of_photos_trains_exports_and_predicts(image_folder, tmp_path):
    model_dir = _train("classify", image_folder, tmp_path / "m", model="resnet", epochs=4, batch_size=16, lr=0.05,
                       image_size=32, model_kwargs={"widths": [8, 16, 16], "blocks": 1})
    assert model_dir.manifest.classes == list(CLASSES) and model_dir.manifest.input.height == 32
    top1 = model_dir.manifest.metrics["pytorch"]["test"]["top1"]
    assert top1 > 1 / len(CLASSES), top1  # better than chance after a few seconds
    result = _predict(model_dir, load_photo("chelsea", max_side=200))  # another size than any crop
    assert result.label in CLASSES


@pytest.mark.slow
def test_coco_photos_of_varying_sizes_train_a_letterboxed_detector(coco_photos, tmp_path):
    model_dir = _train("detect", coco_photos, tmp_path / "m", model="yolo", epochs=2, batch_size=8, optimizer="adam",
                       lr=0.002, image_size=64, model_kwargs={"widths": [8, 16, 16], "head": 32})
    assert model_dir.manifest.input.resize == "letterbox"
    image = load_photo("coffee", max_side=300)
    result = _predict(model_dir, image)
    for d in result:  # boxes are in the photo's own pixels
        assert 0 <= d.box[0] <= d.box[2] <= image.shape[1] and 0 <= d.box[1] <= d.box[3] <= image.shape[0]


@pytest.mark.slow
def test_mask_folder_trains_with_ignored_pixels_and_its_own_classes(mask_folder, tmp_path):
    model_dir = _train("segment", mask_folder, tmp_path / "m", model="fcn", epochs=2, batch_size=8, lr=0.05,
                       image_size=64, model_kwargs={"widths": [8, 16]})
    assert model_dir.manifest.classes == ["background", *CLASSES]
    image = load_photo("astronaut", max_side=130)
    result = _predict(model_dir, image)
    assert result.class_map.shape == image.shape[:2]
