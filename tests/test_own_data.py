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

from conftest import HAS_RTX, skip_for_missing_extra
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


def write_image_folder(root: Path, sizes: tuple[int, int, int] = (16, 4, 4)) -> Path:
    """An ImageFolder of :func:`crops` of the :data:`CLASSES` photos, ``sizes`` images per class and split."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val", "test"), sizes):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i, crop in enumerate(crops(name, count, rng)):
                Image.fromarray(crop).save(root / split / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("imagefolder"))


#: The pose fixture's joints on each disc: its top, bottom and the image-left and image-right points.
JOINTS = ("top", "bottom", "left_point", "right_point")


def scene(rng: np.random.Generator, index: int, most: int = 2) -> tuple[np.ndarray, list[dict]]:
    """A background photo of its own size with 1 to ``most`` pasted discs cut from the class photos:
    the image and its COCO annotations (bbox, polygon of the disc, the disc's 4 :data:`JOINTS`)."""
    background = load_photo(BACKGROUNDS[index % len(BACKGROUNDS)], max_side=int(rng.integers(90, 160))).copy()
    h, w = background.shape[:2]
    annotations = []
    for _ in range(int(rng.integers(1, most + 1))):
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
        keypoints = [cx, cy - r + 1, 2, cx, cy + r - 1, 2, cx - r + 1, cy, 2, cx + r - 1, cy, 2]
        annotations.append({"category_id": c + 1, "bbox": [cx - r, cy - r, 2 * r, 2 * r], "area": float(disc.sum()),
                            "iscrowd": 0, "segmentation": [polygon], "keypoints": keypoints, "num_keypoints": 4})
    return background, annotations


def write_coco(root: Path, seed: int, sizes: tuple[int, int, int] = (24, 6, 6), most: int = 2,
               categories: list[dict] | None = None) -> Path:
    """A COCO dataset of :func:`scene` images in ``root`` (train/val/test of ``sizes`` images)."""
    rng = np.random.default_rng(seed)
    n = 0
    for split, count in zip(("train", "val", "test"), sizes):
        (root / "images" / split).mkdir(parents=True)
        images, annotations = [], []
        for i in range(count):
            image, found = scene(rng, i, most)
            n += 1
            Image.fromarray(image).save(root / "images" / split / f"{n}.jpg", quality=95)
            images.append({"id": n, "file_name": f"{n}.jpg", "height": image.shape[0], "width": image.shape[1]})
            annotations += [{**a, "id": len(annotations) + 1, "image_id": n} for a in found]
        if categories is not None:  # one category (pose)
            annotations = [{**a, "category_id": 1} for a in annotations]
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"{split}.json").write_text(json.dumps({
            "images": images, "annotations": annotations,
            "categories": categories or [{"id": c + 1, "name": name} for c, name in enumerate(CLASSES)]}))
    return root


@pytest.fixture(scope="module")
def coco_photos(tmp_path_factory) -> Path:
    return write_coco(tmp_path_factory.mktemp("coco"), seed=1)


@pytest.fixture(scope="module")
def single_photos(tmp_path_factory) -> Path:
    """One disc per photo: for localize."""
    return write_coco(tmp_path_factory.mktemp("single"), seed=2, most=1)


@pytest.fixture(scope="module")
def keypoint_photos(tmp_path_factory) -> Path:
    """One disc per photo with its 4 joints, one category with their names and skeleton: for pose."""
    category = {"id": 1, "name": "disc", "keypoints": list(JOINTS), "skeleton": [[1, 2], [3, 4]]}
    return write_coco(tmp_path_factory.mktemp("pose"), seed=3, most=1, categories=[category])


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """High-resolution photos in one folder (split by ratio): for superres; as content photos beside
    a style image: for style."""
    from visionrt.train.data.photos import all_photos

    root = tmp_path_factory.mktemp("photo-folder")
    (root / "images").mkdir()
    for i, name in enumerate(all_photos()[:10]):
        Image.fromarray(load_photo(name, max_side=96 + 8 * i)).save(root / "images" / f"{name}.jpg", quality=95)
    Image.fromarray(load_photo("ihc", max_side=128)).save(root / "style.png")
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


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visionrt.runtime.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


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


