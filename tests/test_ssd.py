"""SSD: default boxes, box coding with variances, matching, hard-negative mining (fast); a tiny
training exported with its parity checked, both variants (slow)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require_or_skip
from test_detect import needs_rtx, tiny_detect_data, train_tiny  # noqa: F401  (tiny_detect_data: a fixture)
from visionrt.runtime.manifest import ModelDir
from visionrt.runtime.predictor import Predictor
from visionrt.runtime.tasks import architectures
from visionrt.runtime.tasks import detect as runtime_detect
from visionrt.train.models.detection.box_coder import BoxCoder
from visionrt.train.models.detection.default_boxes import default_boxes, shapes
from visionrt.train.models.detection.matcher import BACKGROUND
from visionrt.train.models.detection.ssd import SSD, SSDConfig
from visionrt.train.models.detection.ssd_loss import hard_negatives, match, ssd_loss

SCALES = (0.2, 0.4, 0.6, 0.8)


# default boxes -------------------------------------------------------------------------------------
def test_default_boxes_count_k_per_cell_on_every_map():
    boxes = default_boxes([(4, 6), (2, 3), (1, 2)], 64, 96, SCALES, (2.0, 3.0))
    assert boxes.shape == ((4 * 6 + 2 * 3 + 1 * 2) * 6, 4)
    assert default_boxes([(3, 3)], 30, 30, (0.2, 0.4), ()).shape == (9 * 2, 4)   # ratio 1 and the extra scale
    with pytest.raises(ValueError, match="3 feature maps take 4 scales"):
        default_boxes([(4, 6), (2, 3), (1, 2)], 64, 96, SCALES[:3], (2.0,))


def test_default_boxes_are_centred_on_their_cells_with_ssd_sizes():
    boxes = default_boxes([(4, 6), (2, 3)], 64, 96, SCALES[:3], (2.0,))    # k = 4
    centres, sizes = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    k = 4
    # map 0 (stride 16): row 1, column 2 is cell 8; map 1 (stride 32) starts after 24 cells
    torch.testing.assert_close(centres[8 * k:9 * k], torch.tensor([[40.0, 24.0]]).expand(k, 2))
    torch.testing.assert_close(centres[24 * k + 4 * k], torch.tensor([48.0, 48.0]))   # map 1, row 1, column 1
    s, extra, r = 0.2, math.sqrt(0.2 * 0.4), math.sqrt(2.0)
    expected = torch.tensor([[s * 96, s * 64], [extra * 96, extra * 64], [s * r * 96, s / r * 64],
                             [s / r * 96, s * r * 64]])
    torch.testing.assert_close(sizes[:k], expected)
    torch.testing.assert_close(sizes[24 * k:24 * k + 2], torch.tensor([[0.4 * 96, 0.4 * 64],
                                                                       [math.sqrt(0.24) * 96, math.sqrt(0.24) * 64]]))
    assert len(shapes(SCALES, (2.0, 3.0), 0)) == 6


def test_ssd_outputs_one_candidate_per_default_box():
    model = SSD(3, SSDConfig(widths=(8, 16, 16), extras=(16, 16), head=16, aspect_ratios=(2.0, 3.0),
                             nms_in_graph=False)).eval()
    boxes, scores = model(torch.randn(2, 3, 64, 96))
    count = (8 * 12 + 4 * 6 + 2 * 3) * 6       # strides 8, 16, 32; 6 boxes per cell
    assert boxes.shape == (2, count, 4) and scores.shape == (2, count, 3)
    assert (boxes[..., 0::2] >= 0).all() and (boxes[..., 0::2] <= 96).all() and (boxes[..., 1::2] <= 64).all()
    assert (scores.sum(-1) < 1).all()           # the background's share is left out


# box coding ----------------------------------------------------------------------------------------
def test_variance_coding_round_trips_and_scales_the_offsets():
    coder = SSD(2, SSDConfig(widths=(8, 8), extras=(8, 8), head=8)).coder
    defaults = torch.tensor([[10.0, 10, 30, 50], [0, 0, 8, 8]])
    boxes = torch.tensor([[12.0, 8, 35, 47], [1, 2, 9, 12]])
    deltas = coder.encode(boxes, defaults)
    torch.testing.assert_close(coder.decode(deltas, defaults), boxes)
    plain = BoxCoder().encode(boxes, defaults)
    torch.testing.assert_close(deltas, plain / torch.tensor([0.1, 0.1, 0.2, 0.2]))


# matching and mining -------------------------------------------------------------------------------
def test_every_object_gets_its_best_default_box_even_below_the_threshold():
    defaults = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [40, 40, 60, 60], [45, 45, 60, 60]])
    gt = torch.tensor([[0.0, 0, 14, 14],           # IoU 0.49 with box 0, 0.49 with box 1: best-box only
                       [40, 40, 60, 60]])          # IoU 1 with box 2, 0.5625 with box 3
    matched = match(gt, defaults)
    assert matched.tolist() == [0, BACKGROUND, 1, 1]
    assert match(torch.zeros(0, 4), defaults).tolist() == [BACKGROUND] * 4


def test_default_boxes_at_iou_half_or_more_match_their_best_object():
    defaults = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 4.9], [30, 30, 40, 40]])
    gt = torch.tensor([[0.0, 0, 10, 10], [30, 30, 40, 40]])
    assert match(gt, defaults).tolist() == [0, 0, BACKGROUND, 1]    # IoU 1, 0.5, 0.49, 1


def test_hard_negatives_are_three_per_positive_of_highest_loss():
    loss = torch.tensor([[0.1, 5.0, 0.3, 0.9, 0.2, 0.8, 0.7, 0.05],
                         [9.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]])
    positive = torch.zeros(2, 8, dtype=torch.bool)
    positive[0, 1] = True                       # the highest loss is a positive: not a negative
    negative = hard_negatives(loss, positive, 3.0)
    assert negative[0].nonzero().flatten().tolist() == [3, 5, 6]
    assert not negative[1].any()                # no positives, no negatives (SSD's rule)
    positive[1, :3] = True                      # 3 positives want 9 negatives; 5 there: all taken
    assert hard_negatives(loss, positive, 3.0)[1].tolist() == [False] * 3 + [True] * 5


def test_ssd_loss_counts_positives_and_mined_negatives_only():
    """With all-zero logits each kept box costs log(C + 1): the class term is (1 + 3) × that per positive."""
    defaults = torch.tensor([[0.0, 0, 10, 10]] + [[20.0 + 4 * i, 20, 30 + 4 * i, 30] for i in range(9)])
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    losses = ssd_loss(torch.zeros(1, 10, 4), torch.zeros(1, 10, 4), defaults, targets, coder)
    torch.testing.assert_close(losses["ssd_class"], torch.tensor(4 * math.log(4)))
    torch.testing.assert_close(losses["ssd_box"], torch.tensor(0.0))    # the default box is the object


def test_ssd_loss_learns_one_batch():
    torch.manual_seed(0)
    model = SSD(3, SSDConfig(widths=(8, 16, 16), extras=(16, 16), head=16))
    images = torch.randn(2, 3, 48, 48)
    targets = [{"boxes": torch.tensor([[4.0, 4, 14, 22], [26, 16, 44, 40]]), "labels": torch.tensor([0, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]   # no objects
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(12):
        losses = model(images, targets)
        loss = sum(losses.values())
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert set(losses) == {"ssd_class", "ssd_box"} and loss.item() < 0.3 * first


def test_ssd_is_in_the_catalogue_with_and_without_nms_in_the_graph():
    from visionrt.train.tasks.detect import default_postprocess

    assert {"ssd", "ssd_raw"} <= set(architectures("detect"))
    assert default_postprocess("ssd")["nms"] == "graph" and default_postprocess("ssd_raw")["nms"] == "runtime"


# a tiny training, exported (slow) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ssd(tiny_detect_data, tmp_path_factory) -> ModelDir:  # noqa: F811
    return train_tiny("detect", "ssd", tiny_detect_data, tmp_path_factory.mktemp("models") / "ssd")


@pytest.fixture(scope="module")
def tiny_ssd_raw(tiny_detect_data, tmp_path_factory) -> ModelDir:  # noqa: F811
    return train_tiny("detect", "ssd_raw", tiny_detect_data, tmp_path_factory.mktemp("models") / "ssd_raw")

def test_ssd_quick_run_has_its_own_settings_and_flags_still_win():
    from visionrt.train.tasks import configure

    yolo, ssd = configure("detect"), configure("detect", model="ssd")
    assert (ssd.epochs, ssd.lr, ssd.batch_size) == (30, 0.003, 16) != (yolo.epochs, yolo.lr, yolo.batch_size)
    assert configure("detect", model="ssd_raw").epochs == 30
    assert configure("detect", model="ssd", epochs=3).epochs == 3
    assert configure("detect", quick=False, model="ssd").epochs == configure("detect", quick=False).epochs


@pytest.mark.slow
def test_ssd_exports_nms_in_the_graph_with_parity_in_both_flavours(tiny_ssd):
    m = tiny_ssd.manifest
    assert m.postprocess["nms"] == "graph" and [o.name for o in m.outputs] == list(runtime_detect.DETECTION_OUTPUTS)
    parity = m.parity["onnxruntime-cpu"]
    assert parity["passed"] and parity["postprocessed"]["passed"]
    require_or_skip("onnxruntime_extensions")
    from visionrt.export.stage import TRT_FLAVOUR_RUNNER
    from visionrt.export.trt_flavour import plugin_ops

    onnx = require_or_skip("onnx")
    assert plugin_ops(onnx.load(str(tiny_ssd.path("onnx_trt")))) == ["EfficientNms"]
    assert m.parity[TRT_FLAVOUR_RUNNER]["passed"] and m.parity[TRT_FLAVOUR_RUNNER]["postprocessed"]["passed"]


@pytest.mark.slow
def test_ssd_raw_leaves_nms_to_the_runtime(tiny_ssd_raw):
    m = tiny_ssd_raw.manifest
    assert m.postprocess["nms"] == "runtime"
    assert [o.name for o in m.outputs] == list(runtime_detect.CANDIDATE_OUTPUTS)
    assert m.parity["onnxruntime-cpu"]["passed"] and not tiny_ssd_raw.has("onnx_trt")
    onnx = require_or_skip("onnx")
    ops = {n.op_type for n in onnx.load(str(tiny_ssd_raw.path("onnx"))).graph.node}
    assert "EfficientNms" not in ops and "NonMaxSuppression" not in ops
    image = sorted((Path(m.model["dataset"]) / "images" / "test").glob("*.png"))[0]
    with Predictor(tiny_ssd_raw) as predictor:
        result = predictor.predict(image, score_threshold=0.0, iou_threshold=0.3, max_detections=10)[0]
    assert len(result) == 10 and np.isfinite([d.box for d in result]).all()


@pytest.mark.slow
@needs_rtx
def test_ssd_raw_builds_on_tensorrt_rtx(tiny_ssd_raw):
    from visionrt.export.build import build

    result = build(tiny_ssd_raw, flavour="tensorrt_rtx", max_batch=4, opt_batch=2)
    assert [t["name"] for t in result.facts["outputs"]] == list(runtime_detect.CANDIDATE_OUTPUTS)


@pytest.mark.slow
def test_both_ssd_variants_serve_what_the_predictor_finds(tiny_ssd, tiny_ssd_raw):
    """`visionrt serve` with both SSDs: each answers a PNG with the Predictor's detections (NMS in the
    graph and NMS in the runtime alike), and a drawn picture on request."""
    from fastapi.testclient import TestClient

    from visionrt.runtime.server.app import ServerSettings, create_app
    from visionrt.runtime.server.repository import ModelRepository

    image = sorted((Path(tiny_ssd.manifest.model["dataset"]) / "images" / "test").glob("*.png"))[0]
    repository = ModelRepository.load([f"ssd={tiny_ssd.root}", f"ssd_raw={tiny_ssd_raw.root}"])
    with TestClient(create_app(repository, ServerSettings())) as client:
        for name, model_dir in (("ssd", tiny_ssd), ("ssd_raw", tiny_ssd_raw)):
            with Predictor(model_dir) as predictor:
                expected = predictor.predict(image, score_threshold=0.05, max_detections=10)[0].to_dict()
            response = client.post(f"/v1/models/{name}/predict?score_threshold=0.05&max_detections=10",
                                   content=image.read_bytes())
            assert response.status_code == 200, response.text
            served = response.json()["results"][0]
            assert served["count"] == expected["count"] > 0
            assert [d["label"] for d in served["detections"]] == [d["label"] for d in expected["detections"]]
            np.testing.assert_allclose([d["box"] for d in served["detections"]],
                                       [d["box"] for d in expected["detections"]], atol=1e-3)
            picture = client.post(f"/v1/models/{name}/predict?draw=1", content=image.read_bytes())
            assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
