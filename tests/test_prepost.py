"""Pre/post-processing at real sizes: reduced JPEG decoding, uint8-input ONNX, the stage benchmark."""
from __future__ import annotations

import dataclasses
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from visionrt.runtime.errors import InputError
from visionrt.runtime.images import load_image, load_image_reduced
from visionrt.runtime.manifest import InputSpec, ModelDir
from visionrt.runtime.predictor import Predictor
from visionrt.runtime.preprocess import decode_size, fit, preprocess

CLASSIFY = InputSpec(height=224, width=224, resize="center-crop", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
STRETCH = dataclasses.replace(CLASSIFY, resize="bilinear")
DETECT = InputSpec(height=512, width=512, resize="letterbox")


def photo_jpeg(width: int, height: int, name: str = "astronaut", **save) -> bytes:
    """A shipped photo scaled to ``width × height``, as JPEG bytes (quality 90)."""
    from visionrt.train.data.photos import load_photo

    buffer = io.BytesIO()
    Image.fromarray(load_photo(name)).resize((width, height), Image.BICUBIC).save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def reduced(data, spec: InputSpec):
    return load_image_reduced(data, lambda h, w: decode_size(h, w, spec))


@pytest.mark.parametrize("spec", [CLASSIFY, STRETCH, DETECT], ids=["center-crop", "stretch", "letterbox"])
@pytest.mark.parametrize("name, size", [("astronaut", (640, 480)), ("coffee", (1280, 960)), ("rocket", (1000, 750))])
def test_reduced_decode_gives_the_model_input_of_a_full_decode(spec, size, name):
    data = photo_jpeg(*size, name=name)
    pixels, original = reduced(data, spec)
    full = load_image(data)
    assert original == full.shape[:2] == size[::-1]
    need = decode_size(*original, spec)
    assert pixels.shape[0] >= need[0] and pixels.shape[1] >= need[1]
    if size == (1280, 960):  # room for at least a 2x reduction with every policy
        assert pixels.shape[0] * 2 <= full.shape[0]
    a, b = (preprocess([im], dataclasses.replace(spec, mean=(0, 0, 0), std=(1, 1, 1))) * 255 for im in (pixels, full))
    # letterbox: the placement is computed from the decoded size, within a pixel of the full one's
    diff = np.abs(a - b)[..., 8:-8, 8:-8] if spec.resize == "letterbox" else np.abs(a - b)
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 12, (diff.mean(), np.percentile(diff, 99))


def test_reduced_decode_keeps_what_a_size_check_needs():
    # a panorama letterboxed into 512x512 fits as 512x96: its short side still decodes at >= 256
    data = photo_jpeg(2048, 384)
    pixels, original = reduced(data, DETECT)
    assert fit(*original, DETECT).size == (96, 512)
    assert min(pixels.shape[:2]) >= 256 and pixels.shape[1] >= 512


def test_reduced_decode_follows_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown: stored 1280x960 shows as 960x1280
    data = photo_jpeg(1280, 960, exif=exif)
    pixels, original = reduced(data, CLASSIFY)
    full = load_image(data)
    assert original == full.shape[:2] == (1280, 960)
    assert pixels.shape[0] > pixels.shape[1] and pixels.shape[1] < 960
    a, b = (preprocess([im], CLASSIFY) for im in (pixels, full))
    assert np.abs(a - b).mean() < 0.03  # normalised units: about 2 grey levels


@pytest.mark.parametrize("source", ["png", "array", "any-size model"])
def test_other_sources_decode_at_full_size(source):
    image = load_image(photo_jpeg(640, 480))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    data = {"png": buffer.getvalue(), "array": image, "any-size model": photo_jpeg(640, 480)}[source]
    spec = InputSpec() if source == "any-size model" else CLASSIFY
    pixels, original = reduced(data, spec)
    assert pixels.shape == (480, 640, 3) and original == (480, 640)


def test_reduced_decode_refuses_what_full_decode_refuses():
    with pytest.raises(InputError, match="corrupt or truncated"):
        reduced(photo_jpeg(640, 480)[:2000], CLASSIFY)


def test_predictor_decodes_reduced_and_reports_in_original_sizes(tiny_model_dir):
    data = photo_jpeg(1280, 960, name="coffee")
    with Predictor(tiny_model_dir, threads=1) as predictor:
        pixels, size = predictor.decode(data)
        assert size == (960, 1280) and pixels.shape[:2] == (120, 160)  # 1/8: still over the 64x64 input
        from_jpeg = predictor.infer(predictor.preprocess([data]))["logits"]
        from_pixels = predictor.infer(predictor.preprocess([load_image(data)]))["logits"]
        assert np.abs(from_jpeg - from_pixels).max() < 0.05 * np.abs(from_pixels).max()
        assert predictor.predict(data)[0].index == predictor.predict(load_image(data))[0].index


# uint8 input: cast, scale and mean/std inside the graph -----------------------------------------
@pytest.fixture(scope="module")
def uint8_export(tiny_model_dir, tiny_data, tmp_path_factory):
    """The tiny model exported with uint8 NHWC input: ``(its directory, the parity report vs PyTorch)``."""
    from visionrt.export.pixel_input import set_pixel_input
    from visionrt.export.stage import export_and_verify

    path = tmp_path_factory.mktemp("uint8") / "m"
    shutil.copytree(tiny_model_dir, path)
    model_dir = ModelDir.open(path)
    set_pixel_input(model_dir, "uint8", "NHWC")
    return path, export_and_verify(model_dir, tiny_data, samples=8)


def test_uint8_input_onnx_matches_the_float_one(tiny_model_dir, uint8_export):
    import onnx

    uint8_model_dir = uint8_export[0]
    spec = ModelDir.open(uint8_model_dir).manifest.input
    assert (spec.dtype, spec.layout) == ("uint8", "NHWC")
    graph_input = onnx.load(ModelDir.open(uint8_model_dir).path("onnx")).graph.input[0].type.tensor_type
    assert graph_input.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in graph_input.shape.dim][1:] == [spec.height, spec.width, 3]
    images = [photo_jpeg(640, 480, name) for name in ("astronaut", "coffee", "rocket")]
    with Predictor(tiny_model_dir, threads=1) as floats, Predictor(uint8_model_dir, threads=1) as pixels:
        batch = pixels.preprocess(images)
        assert batch.dtype == np.uint8 and batch.shape == (3, spec.height, spec.width, 3)
        a, b = floats.infer(floats.preprocess(images)), pixels.infer(batch)
        np.testing.assert_allclose(b["logits"], a["logits"], atol=1e-4, rtol=1e-4)
        assert [r.index for r in floats.predict(images)] == [r.index for r in pixels.predict(images)]