def test_pascal_voc_layout_is_read_as_it_is(mask_folder, tmp_path):
    """VOCdevkit/VOC2012's folders and split lists, palette masks, VOC's class names, test = val."""
    from visionrt.runtime.folders import VOC_CLASSES
    from visionrt.train.data.check import check_dataset
    from visionrt.train.data.masks import segmentation_classes, segmentation_split

    voc = tmp_path / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    for split in ("train", "val"):
        names = []
        for image in sorted((mask_folder / "images" / split).iterdir()):
            names.append(f"{split}_{image.stem}")
            (voc / "JPEGImages" / f"{names[-1]}.jpg").write_bytes(image.read_bytes())
            mask = Image.open(mask_folder / "masks" / split / f"{image.stem}.png").convert("P")
            mask.putpalette([v for c in range(256) for v in (c * 40 % 256, c * 80 % 256, c * 120 % 256)])
            mask.save(voc / "SegmentationClass" / f"{names[-1]}.png")
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    report = check_dataset(voc, "segment")
    assert report.ok, report.problems
    assert segmentation_classes(voc) == list(VOC_CLASSES)
    spec = InputSpec(height=32, width=32)
    train_images, train_masks = segmentation_split(voc, "train", spec)
    assert len(train_images) == 24 and set(np.unique(train_masks[:].numpy())) <= {0, 1, 2, 3, 255}
    assert segmentation_split(voc, "test", spec)[0].paths == segmentation_split(voc, "val", spec)[0].paths


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
    from visionrt.export.stage import export_and_verify
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
def test_the_documented_commands_take_an_image_folder_through_every_stage(image_folder, tmp_path):
    """README's own-data commands, as a user types them: check, train, export (+ int8), build, bench, predict."""
    out, photo = tmp_path / "m", tmp_path / "cat.jpg"
    Image.fromarray(load_photo("chelsea", max_side=300)).save(photo)
    config = _yaml(tmp_path, "model_kwargs: {widths: [8, 16], blocks: 1}\nthreads: 2")
    train = ["train", "--task", "classify", "--data", str(image_folder), "--out", str(out), "--image-size", "32",
             "--epochs", "2", "--workers", "2", "--resize", "center-crop", "--config", str(config)]
    refused = cli(*train, "--batch-size", "64")  # 48 training images: a batch larger asked for explicitly
    assert refused.returncode == 2 and "48 samples, fewer than one batch of 64" in refused.stderr
    assert "--batch-size 48" in refused.stderr and not out.exists()
    commands = [["data", "check", str(image_folder), "--task", "classify"],
                [*train, "--batch-size", "16"],
                ["export", str(out), "--precision", "fp32,int8"],
                *([["build", str(out)]] if HAS_RTX else []),
                ["bench", str(out), "--backends", "onnxruntime", "--batch-sizes", "1", "--seconds", "0.05",
                 "--precision", "fp32,int8"],
                ["predict", str(out), str(photo), "--json"]]
    for command in commands:
        result = cli(*command)
        assert result.returncode == 0, (command, result.stderr[-2000:])
    prediction = json.loads(result.stdout)
    assert json.dumps(prediction).count("chelsea") + json.dumps(prediction).count("coffee") + \
        json.dumps(prediction).count("rocket") >= 1  # a label of the folder's classes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["resize"] == "center-crop" and manifest["classes"] == list(CLASSES)
    assert (out / "bench" / "bench.json").is_file() and "int8" in (out / "bench" / "bench.md").read_text()


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


@pytest.mark.slow
def test_coco_photos_train_an_instance_segmenter(coco_photos, tmp_path):
    model_dir = _train("instance", coco_photos, tmp_path / "m", model="maskrcnn", epochs=1, batch_size=8,
                       optimizer="adam", lr=0.002, image_size=64,
                       model_kwargs={"widths": [8, 16, 16], "blocks": 1})
    image = load_photo("coffee", max_side=220)
    for d in _predict(model_dir, image):  # masks pasted into the photo's own pixels
        assert d.mask.shape == image.shape[:2]


