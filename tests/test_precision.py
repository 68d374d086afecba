"""Precision variants: fp16 and int8 files written and recorded, calibration reproducible, the
TensorRT int8 layout checked structurally, the runtime opening a precision, and bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from visionrt.runtime.errors import ArtifactError, InputError
from visionrt.runtime.manifest import ModelDir
from visionrt.runtime.precision import onnx_key, resolve_onnx_key

from conftest import HAS_RTX, needs_extra


@pytest.fixture(scope="module")
def precise_dir(tiny_model_dir, tiny_data, tmp_path_factory):
    """A copy of the tiny model with fp16 and int8 exported (the shared fixture stays fp32)."""
    from visionrt.export.precision import export_precisions

    root = tmp_path_factory.mktemp("precision") / "tiny"
    shutil.copytree(tiny_model_dir, root)
    export_precisions(ModelDir.open(root), tiny_data, ["fp16", "int8"])
    return root


def test_export_writes_each_precision_with_its_manifest_entry(precise_dir):
    model_dir = ModelDir.open(precise_dir)
    record = model_dir.manifest.precisions
    for key in ("onnx_fp16", "onnx_int8", "onnx_trt_int8", "calibration"):
        assert model_dir.path(key).is_file()  # listed, present, sha256 matches
    assert onnx.load(model_dir.path("onnx_fp16")).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in onnx.load(model_dir.path("onnx_fp16")).graph.initializer)
    assert record["calibration"]["count"] == 256 and record["calibration"]["seed"] == 0
    assert len(record["calibration"]["images_sha256"]) == 64
    int8 = record["int8"]["files"]["onnx_int8"]
    assert int8["kept_float_heads"], "the classifier's last Gemm stays float"
    for precision in ("fp16", "int8"):
        assert isinstance(record[precision]["passed"], bool)
        for entry in record[precision]["files"].values():
            assert "top1" in entry["accuracy"]["metrics"]
            assert entry["accuracy"]["metrics"]["top1"]["tolerance"] == pytest.approx(0.005)
    assert "onnxruntime-cpu-int8" in model_dir.manifest.parity


def test_output_head_is_not_quantised(precise_dir):
    model_dir = ModelDir.open(precise_dir)
    head = model_dir.manifest.precisions["int8"]["files"]["onnx_int8"]["kept_float_heads"][0]
    graph = onnx.load(model_dir.path("onnx_int8")).graph
    producers = {o: n for n in graph.node for o in n.output}
    node = next(n for n in graph.node if n.name == head)
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    assert any(n.op_type == "DequantizeLinear" for n in graph.node)


def test_tensorrt_layout_is_symmetric_and_the_check_fails_on_onnxruntimes(precise_dir):
    from visionrt.export.precision import tensorrt_layout_problems

    model_dir = ModelDir.open(precise_dir)
    trt_file = onnx.load(model_dir.path("onnx_trt_int8"))
    assert any(n.op_type == "QuantizeLinear" for n in trt_file.graph.node)
    assert tensorrt_layout_problems(trt_file) == []
    problems = tensorrt_layout_problems(onnx.load(model_dir.path("onnx_int8")))
    assert any("UINT8" in p for p in problems) and any("bias" in p for p in problems)


def test_calibration_is_reproducible(precise_dir, tiny_data, tmp_path):
    from visionrt.export import calibration

    first = json.loads((precise_dir / calibration.CACHE_FILE).read_text())
    again = tmp_path / "again"
    shutil.copytree(precise_dir, again)
    model_dir = ModelDir.open(again)
    model_dir.manifest.precisions.pop("calibration")  # force a fresh calibration
    cache, record = calibration.calibrate(model_dir, tiny_data)
    assert json.loads(cache.read_text()) == first
    assert record == ModelDir.open(precise_dir).manifest.precisions["calibration"]


def test_predictor_opens_each_precision(precise_dir, tiny_data):
    from visionrt.runtime.predictor import Predictor

    images = sorted((tiny_data / "images" / "test").glob("*.png"))[:16]
    labels = {}
    for precision in ("fp32", "fp16", "int8"):
        with Predictor(precise_dir, precision=precision) as predictor:
            assert predictor.runner.path.name == {"fp32": "model.onnx", "fp16": "model.fp16.onnx",
                                                  "int8": "model.int8.onnx"}[precision]
            labels[precision] = [r.index for r in predictor.predict(images)]
    assert np.mean(np.equal(labels["fp32"], labels["fp16"])) >= 0.9


def test_unknown_precision_is_refused(precise_dir, tiny_data):
    from visionrt.export.precision import export_precisions
    from visionrt.runtime.predictor import Predictor

    with pytest.raises(InputError, match="unknown precision 'int4'.*fp32, fp16, int8"):
        Predictor(precise_dir, precision="int4")
    with pytest.raises(InputError, match="unknown precision"):
        export_precisions(ModelDir.open(precise_dir), tiny_data, ["int4"])


def test_precision_not_exported_names_the_export_command(tiny_model_dir):
    from visionrt.runtime.predictor import Predictor

    with pytest.raises(ArtifactError, match=r"visionrt export .* --precision int8"):
        Predictor(tiny_model_dir, precision="int8")
    with pytest.raises(ArtifactError, match=r"--precision fp16"):
        resolve_onnx_key(ModelDir.open(tiny_model_dir), "fp16", "tensorrt")


def test_too_few_calibration_images(tmp_path):
    from PIL import Image

    from visionrt.export.calibration import sample_images
    from visionrt.runtime.manifest import InputSpec, Manifest

    (tmp_path / "images" / "train").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / "train" / f"{i}.png")
    manifest = Manifest("classify", {"arch": "resnet"}, ["a", "b"], InputSpec(height=8, width=8), [])
    with pytest.raises(InputError, match="at least 8 training images.*has 3"):
        sample_images(tmp_path, manifest)


@pytest.mark.parametrize("layout", ["imagefolder", "mask folder", "superres photos"])
def test_calibration_samples_the_training_images_of_every_layout(layout, tmp_path):
    from PIL import Image

    from visionrt.export.calibration import sample_images
    from visionrt.runtime.manifest import InputSpec, Manifest

    def image(path, size=(64, 48)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(path)

    task = {"imagefolder": "classify", "mask folder": "segment", "superres photos": "superres"}[layout]
    for i in range(10):
        if layout == "imagefolder":
            image(tmp_path / "train" / ("cat" if i % 2 else "dog") / f"{i}.jpg")
            image(tmp_path / "val" / "cat" / f"{i}.jpg")
        elif layout == "mask folder":
            image(tmp_path / "images" / "train" / f"{i}.jpg")
            image(tmp_path / "images" / "val" / f"{i}.jpg")
            (tmp_path / "masks" / "train").mkdir(parents=True, exist_ok=True)
        else:
            image(tmp_path / f"{i}.jpg")
    manifest = Manifest(task, {"arch": "x"}, [], InputSpec(height=8, width=8), [], postprocess={"scale": 2})
    chosen = sample_images(tmp_path, manifest, count=6)
    assert len(chosen) == 6 and all("val" not in p.parts for p in chosen)
    if layout == "superres photos":  # calibrated on the degraded inputs the model is given
        from visionrt.runtime.tasks import runtime_task

        low = runtime_task("superres").model_image(np.zeros((48, 64, 3), np.uint8), manifest)
        assert low.shape == (24, 32, 3)


def test_keys_follow_one_scheme():
    assert [onnx_key(p) for p in ("fp32", "fp16", "int8")] == ["onnx", "onnx_fp16", "onnx_int8"]
    assert [onnx_key(p, "tensorrt") for p in ("fp32", "fp16", "int8")] == ["onnx_trt", "onnx_trt_fp16",
                                                                          "onnx_trt_int8"]


@pytest.mark.slow
@needs_extra(HAS_RTX, "needs TensorRT-RTX (pip install 'visionrt[rtx]')")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_rtx_builds_each_precision(precise_dir, tmp_path, precision):
    from visionrt.export.build import build

    root = tmp_path / "tiny"
    shutil.copytree(precise_dir, root)
    result = build(root, flavour="tensorrt_rtx", precision=precision)
    assert result.key == f"rtx_{precision}"
    assert result.facts["precision"] == precision
    assert result.facts["onnx"] == {"fp16": "onnx_fp16", "int8": "onnx_trt_int8"}[precision]
    assert result.path.stat().st_size > 10_000


def test_bench_measures_each_precision_beside_its_accuracy(precise_dir, tiny_data, tmp_path):
    from visionrt.benchmarks.run import bench_model_dir

    root = tmp_path / "tiny"
    shutil.copytree(precise_dir, root)
    paths = bench_model_dir(ModelDir.open(root), backends=["onnxruntime"], batch_sizes=[1, 2], data_dir=tiny_data,
                            min_seconds=0.01, max_seconds=0.05, precisions=["fp32", "fp16", "int8"])
    report = json.loads(paths["json"].read_text())
    timed = {(r["precision"], r["mode"], r["batch"]) for r in report["results"] if r["median_ms"] is not None}
    assert {("int8", "model", 1), ("fp16", "model", 2), ("fp32", "end-to-end", 1)} <= timed
    assert report["reference"]["total_ms"] > 0
    fp16_notes = {r["notes"] for r in report["results"] if r["precision"] == "fp16"}
    assert fp16_notes and all(n.endswith("onnxruntime's CPU kernels compute fp16 as fp32 (+ casts)")
                              for n in fp16_notes)
    int8_accuracy = [a for a in report["accuracy"] if a["precision"] == "int8" and a["backend"] == "onnxruntime-cpu"]
    assert int8_accuracy and "top1 vs fp32" in int8_accuracy[0] and int8_accuracy[0]["verdict"] in ("PASS", "FAIL")
    markdown = paths["markdown"].read_text()
    assert "onnxruntime-cpu int8 / fp32 (resnet, model): batch 1 =" in markdown


# the verdict of a reduced precision -----------------------------------------------------------------
class Replayed:
    """A runner stand-in answering each feed (``{"image": indices}``) with the given outputs' rows."""

    def __init__(self, name: str, outputs: dict[str, np.ndarray]):
        self.name, self.outputs = name, outputs

    def infer(self, feed):
        return {key: value[feed["image"]] for key, value in self.outputs.items()}