def test_uint8_input_export_passes_parity_with_pytorch(uint8_export):
    report = uint8_export[1]  # PyTorch fed the same uint8 pixels, through the same cast and mean/std
    assert report.passed and report.samples == 8, report.summary()


def test_an_imported_onnx_keeps_its_input(tiny_model_dir, tmp_path):
    from visionrt.export.import_onnx import import_onnx
    from visionrt.export.pixel_input import set_pixel_input

    model_dir = import_onnx(ModelDir.open(tiny_model_dir).path("onnx"), "classify", tmp_path / "imported",
                            classes=ModelDir.open(tiny_model_dir).manifest.classes, image_size=(64, 64))
    model_dir = model_dir if isinstance(model_dir, ModelDir) else ModelDir.open(model_dir)
    set_pixel_input(model_dir, None, None)  # nothing asked: nothing to refuse
    with pytest.raises(InputError, match="imported"):
        set_pixel_input(model_dir, "uint8", None)
    before = (model_dir.root / "manifest.json").read_bytes()
    result = run_cli("export", str(model_dir.root), "--input-dtype", "uint8", check=False)
    assert result.returncode == 2 and "an imported ONNX takes the input its file declares" in result.stderr
    assert "Traceback" not in result.stderr and (model_dir.root / "manifest.json").read_bytes() == before


# the benchmark ---------------------------------------------------------------------------------
def test_photos_are_jpegs_of_the_sizes_asked(tmp_path):
    from visionrt.benchmarks.prepost import write_photos

    written = write_photos(tmp_path, sizes=[(160, 120), (96, 200)], names=("astronaut", "rocket"))
    assert list(written) == ["160x120", "96x200"] and all(len(paths) == 2 for paths in written.values())
    with Image.open(written["96x200"][1]) as image:
        assert (image.format, image.size) == ("JPEG", (96, 200))


def test_bench_prepost_writes_stage_times_and_ratios(tiny_model_dir, tmp_path):
    out = tmp_path / "bench"
    images = []
    for name in ("astronaut", "coffee"):
        images.append(tmp_path / f"{name}.jpg")
        images[-1].write_bytes(photo_jpeg(160, 120, name))
    run_cli("bench-prepost", str(tiny_model_dir), "--images", *map(str, images), "--backends", "onnxruntime",
            "--precision", "fp32,fp16", "--repeats", "2", "--seconds", "0.05", "--out", str(out))
    report = json.loads((out / "prepost.json").read_text())
    assert report["task"] == "classify" and report["threads"] == 1 and report["machine"]["cpu"]
    measured, skipped = report["rows"]
    assert skipped["precision"] == "fp16" and "not exported" in skipped["skipped"]
    assert (measured["backend"], measured["precision"], measured["image"]) == ("onnxruntime", "fp32", "160x120")
    for key in ("decode", "decode_full", "pre", "pre_full", "model", "post", "end_to_end"):
        assert measured[key] > 0 and len(measured["runs"]) == 2
    assert measured["prepost_ratio"] == pytest.approx(np.median(
        [(r["pre"] + r["post"]) / r["model"] for r in measured["runs"]]))
    for key in ("overhead_ratio", "full_decode_overhead_ratio"):
        low, high = measured[f"{key}_range"]
        assert low <= measured[key] <= high
    assert "| onnxruntime | fp32 | 160x120 |" in (out / "prepost.md").read_text()


def test_bench_prepost_bad_sizes_is_a_one_line_error(tiny_model_dir):
    result = run_cli("bench-prepost", str(tiny_model_dir), "--sizes", "640by480", check=False)
    assert result.returncode == 2 and "WIDTHxHEIGHT" in result.stderr and "Traceback" not in result.stderr


def test_triton_takes_the_uint8_nhwc_input(uint8_export):
    from visionrt.export.triton import TritonOptions, triton_models

    model_dir = ModelDir.open(uint8_export[0])
    spec = model_dir.manifest.input
    onnx_model = next(m for m in triton_models("m", model_dir, TritonOptions()) if m.name == "m_onnx")
    (tensor,) = onnx_model.config["input"]
    assert str(tensor["data_type"]) == "TYPE_UINT8" and tensor["dims"] == [spec.height, spec.width, 3]