@pytest.mark.slow
def test_single_object_photos_train_a_letterboxed_localizer(single_photos, tmp_path):
    model_dir = _train("localize", single_photos, tmp_path / "m", epochs=2, batch_size=8, image_size=64,
                       model_kwargs={"widths": [8, 16, 16], "blocks": 1})
    assert model_dir.manifest.input.resize == "letterbox"
    image = load_photo("astronaut", max_side=150)
    result = _predict(model_dir, image)
    assert result.label in CLASSES and 0 <= result.box[0] <= result.box[2] <= image.shape[1]


@pytest.mark.slow
def test_keypoint_photos_train_a_pose_regressor_with_their_own_joints(keypoint_photos, tmp_path):
    model_dir = _train("pose", keypoint_photos, tmp_path / "m", model="deeppose", epochs=2, batch_size=8, image_size=64,
                       model_kwargs={"widths": [8, 16, 16]})
    assert model_dir.manifest.classes == list(JOINTS)
    image = load_photo("chelsea", max_side=140)
    result = _predict(model_dir, image)
    assert set(result.joints) == set(JOINTS) and np.isfinite(list(result.joints.values())).all()
    # no torso joints among these names: PCK is normalised by the pair farthest apart (a disc's diameter)
    assert set(model_dir.manifest.postprocess["torso"]) in ({0, 1}, {2, 3})


@pytest.mark.slow
def test_folder_of_photos_trains_a_super_resolver(photo_folder, tmp_path, monkeypatch):
    from visionrt.train.tasks import superres

    monkeypatch.setattr(superres, "PATCHES_PER_EPOCH", 256)  # a short run
    model_dir = _train("superres", photo_folder / "images", tmp_path / "m", model="vdsr", epochs=2,
                       batch_size=16, lr=1e-3, optimizer="adam", model_kwargs={"scale": 3, "width": 16})
    assert model_dir.manifest.postprocess["scale"] == 3
    assert model_dir.manifest.metrics["pytorch"]["test"]["psnr_gain"] > -1.0  # near bicubic or better
    image = load_photo("astronaut", max_side=70)
    assert _predict(model_dir, image).image.shape == (image.shape[0] * 3, image.shape[1] * 3, 3)
    from visionrt.benchmarks.run import bench_model_dir

    # no bench/ inputs in a folder of one's own: squares of a held-out photo, per benchmarked side
    paths = bench_model_dir(model_dir, backends=["onnxruntime"], batch_sizes=[1], min_seconds=0.01, max_seconds=0.05)
    assert all(f"{side}×{side}" in paths["markdown"].read_text() for side in (64, 128, 256))


@pytest.mark.slow
def test_style_image_and_content_folder_train_a_transform(photo_folder, tmp_path, monkeypatch):
    from visionrt.train.tasks import style

    monkeypatch.setattr(style, "CROPS_PER_EPOCH", 16)  # a short run
    model_dir = _train("style", photo_folder, tmp_path / "m", model="transform", epochs=1, batch_size=4,
                       model_kwargs={"width": 8, "blocks": 1})
    assert "'style'" in model_dir.manifest.outputs[0].meaning  # named after style.png
    image = load_photo("coffee", max_side=90)
    assert _predict(model_dir, image).image.shape == image.shape


@pytest.mark.parametrize("layout, task, expected", [
    ("no_style", "style", "has no style image"),
    ("tiny_photo", "superres", "under 48 px"),
    ("empty", "superres", "no train photos"),
])
def test_photo_folder_problems_are_one_line_errors(layout, task, expected, photo_folder, tmp_path):
    root = _copy(photo_folder, tmp_path / "d")
    if layout == "no_style":
        (root / "style.png").unlink()
    elif layout == "tiny_photo":
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "images" / "aaa.png")
    else:
        for path in (root / "images").iterdir():
            path.unlink()
    result = cli("data", "check", str(root if task == "style" else root / "images"), "--task", task)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert any(expected in line for line in result.stdout.splitlines() if line.startswith("problem:")), result.stdout


def test_superres_scale_must_be_an_integer(photo_folder, tmp_path):
    result = cli("train", "--task", "superres", "--data", str(photo_folder / "images"), "--out", str(tmp_path / "m"),
                 "--config", str(_yaml(tmp_path, "model_kwargs: {scale: 1.5}")))
    assert result.returncode == 2 and "scale must be 2, 3 or 4" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m" / "manifest.json").exists()


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text + "\n")
    return path