def test_int8_detections_are_judged_on_map_and_their_comparison_recorded_as_figures():
    """What an SSD's int8 file does (measured: mAP50 -0.0001, matched scores up to 0.13 apart, no
    shown detection lost): the task metric within ``precision_tolerance`` is the verdict; the
    post-processed comparison, whose score criterion is fp32 parity's, is kept as figures without
    a ``passed`` of its own. Judged as fp32 the same outputs fail."""
    from test_detect import detections_output
    from visionrt.export.parity import check_parity
    from visionrt.runtime.manifest import InputSpec, Manifest
    from visionrt.runtime.tasks import detect

    classes, k = ["a", "b"], 4
    manifest = Manifest("detect", {"arch": "ssd"}, classes, InputSpec(height=96, width=96),
                        detect.detection_outputs(), detect.import_defaults(detect.GRAPH_NMS, classes, {"K": k}))
    truth = [[(10, 10, 40, 50, 0)], [(50, 50, 80, 90, 1), (5, 60, 30, 90, 0)], [(20, 20, 70, 60, 1)]]
    targets = np.array([{"image": {"id": i + 1, "width": 96, "height": 96}, "annotations": [
        {"image_id": i + 1, "category_id": c + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
         "iscrowd": 0} for x1, y1, x2, y2, c in boxes]} for i, boxes in enumerate(truth)], object)

    def outputs(score_shift: float, nudge: float, faint: bool) -> dict[str, np.ndarray]:
        """Each true box found (scores 0.9 down, shifted; boxes moved ``nudge`` px), plus a faint
        false detection under the score threshold where ``faint``."""
        found = [[(*np.add(box[:4], nudge), 0.9 - 0.1 * j + score_shift, box[4]) for j, box in enumerate(boxes)]
                 for boxes in truth]
        return detections_output([rows + ([(60, 5, 90, 30, 0.1, 0)] if faint else []) for rows in found], k)

    reference = Replayed("pytorch", outputs(0.0, 0.0, faint=True))
    int8 = Replayed("onnxruntime-cpu-int8", outputs(-0.08, 1.0, faint=False))
    feeds = [{"image": np.array([0, 1])}, {"image": np.array([2])}]

    def judged(candidate: Replayed, judge_outputs: bool, tolerance):
        return check_parity(reference, candidate, feeds, task_metric=lambda o: detect.evaluate(o, targets, manifest),
                            metric_tolerance=tolerance, judge_outputs=judge_outputs,
                            postprocessed=lambda ref, cand: detect.compare(ref, cand, targets, manifest))

    as_fp32 = judged(int8, True, detect.TASK.parity_tolerance)
    assert not as_fp32.passed and as_fp32.postprocessed["passed"] is False
    assert as_fp32.postprocessed["max_score_diff"] > detect.SCORE_TOLERANCE

    as_int8 = judged(int8, False, detect.TASK.precision_tolerance)
    assert as_int8.passed and "PASS" in as_int8.summary()
    assert as_int8.task["map50"]["difference"] <= as_int8.task["map50"]["tolerance"]
    assert "tolerance" not in as_int8.task["map"], "map is reported, not judged, at int8"
    post = as_int8.postprocessed
    assert "passed" not in post, "a reduced precision's report holds one verdict, its metric's"
    assert post["max_score_diff"] == pytest.approx(0.08, abs=1e-6) and post["shown_unmatched"] == 0
    assert (post["reference"], post["candidate"], post["matched"]) == (7, 4, 4)   # the faint one gone

    far = Replayed("onnxruntime-cpu-int8", outputs(-0.08, 20.0, faint=False))   # boxes off their objects
    lost = judged(far, False, detect.TASK.precision_tolerance)
    assert not lost.passed and lost.task["map50"]["difference"] > 0.02
