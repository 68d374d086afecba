"""Super-resolution: metrics agree with scikit-image, every network exports with parity, bad input
is refused, and the quick pipeline (VDSR ×2) runs end to end through the CLI (slow: minutes)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import HAS_RTX, build_rtx_engine, needs_extra, run_cli
from visionrt.runtime import InputError, ModelDir, Predictor
from visionrt.runtime.images import to_uint8
from visionrt.runtime.tasks import superres as runtime_sr



@pytest.fixture(scope="session")
def sr_data(tmp_path_factory):
    """The built-in photo datasets (×2 and ×3): a few seconds."""
    from visionrt.train.tasks.superres import build_data

    return build_data(tmp_path_factory.mktemp("sr") / "data").parent


@pytest.fixture(scope="session")
def sr_pipeline(quick_run):
    run = quick_run("superres")
    return {**run, "model_dir": ModelDir.open(run["model_dir"])}


# metrics -------------------------------------------------------------------------------------
def test_psnr_and_ssim_agree_with_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (61, 47, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
    assert runtime_sr.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)
    expected = structural_similarity(a, b, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert runtime_sr.ssim(a, b) == pytest.approx(expected, abs=1e-9)
    assert runtime_sr.psnr(a, a) == float("inf") and runtime_sr.ssim(a, a) == pytest.approx(1.0)
    assert runtime_sr.psnr(a, b, border=2) == pytest.approx(
        peak_signal_noise_ratio(a[2:-2, 2:-2], b[2:-2, 2:-2], data_range=255), abs=1e-9)


def test_dataset_holds_whole_photos_per_scale(sr_data):
    from visionrt.train.data.photos import dataset_info, read_png

    for scale in (2, 3):
        root = sr_data / f"x{scale}"
        info = dataset_info(root)
        assert info["scale"] == scale
        splits = info["splits"]
        assert not set(splits["test"]) & set(splits["train"]) and not set(splits["val"]) & set(splits["train"])
        for name in splits["test"]:
            hr, lr = read_png(root / "hr" / "test" / f"{name}.png"), read_png(root / "images" / "test" / f"{name}.png")
            assert hr.shape[0] % scale == 0 and hr.shape[1] % scale == 0
            assert lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale, 3)
            assert np.array_equal(lr, runtime_sr.downscale_bicubic(hr, scale))


# every network: shapes, export, parity -----------------------------------------------------------
VARIANTS = [("srcnn", 2, {}), ("srcnn", 3, {"f2": 1}), ("fsrcnn", 2, {"d": 16, "s": 8, "m": 2}),
            ("fsrcnn", 3, {}), ("vdsr", 3, {"width": 8})]


@pytest.mark.parametrize("arch, scale, kwargs", VARIANTS)
def test_output_size_is_scale_times_input(arch, scale, kwargs):
    from visionrt.train.tasks.architectures import build_model

    model = build_model("superres", {"arch": arch, "kwargs": {"scale": scale, **kwargs}}, []).eval()
    h, w = 13, 22
    size = (h, w) if model.input_kind == "lr" else (scale * h, scale * w)
    assert model(torch.zeros(1, 3, *size)).shape == (1, 3, scale * h, scale * w)


@pytest.mark.parametrize("scale", [2, 3])
def test_srcnn_and_fsrcnn_start_as_interpolation(scale):
    """SRCNN starts as the identity on its (bicubic) input, FSRCNN as cubic upsampling of its
    low-resolution input: within 0.5 dB of Pillow's bicubic on a real photo, not the papers'
    Gaussian start's noise."""
    from skimage import data

    from visionrt.train.models.superres import FSRCNN, SRCNN
    from visionrt.train.tasks.superres import to_tensor

    torch.manual_seed(0)
    hr = data.astronaut()[:240, :240]
    lr = runtime_sr.downscale_bicubic(hr, scale)
    bicubic = runtime_sr.upscale_bicubic(lr, scale)
    with torch.no_grad():
        assert torch.equal(SRCNN(scale)(to_tensor(bicubic)), to_tensor(bicubic))
        fsrcnn = to_uint8(FSRCNN(scale)(to_tensor(lr))[0].numpy())
    assert runtime_sr.psnr(fsrcnn, hr, scale) > runtime_sr.psnr(bicubic, hr, scale) - 0.5


@pytest.mark.slow
@pytest.mark.parametrize("arch, scale, kwargs", VARIANTS)
def test_export_and_parity(arch, scale, kwargs, sr_data, tmp_path, monkeypatch):
    """One short epoch, then ONNX with dynamic H/W in onnxruntime vs PyTorch on two held-out photos."""
    import onnx

    from visionrt.export.stage import export_and_verify
    from visionrt.train.config import TrainConfig
    from visionrt.train.loop import fit
    from visionrt.train.tasks import superres

    monkeypatch.setattr(superres, "PATCHES_PER_EPOCH", 32)
    data = sr_data / f"x{scale}"
    config = TrainConfig(task="superres", model=arch, model_kwargs=dict(kwargs), epochs=1, batch_size=16, lr=1e-3,
                         optimizer="adam", weight_decay=0.0)
    model_dir = fit(config, data, tmp_path)
    post = model_dir.manifest.postprocess
    assert model_dir.manifest.model["kwargs"]["scale"] == post["scale"] == scale
    assert post["model_input"] == ("lr" if arch == "fsrcnn" else "bicubic")
    report = export_and_verify(model_dir, data, samples=2)
    assert report.passed, report.summary()
    assert report.task["psnr"]["difference"] <= 0.05
    if HAS_RTX:   # any size: the profile spans the manifest's sides
        assert build_rtx_engine(model_dir)["profile"]
    dims = onnx.load(model_dir.path("onnx")).graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param for d in (dims[0], dims[2], dims[3]))  # batch, height, width dynamic
    if arch == "fsrcnn":
        assert "ConvTranspose" in {n.op_type for n in onnx.load(model_dir.path("onnx")).graph.node}


