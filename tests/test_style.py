"""Style transfer: the numpy loss network matches PyTorch's, the transform network takes any size
and exports with parity, the Gatys tool lowers the style loss, bad input is refused, and the
quick pipeline runs end to end through the CLI (slow: minutes)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import HAS_RTX, needs_extra, run_cli
from visionrt.runtime import InputError, ModelDir, Predictor
from visionrt.runtime.tasks import style as runtime_style



@pytest.fixture(scope="session")
def style_data(tmp_path_factory):
    from visionrt.train.tasks.style import build_data

    return build_data(tmp_path_factory.mktemp("style") / "data")


@pytest.fixture(scope="session")
def style_pipeline(quick_run):
    run = quick_run("style")
    return {**run, "model_dir": ModelDir.open(run["model_dir"])}


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful test image, RGB uint8."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    channels = [np.sin(6 * x * rng.uniform(0.5, 2) + c) * np.cos(5 * y * rng.uniform(0.5, 2)) for c in range(3)]
    return np.rint(127.5 + 120 * np.stack(channels, axis=-1)).astype(np.uint8)


# losses --------------------------------------------------------------------------------------------
def test_numpy_loss_network_matches_pytorch():
    from visionrt.train.models import style

    spec = runtime_style.LossNetwork()
    image = runtime_style.to_float(photo(37, 50))
    reference = style.LossFeatures(spec)(torch.from_numpy(image)[None])
    ours = spec.features(image)
    assert [f.shape for f in ours] == [tuple(r.shape[1:]) for r in reference]
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b[0].numpy(), rtol=1e-4, atol=1e-5)
    other = runtime_style.to_float(photo(37, 50, seed=1))
    grams = [runtime_style.gram(f) for f in spec.features(other)]
    torch_grams = [style.gram(f)[0] for f in style.LossFeatures(spec)(torch.from_numpy(other)[None])]
    expected = style.style_loss([style.gram(r) for r in reference], torch_grams).item()
    assert runtime_style.style_loss([runtime_style.gram(f) for f in ours], grams) == pytest.approx(expected, rel=1e-4)


def test_losses_are_zero_on_the_targets_themselves():
    spec = runtime_style.LossNetwork()
    image = runtime_style.to_float(photo(32, 32))
    features = spec.features(image)
    assert runtime_style.style_loss([runtime_style.gram(f) for f in features],
                                    [runtime_style.gram(f) for f in features]) == 0.0
    assert runtime_style.content_loss(features[2], features[2]) == 0.0


def test_gatys_tool_lowers_the_style_loss(tmp_path):
    from PIL import Image

    from visionrt.train import style_gatys

    content, style_image = photo(40, 48), photo(48, 48, seed=3)
    output, losses = style_gatys.stylise(content, style_image, steps=30, lr=0.05)
    assert output.shape == content.shape and output.dtype == np.uint8
    assert losses["style_reduction"] > 2, losses
    Image.fromarray(content).save(tmp_path / "c.png")
    Image.fromarray(style_image).save(tmp_path / "s.png")
    assert style_gatys.main([str(tmp_path / "c.png"), str(tmp_path / "s.png"), "--out", str(tmp_path / "o.png"),
                             "--steps", "2"]) == 0
    assert (tmp_path / "o.png").is_file() and (tmp_path / "o.compare.png").is_file()


# the transform network ------------------------------------------------------------------------------
@pytest.mark.parametrize("h, w", [(37, 53), (16, 16), (64, 40)])
def test_transform_keeps_any_size(h, w):
    from visionrt.train.models.style import TransformNet

    out = TransformNet(width=8, blocks=1).eval()(torch.rand(2, 3, h, w))
    assert out.shape == (2, 3, h, w) and 0 <= out.min() and out.max() <= 1


@pytest.mark.slow
def test_export_and_parity(style_data, tmp_path, monkeypatch):
    """One short epoch of a small transform network; ONNX (dynamic H/W) vs PyTorch on two photos."""
    import onnx

    from visionrt.export.stage import export_and_verify
    from visionrt.train.config import TrainConfig
    from visionrt.train.loop import fit
    from visionrt.train.tasks import style

    monkeypatch.setattr(style, "CROPS_PER_EPOCH", 8)
    config = TrainConfig(task="style", model="transform", model_kwargs={"width": 8, "blocks": 1}, epochs=1,
                         batch_size=4, lr=1e-3, optimizer="adam", weight_decay=0.0)
    model_dir = fit(config, style_data, tmp_path)
    report = export_and_verify(model_dir, style_data, samples=2)
    assert report.passed, report.summary()
    assert report.task["style_loss"]["difference"] <= 0.01 * report.task["style_loss"]["reference"]
    proto = onnx.load(model_dir.path("onnx"))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param for d in (dims[0], dims[2], dims[3]))
    assert "InstanceNormalization" in {n.op_type for n in proto.graph.node}


def test_style_image_is_not_a_content_photo(style_data):
    from visionrt.train.data.photos import dataset_info

    info = dataset_info(style_data)
    assert info["style"] not in {n for names in info["splits"].values() for n in names}
    assert (style_data / "style.png").is_file()


# the quick pipeline ------------------------------------------------------------------------------
pipeline = pytest.mark.slow


@pipeline
def test_style_loss_reduced_five_times(style_pipeline):
    m = style_pipeline["model_dir"].manifest
    for backend in ("pytorch", "onnxruntime-cpu"):
        test = m.metrics[backend]["test"]
        assert test["style_reduction"] >= 5, test
        assert test["content_loss"] < 0.5, test
    parity = m.parity["onnxruntime-cpu"]
    assert parity["passed"] and parity["task"]["style_loss"]["difference"] <= parity["task"]["style_loss"]["tolerance"]


@pipeline
@needs_extra(HAS_RTX, "the rtx extra (TensorRT-RTX) is not installed")
def test_rtx_engine_has_a_dynamic_size_profile(style_pipeline):
    model_dir = style_pipeline["model_dir"]
    profile = model_dir.manifest.engines["rtx"]["profile"]["images"]
    assert profile["min"] == [1, 3, 16, 16] and profile["max"] == [8, 3, 1024, 1024]


@pipeline
def test_report_has_before_after_pictures(style_pipeline):
    from visionrt.runtime.images import load_image

    root = style_pipeline["model_dir"].root
    report = (root / "report.md").read_text()
    assert "## Pictures" in report and "style_reduction" in report
    pictures = sorted((root / "pictures").glob("*.png"))
    assert len(pictures) == 3
    content = load_image(style_pipeline["out"] / "data" / "style" / "images" / "test" / f"{pictures[0].stem}.png")
    assert load_image(pictures[0]).shape[1] > 2 * content.shape[1]  # content | style | output


@pipeline
def test_predict_and_bad_inputs(style_pipeline, tmp_path):
    image = style_pipeline["out"] / "data" / "style" / "images" / "test" / "coffee.png"
    model_dir = str(style_pipeline["model_dir"].root)
    result = run_cli("predict", model_dir, str(image), "--json", "--save-dir", str(tmp_path))
    (row,) = json.loads(result.stdout)
    assert row["drawn"].endswith("coffee.style.png")
    with Predictor(style_pipeline["model_dir"]) as predictor:
        (gray,) = predictor.predict(np.full((40, 30), 90, np.uint8))  # gray: becomes RGB
        assert gray.image.shape == (40, 30, 3)
        with pytest.raises(InputError, match="at least 16"):
            predictor.predict(np.zeros((12, 40, 3), np.uint8))
        with pytest.raises(InputError, match="at most 1024 px"):
            predictor.predict(np.zeros((20, 1500, 3), np.uint8))