# centre crop, mirroring, read-ahead -------------------------------------------------------------
def test_center_crop_keeps_aspect_and_maps_back():
    spec = InputSpec(height=96, width=96, resize="center-crop")
    geometry = fit(480, 640, spec)
    assert geometry.size == (96, 128) and geometry.pad == (-16, 0)
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, 320:] = 255
    fitted = fit_image(image, spec)
    assert fitted.shape == (96, 96, 3) and (fitted[:, :47] == 0).all() and (fitted[:, 49:] == 255).all()
    np.testing.assert_allclose(geometry.to_original(geometry.to_input([[100.0, 50.0]])), [[100.0, 50.0]])
    class_map = (fitted[..., 0] > 127).astype(np.uint8)
    back = map_to_original(class_map, spec, 480, 640)
    assert back.shape == (480, 640) and back[:, 330:].all() and not back[:, :310].any()


def test_center_crop_is_refused_where_it_would_cut_objects(coco_photos, tmp_path):
    result = cli("train", "--task", "detect", "--data", str(coco_photos), "--out", str(tmp_path / "m"),
                 "--resize", "center-crop", "--no-check")
    assert result.returncode == 2 and "would cut detect objects off" in result.stderr
    assert "Traceback" not in result.stderr


def test_mirroring_is_off_for_the_built_in_digits_only(tmp_path, coco_photos):
    from visionrt.train.data.build import is_builtin_digits

    (tmp_path / "dataset.json").write_text(json.dumps({"config": {"scene_kind": "digits"}}))
    assert is_builtin_digits(tmp_path) and not is_builtin_digits(coco_photos)
    (tmp_path / "dataset.json").write_text(json.dumps({"config": {"scene_kind": "figures"}}))
    assert not is_builtin_digits(tmp_path)


def test_detection_flip_mirrors_boxes_and_masks_with_the_image():
    import torch
    from visionrt.train.tasks.detect import augment

    images = torch.zeros((16, 32, 48, 3), dtype=torch.uint8)
    images[:, 4:12, 2:10] = 255  # an object near the left edge
    masks = (images[..., 0] > 0).float()[:, None]
    targets = [{"boxes": torch.tensor([[2.0, 4.0, 10.0, 12.0]]), "labels": torch.tensor([0]), "masks": masks[i]}
               for i in range(16)]
    out, moved = augment(images, targets, torch.Generator().manual_seed(0), flip=True, max_shift=0)
    mirrored = 0
    for image, target in zip(out, moved):
        x1, y1, x2, y2 = target["boxes"][0].int().tolist()
        assert (image[y1:y2, x1:x2] > 0).any(-1).all()            # the box covers the object
        assert (target["masks"][0] > 0).sum() == 64 and target["masks"][0][y1:y2, x1:x2].all()
        mirrored += x1 > 24
    assert 0 < mirrored < 16  # about half of them, at random
    kept, _ = augment(images, targets, torch.Generator().manual_seed(0), flip=False, max_shift=0)
    assert (kept.max(-1).values[:, 4:12, 2:10] == 255).all()  # no mirroring without flip


def test_scale_jitter_zooms_boxes_and_masks_with_the_image():
    import torch
    from visionrt.train.tasks.detect import augment

    images = torch.zeros((16, 48, 48, 3), dtype=torch.uint8)
    images[:, 10:30, 14:26] = 255
    masks = (images[..., 0] > 0).float()[:, None]
    targets = [{"boxes": torch.tensor([[14.0, 10.0, 26.0, 30.0]]), "labels": torch.tensor([0]), "masks": masks[i]}
               for i in range(16)]
    out, moved = augment(images, targets, torch.Generator().manual_seed(0), jitter=0.5, max_shift=0)
    areas = []
    for image, target in zip(out, moved):
        box, mask = target["boxes"][0], target["masks"][0] > 0
        ys, xs = mask.nonzero(as_tuple=True)
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box.numpy(), atol=1.5)
        assert (image[mask].float().mean() > 200) and (image[~mask].float().mean() < 30)  # the mask is the object
        areas.append(float((box[2] - box[0]) * (box[3] - box[1])))
    assert min(areas) < 0.8 * 240 and max(areas) > 1.2 * 240  # zoomed out and in (the box is 12×20 = 240 px²)