def test_scale_comes_from_the_dataset(sr_data, tmp_path):
    from visionrt.train.config import TrainConfig
    from visionrt.train.data import DatasetError
    from visionrt.train.loop import fit

    config = TrainConfig(task="superres", model="srcnn", model_kwargs={"scale": 3}, epochs=1)
    with pytest.raises(DatasetError, match="×3 but the dataset is ×2"):
        fit(config, sr_data / "x2", tmp_path)
    with pytest.raises(DatasetError, match="no train photos"):  # x2/ and x3/ are no photos of its own
        fit(config, sr_data, tmp_path)


# the quick pipeline ------------------------------------------------------------------------------
pipeline = pytest.mark.slow


@pipeline
def test_gain_over_bicubic_reaches_target(sr_pipeline):
    m = sr_pipeline["model_dir"].manifest
    for backend in ("pytorch", "onnxruntime-cpu"):
        test = m.metrics[backend]["test"]
        assert test["psnr_gain"] >= 1.0, test
        assert test["ssim"] > test["bicubic_ssim"]
        assert test["images"] == 4
    assert m.postprocess["scale"] == 2 and m.postprocess["model_input"] == "bicubic"


@pipeline
def test_parity_within_stated_tolerance(sr_pipeline):
    parity = sr_pipeline["model_dir"].manifest.parity["onnxruntime-cpu"]
    assert parity["passed"]
    assert parity["outputs"][0]["shape"] == [4, -1]  # four photos of different sizes
    assert parity["task"]["psnr"]["difference"] <= parity["task"]["psnr"]["tolerance"] == 0.05


@pipeline
@needs_extra(HAS_RTX, "the rtx extra (TensorRT-RTX) is not installed")
def test_rtx_engine_has_a_dynamic_size_profile(sr_pipeline):
    model_dir = sr_pipeline["model_dir"]
    profile = model_dir.manifest.engines["rtx"]["profile"]["images"]
    build = model_dir.manifest.build_profile
    assert profile["min"] == [1, 3, build["height"][0], build["width"][0]]
    assert profile["max"] == [8, 3, build["height"][2], build["width"][2]] == [8, 3, 2048, 2048]
    assert model_dir.path("rtx").stat().st_size > 10_000


@pipeline
def test_benchmark_per_input_size(sr_pipeline):
    model_dir = sr_pipeline["model_dir"]
    bench = json.loads((model_dir.root / "bench" / "bench.json").read_text())
    measured = {(r["model"], r["backend"], r["batch"]) for r in bench["results"] if r["median_ms"] is not None}
    for backend in ("onnxruntime-cpu", "pytorch"):
        assert {(f"vdsr {s}×{s}", backend, 1) for s in runtime_sr.BENCH_SIDES} <= measured
        assert ("vdsr 64×64", backend, 8) in measured
    report = (model_dir.root / "report.md").read_text()
    assert "## Pictures" in report and "psnr_gain" in report and "bicubic_psnr" in report
    pictures = sorted((model_dir.root / "pictures").glob("*.png"))
    assert len(pictures) == 3


@pipeline
def test_predict_writes_the_comparison(sr_pipeline, tmp_path):
    data = sr_pipeline["out"] / "data" / "superres" / "x2"
    image = data / "images" / "test" / "coffee.png"
    result = run_cli("predict", str(sr_pipeline["model_dir"].root), str(image), "--json", "--save-dir", str(tmp_path))
    (row,) = json.loads(result.stdout)
    from visionrt.runtime.images import load_image

    lr = load_image(image)
    assert (row["height"], row["width"]) == (2 * lr.shape[0], 2 * lr.shape[1])
    drawn = load_image(row["drawn"])
    assert drawn.shape[1] >= 4 * lr.shape[1]  # bicubic | model, each twice the input's width


@pipeline
def test_bad_inputs(sr_pipeline):
    with Predictor(sr_pipeline["model_dir"]) as predictor:
        gray = np.tile(np.arange(32, dtype=np.uint8)[None] * 8, (24, 1))  # [24, 32] gray: becomes RGB
        (result,) = predictor.predict(gray)
        assert result.image.shape == (48, 64, 3)
        assert np.allclose(result.image[..., 0], result.image[..., 1], atol=2)  # still gray
        with pytest.raises(InputError, match="at least 8"):
            predictor.predict(np.zeros((6, 40, 3), np.uint8))
        with pytest.raises(InputError, match="at most 1024 px per side"):
            predictor.predict(np.zeros((16, 1100, 3), np.uint8))
        a, b = np.zeros((16, 24, 3), np.uint8), np.zeros((20, 20, 3), np.uint8)
        assert [r.image.shape for r in predictor.predict([a, b])] == [(32, 48, 3), (40, 40, 3)]
