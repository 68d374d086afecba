"""Bring your own model: a bare ONNX file (bench, build, import) and an ``nn.Module`` (export), checked
against each task's output contract, on real photos (scikit-image's) of different sizes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import HAS_RTX, needs_extra, require_or_skip

onnx = require_or_skip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from visionrt.benchmarks.onnx_file import bench_onnx_file  # noqa: E402
from visionrt.export.build import parse_shapes  # noqa: E402
from visionrt.export.import_onnx import import_onnx  # noqa: E402
from visionrt.runtime import cli  # noqa: E402
from visionrt.runtime.backends.base import TensorSpec  # noqa: E402
from visionrt.runtime.contracts import ContractError, check_outputs  # noqa: E402
from visionrt.runtime.errors import InputError  # noqa: E402
from visionrt.runtime.manifest import ModelDir  # noqa: E402
from visionrt.runtime.predictor import Predictor  # noqa: E402

CLASSES = ["cat", "coffee", "person"]
QUICK = dict(min_seconds=0.02, max_seconds=0.2)


def tiny_classifier_onnx(path, classes: int = 3, logits_rank: int = 2):
    """Conv -> ReLU -> global pool -> MatMul: ``images [batch, 3, height, width]`` -> ``logits``
    ``[batch, classes]`` (``logits_rank`` 3: ``[batch, classes, 1]``, which breaks the contract)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["logits" if logits_rank == 2 else "m"])]
    init = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal((4, classes)).astype(np.float32), "fc")]
    if logits_rank == 3:
        nodes.append(helper.make_node("Unsqueeze", ["m", "axis"], ["logits"]))
        init.append(numpy_helper.from_array(np.array([2], np.int64), "axis"))
    shape = ["batch", classes] + [1] * (logits_rank - 2)
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                            ["batch", 3, "height", "width"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime here reads IR <= 13
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three real photos of different sizes and formats (scikit-image's), shrunk to keep tests quick."""
    data = require_or_skip("skimage.data")
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    for name, image, side, fmt in (("chelsea", data.chelsea(), 150, "png"), ("coffee", data.coffee(), 120, "jpg"),
                                   ("astronaut", data.astronaut(), 96, "png")):
        picture = Image.fromarray(image)
        picture.thumbnail((side, side))
        picture.save(folder / f"{name}.{fmt}")
    return folder


@pytest.fixture
def classifier_onnx(tmp_path):
    return tiny_classifier_onnx(tmp_path / "net.onnx")


# a bare ONNX file -----------------------------------------------------------------------------
def test_bench_bare_onnx_with_trtexec_shapes(classifier_onnx, tmp_path):
    report = bench_onnx_file(classifier_onnx, parse_shapes("images:2x3x40x48"), backends=["onnxruntime", "torch"],
                             out_dir=tmp_path / "bench", **QUICK)
    rows = {row["backend"]: row for row in report["results"]}
    assert rows["onnxruntime-cpu"]["batch"] == 2 and rows["onnxruntime-cpu"]["median_ms"] > 0
    assert rows["torch"]["median_ms"] is None and "no PyTorch module" in rows["torch"]["notes"]
    assert json.loads(report["json"].read_text()) and report["markdown"].is_file()


def test_bench_bare_onnx_batch_sizes_override_the_dynamic_batch(classifier_onnx, tmp_path):
    report = bench_onnx_file(classifier_onnx, parse_shapes("images:2x3x32x32"), backends=["onnxruntime"],
                             batch_sizes=[1, 3], out_dir=tmp_path / "bench", **QUICK)
    assert [row["batch"] for row in report["results"]] == [1, 3]


def test_bench_unresolved_dynamic_axis_is_named(classifier_onnx, tmp_path):
    with pytest.raises(InputError) as err:
        bench_onnx_file(classifier_onnx, {}, backends=["onnxruntime"], out_dir=tmp_path, **QUICK)
    message = str(err.value)
    assert "axis 2 ('height')" in message and "--shapes images:?x3x?x?" in message
    with pytest.raises(InputError, match="rank 3"):
        bench_onnx_file(classifier_onnx, parse_shapes("images:1x3x32"), backends=["onnxruntime"], out_dir=tmp_path)
    with pytest.raises(InputError, match="not NAME:AxBxC"):
        parse_shapes("images=1x3x32x32")


@pytest.mark.slow
@needs_extra(HAS_RTX, "needs TensorRT-RTX (pip install 'visionrt[rtx]')")
def test_build_bare_onnx_with_shapes(classifier_onnx, tmp_path):
    from visionrt.export.build import BuildError, build_onnx_file

    result = build_onnx_file(classifier_onnx, shapes={"images": (2, 3, 32, 32)}, flavour="tensorrt_rtx",
                             compute_capabilities=["8.6"])
    assert result.path == classifier_onnx.with_suffix(".rtx.engine") and result.path.stat().st_size > 1000
    assert result.facts["profile"]["images"]["max"] == [2, 3, 32, 32]
    log = json.loads(result.path.with_suffix(".build.json").read_text())
    assert log["facts"]["onnx_sha256"] == result.facts["onnx_sha256"]
    with pytest.raises(BuildError, match="dynamic axis 2"):
        build_onnx_file(classifier_onnx, flavour="tensorrt_rtx", out=tmp_path / "x.engine")


def test_import_classifier_then_predict_and_bench(classifier_onnx, photos, tmp_path):
    model_dir = import_onnx(classifier_onnx, "classify", tmp_path / "model", classes=CLASSES, image_size=(32, 32),
                            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    m = ModelDir.open(model_dir.root).manifest
    assert (m.input.height, m.input.width, m.outputs[0].name, m.outputs[0].shape) == (32, 32, "logits", ["batch", 3])
    assert model_dir.path("onnx").read_bytes() == classifier_onnx.read_bytes()
    with Predictor(model_dir.root) as predictor:
        results = predictor.predict(sorted(photos.iterdir()))
    assert len(results) == 3 and all(r.label in CLASSES for r in results)

    from visionrt.benchmarks.run import bench_model_dir

    bench_model_dir(model_dir, backends=["onnxruntime", "torch"], batch_sizes=[2], data_dir=photos,
                    out_dir=tmp_path / "bench", **QUICK)
    rows = json.loads((tmp_path / "bench" / "bench.json").read_text())["results"]
    modes = {(r["backend"], r["mode"]) for r in rows if r["median_ms"] is not None}
    assert {("onnxruntime-cpu", "model"), ("onnxruntime-cpu", "end-to-end")} <= modes
    assert any("no PyTorch weights: imported ONNX" in r["notes"] for r in rows if r["median_ms"] is None)


def test_import_refuses_outputs_that_break_the_contract(tmp_path):
    bad = tiny_classifier_onnx(tmp_path / "bad.onnx", logits_rank=3)
    with pytest.raises(ContractError) as err:
        import_onnx(bad, "classify", tmp_path / "model", classes=CLASSES, image_size=(32, 32))
    assert "\n" not in str(err.value) and "'logits' [batch, 3, 1] float32 has rank 3, not 2" in str(err.value)
    assert not (tmp_path / "model").exists()
    with pytest.raises(ContractError, match=r"axis 1 is 3, not 2 \(the number of classes\)"):
        import_onnx(tiny_classifier_onnx(tmp_path / "c.onnx"), "classify", tmp_path / "model", classes=CLASSES[:2],
                    image_size=(32, 32))
    with pytest.raises(ContractError, match="--image-size"):
        import_onnx(tmp_path / "c.onnx", "classify", tmp_path / "model", classes=CLASSES)


def test_detect_contract_names_the_missing_and_mismatched_outputs():
    def specs(k_scores):
        return [TensorSpec("num_detections", ("batch", 1), "int32"), TensorSpec("boxes", ("batch", 100, 4), "float32"),
                TensorSpec("scores", ("batch", k_scores), "float32"), TensorSpec("classes", ("batch", 100), "int64")]

    variant, outputs, bound = check_outputs("detect", specs(100), CLASSES, 96, 96, "m.onnx")
    assert bound["K"] == 100 and [o.shape for o in outputs][1] == ["batch", 100, 4]
    with pytest.raises(ContractError, match=r"'scores' \[batch, 50\] float32: axis 1 is 50, not 100 \(K elsewhere\)"):
        check_outputs("detect", specs(50), CLASSES, 96, 96, "m.onnx")
    with pytest.raises(ContractError, match="outputs num_detections, boxes, scores, classes missing"):
        check_outputs("detect", [TensorSpec("logits", ("batch", 3), "float32")], CLASSES, 96, 96, "m.onnx")


def test_cli_import_errors_are_one_line_exit_2(tmp_path, capsys):
    bad = tiny_classifier_onnx(tmp_path / "bad.onnx", logits_rank=3)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    code = cli.main(["import", str(bad), "--task", "classify", "--classes", str(names), "--image-size", "32x32",
                     "--out", str(tmp_path / "model")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "output contract" in err
    assert cli.main(["bench", str(bad), "--backends", "onnxruntime", "--seconds", "0.01"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dynamic axis" in err


# an nn.Module of one's own ----------------------------------------------------------------------
torch = require_or_skip("torch")
from visionrt.export.user_module import export_module  # noqa: E402


class TinyClassifier(torch.nn.Module):
    def __init__(self, classes: int = 3, logits_rank: int = 2):
        super().__init__()
        self.conv, self.fc, self.logits_rank = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8, classes), logits_rank

    def forward(self, x):
        logits = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
        return logits if self.logits_rank == 2 else logits[..., None]


class TinySegmenter(torch.nn.Module):
    """Stride-2 encoder, transposed-conv decoder: logits [N, C, H, W]."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.down = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = torch.nn.ConvTranspose2d(8, classes, 2, stride=2)

    def forward(self, x):
        return {"logits": self.up(torch.relu(self.down(x)))}


def make_classifier():
    """The CLI's --module factory in these tests."""
    torch.manual_seed(0)
    return TinyClassifier()


def test_export_own_classifier_with_parity_on_photos(photos, tmp_path):
    model_dir = export_module(make_classifier(), "classify", tmp_path / "mine", classes=CLASSES, image_size=(48, 48),
                              mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), data=photos)
    m = ModelDir.open(model_dir.root).manifest
    assert m.parity["onnxruntime-cpu"]["passed"] and m.parity["onnxruntime-cpu"]["samples"] == 3
    assert "images from" in m.parity["onnxruntime-cpu"]["on"]
    for key in ("onnx", "weights", "parity"):
        model_dir.path(key)  # present, sha256 as recorded
    with Predictor(model_dir.root) as predictor:
        assert predictor.predict(photos / "chelsea.png")[0].label in CLASSES


def test_export_own_segmenter_with_parity_on_photos(photos, tmp_path):
    torch.manual_seed(0)
    classes = ["background", "cat", "other"]
    model_dir = export_module(TinySegmenter(), "segment", tmp_path / "seg", classes=classes, image_size=(64, 64),
                              data=photos)
    m = model_dir.manifest
    assert m.outputs[0].shape == ["batch", 3, "height", "width"] and len(m.postprocess["palette"]) == 3
    assert all(report["passed"] for report in m.parity.values())
    with Predictor(model_dir.root) as predictor:
        result = predictor.predict(photos / "coffee.jpg")[0]
    assert result.class_map.shape == (80, 120)  # back at the photo's own size


def test_export_refuses_a_module_that_breaks_the_contract(tmp_path):
    with pytest.raises(ContractError) as err:
        export_module(TinyClassifier(logits_rank=3), "classify", tmp_path / "m", classes=CLASSES, image_size=(32, 32))
    assert "\n" not in str(err.value) and "has rank 3, not 2" in str(err.value)
    with pytest.raises(ContractError, match="axis 1 is 3, not 5"):
        export_module(TinyClassifier(), "classify", tmp_path / "m", classes=CLASSES + ["a", "b"], image_size=(32, 32))
    assert not (tmp_path / "m").exists()


def test_cli_export_module_errors_are_one_line_exit_2(tmp_path, capsys):
    out = str(tmp_path / "m")
    for argv, expected in ((["--module", "no_such_package.models:make", "--task", "classify"], "cannot import"),
                           (["--module", f"{__name__}:make_classifier"], "needs --task"),
                           (["--module", f"{__name__}:make_classifier", "--task", "classify", "--weights",
                             str(tmp_path / "missing.safetensors")], "does not exist")):
        assert cli.main(["export", *argv, "--out", out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