def test_read_ahead_workers_hand_over_the_images_decoding_would_give(image_folder):
    import torch
    from visionrt.train.data.imagefolder import classification_split
    from visionrt.train.data.lazy import LazyImages, read_ahead

    spec = InputSpec(height=32, width=32, resize="letterbox")
    images, _, _ = classification_split(image_folder, "train", spec)
    reference = LazyImages(images.paths, spec)
    batches = list(torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).split(8))
    seen = 0
    for batch in read_ahead([images], batches, workers=2):
        assert set(images.staged) >= set(batch.tolist())  # read by a worker before the step asks
        assert torch.equal(images[batch], reference[batch])
        seen += 1
    assert seen == len(batches) and not images.staged and images.fully_cached
    assert list(read_ahead([images], batches, workers=2)) == batches  # all cached: nothing read again


# standard-depth presets at realistic sizes ------------------------------------------------------
def test_presets_configure_standard_networks():
    from visionrt.train.tasks import configure
    from visionrt.train.tasks.architectures import build_model

    config = configure("classify", preset="standard", epochs=1)
    assert config.image_size == 224 and config.epochs == 1
    resnet18 = build_model("classify", {"arch": config.model, "kwargs": config.model_kwargs}, [str(c) for c in range(1000)])
    assert sum(p.numel() for p in resnet18.parameters()) == 11_689_512  # torchvision's resnet18
    assert configure("detect", preset="standard").image_size == 512


def test_a_task_without_the_preset_is_a_one_line_error(image_folder, tmp_path):
    result = cli("train", "--task", "pose", "--preset", "standard", "--data", str(image_folder),
                 "--out", str(tmp_path / "m"))
    assert result.returncode == 2 and "task pose has no preset 'standard'" in result.stderr
    assert "Traceback" not in result.stderr


def _build_one_target(model_dir) -> dict:
    from visionrt.export.build import build

    if not HAS_RTX:
        skip_for_missing_extra("TensorRT-RTX is not installed (pip install 'visionrt[rtx]')")
    return build(model_dir.root, flavour="tensorrt_rtx", compute_capabilities=["8.6"], max_batch=2).facts


@pytest.mark.slow
def test_resnet18_preset_at_224_trains_exports_and_builds(tmp_path):
    from visionrt.train.tasks import configure

    data = write_image_folder(tmp_path / "few", sizes=(3, 1, 1))  # a few photos: two steps of 4
    config = configure("classify", preset="standard", epochs=1, batch_size=4, patience=1)
    model_dir = _fit_preset(config, data, tmp_path / "m")
    assert (model_dir.manifest.input.height, model_dir.manifest.input.width) == (224, 224)
    facts = _build_one_target(model_dir)
    assert list(next(iter(facts["profile"].values()))["opt"][2:]) == [224, 224]


@pytest.mark.slow
def test_yolo_preset_at_512_trains_exports_and_builds(tmp_path):
    from visionrt.train.tasks import configure

    data = write_coco(tmp_path / "few", seed=4, sizes=(8, 2, 2))  # a few photos: two steps of 4
    # yolo_raw: NMS in the runtime, as TensorRT-RTX takes no plugins
    config = configure("detect", preset="standard", model="yolo_raw", epochs=1, batch_size=4, patience=1)
    config.model_kwargs.update(configure("detect", preset="standard").model_kwargs)
    model_dir = _fit_preset(config, data, tmp_path / "m")
    assert model_dir.manifest.input.height == 512 and model_dir.manifest.input.resize == "letterbox"
    _build_one_target(model_dir)


def _fit_preset(config, data: Path, out: Path):
    """Train ``config`` briefly, then export and check parity on the held-out photos."""
    import dataclasses

    from visionrt.export.stage import export_and_verify
    from visionrt.train.loop import fit

    model_dir = fit(dataclasses.replace(config, threads=2), data, out)
    report = export_and_verify(model_dir, data)
    assert report.passed, report.summary()
    return model_dir
