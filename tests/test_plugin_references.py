"""The NumPy references of the plugin ops agree with onnxruntime's own standard ops.

Random cases come in groups that share an onnxruntime session (attributes are fixed per
session); every group draws fresh shapes and values. Edge cases are listed per op.
"""
from __future__ import annotations

import functools

import numpy as np
import onnxruntime as ort
import pytest

from conftest import require_or_skip

require_or_skip("onnx", reason="building the test graphs needs onnx (the train, rtx or ort-ext extra)")

from onnx import TensorProto, helper  # noqa: E402 (after the skip)

from visionrt.runtime.errors import InputError  # noqa: E402
from visionrt.runtime.plugins.max_unpool.reference import max_pool_with_indices, max_unpool, unpooled_size  # noqa: E402
from visionrt.runtime.plugins.nms.reference import efficient_nms, non_max_suppression  # noqa: E402
from visionrt.runtime.plugins.roi_align.reference import roi_align  # noqa: E402
from visionrt.runtime.plugins.roi_pool.reference import max_roi_pool  # noqa: E402

F32, F64, I64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64


@functools.cache
def _session(op_type: str, inputs: tuple, outputs: tuple, attributes: tuple = ()):
    """An onnxruntime session running one standard node; returns ``run(*arrays) -> list``."""
    node = helper.make_node(op_type, [n for n, _ in inputs], [n for n, _ in outputs], **dict(attributes))
    graph = helper.make_graph([node], op_type, [helper.make_tensor_value_info(n, t, None) for n, t in inputs],
                              [helper.make_tensor_value_info(n, t, None) for n, t in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda *arrays: session.run(None, {n: a for (n, _), a in zip(inputs, arrays)})


# ----------------------------------------------------------------------------- MaxRoiPool
def _ort_roi_pool(x, rois, pooled_shape, spatial_scale):
    run = _session("MaxRoiPool", (("x", F32), ("rois", F32)), (("y", F32),),
                   (("pooled_shape", tuple(int(p) for p in pooled_shape)), ("spatial_scale", float(spatial_scale))))
    return run(x, rois)[0]


def _random_rois(rng, count, batch, height, width, scale, columns):
    """RoIs in image coordinates, some outside the map, some rounded to halves (rounding ties)."""
    corners = rng.uniform(-4, 1.3 * max(height, width), (count, 4)) / scale
    if rng.random() < 0.3:
        corners = np.round(corners * 2) / 2
    if columns == 5:
        corners = np.concatenate([rng.integers(0, batch, (count, 1)), corners], axis=1)
    return corners.astype(np.float32)


def test_roi_pool_matches_onnxruntime_on_random_cases():
    rng = np.random.default_rng(0)
    cases = 0
    for _ in range(40):
        pooled = tuple(int(p) for p in rng.integers(1, 8, 2))
        scale = float(rng.choice([1.0, 0.5, 0.25, 1 / 16, 0.3, 2.0]))
        for _ in range(25):
            n, c = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            h, w = (int(s) for s in rng.integers(1, 20, 2))
            x = rng.standard_normal((n, c, h, w)).astype(np.float32)
            rois = _random_rois(rng, int(rng.integers(0, 8)), n, h, w, scale, columns=5)
            np.testing.assert_array_equal(max_roi_pool(x, rois, pooled, scale), _ort_roi_pool(x, rois, pooled, scale))
            cases += 1
    assert cases >= 1000


@pytest.mark.parametrize("rois", [
    np.zeros((0, 5)),                                   # no RoIs
    [[0, 2, 3, 9, 7], [1, 0, 0, 11, 8]],                # batch > 1, whole map
    [[0, -8, -8, -2, -2], [1, 30, 30, 40, 40]],         # wholly outside
    [[0, -3, -2, 4, 5], [0, 9, 6, 20, 20]],             # partly outside
    [[0, 5, 5, 5, 5], [1, 3.5, 2.5, 3.5, 2.5]],         # zero area (one cell), .5 rounding
    [[0, 9, 7, 2, 1], [1, 6, 1, 1, 6]],                 # reversed corners
], ids=["empty", "batch", "outside", "partly-outside", "zero-area", "reversed"])
@pytest.mark.parametrize("pooled", [(1, 1), (3, 2), (7, 7)], ids=str)
def test_roi_pool_edge_cases(rois, pooled):
    x = -np.abs(np.random.default_rng(1).standard_normal((2, 3, 9, 11))).astype(np.float32)  # negative features
    rois = np.asarray(rois, np.float32).reshape(-1, 5)
    np.testing.assert_array_equal(max_roi_pool(x, rois, pooled), _ort_roi_pool(x, rois, pooled, 1.0))


def test_roi_pool_rejects_a_batch_index_outside_the_input():
    x, rois = np.zeros((2, 1, 4, 4), np.float32), np.array([[2, 0, 0, 1, 1]], np.float32)
    with pytest.raises(InputError, match="batch"):
        max_roi_pool(x, rois, (2, 2))
    with pytest.raises(Exception):  # onnxruntime refuses it too
        _ort_roi_pool(x, rois, (2, 2), 1.0)


# ----------------------------------------------------------------------------- RoiAlign
def _ort_roi_align(x, rois, batch_indices, **attributes):
    t = F64 if x.dtype == np.float64 else F32
    run = _session("RoiAlign", (("x", t), ("rois", t), ("batch_indices", I64)), (("y", t),),
                   tuple(sorted(attributes.items())))
    return run(x, rois, batch_indices)[0]


def _roi_align_both(x, rois, batch_indices, **attributes):
    return roi_align(x, rois, batch_indices, **attributes), _ort_roi_align(x, rois, batch_indices, **attributes)


def test_roi_align_matches_onnxruntime_on_random_cases():
    rng = np.random.default_rng(2)
    cases = 0
    for group in range(48):
        attributes = dict(output_height=int(rng.integers(1, 6)), output_width=int(rng.integers(1, 6)),
                          sampling_ratio=int(rng.integers(0, 4)), spatial_scale=float(rng.choice([1.0, 0.5, 0.25, 0.3])),
                          mode=("avg", "max")[group % 2],
                          coordinate_transformation_mode=("half_pixel", "output_half_pixel")[group // 2 % 2])
        for _ in range(21):
            n, c = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            h, w = (int(s) for s in rng.integers(1, 16, 2))
            x = rng.standard_normal((n, c, h, w)).astype(np.float32)
            corners = _random_rois(rng, int(rng.integers(0, 6)), n, h, w, attributes["spatial_scale"], columns=4)
            rois = np.concatenate([np.minimum(corners[:, :2], corners[:, 2:]), np.maximum(corners[:, :2], corners[:, 2:])], 1)
            batch_indices = rng.integers(0, n, len(rois))
            ours, theirs = _roi_align_both(x, rois, batch_indices, **attributes)
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
            cases += 1
    assert cases >= 1000


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("coordinates", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("rois", [
    np.zeros((0, 4)),                                   # no RoIs
    [[-9, -9, -3, -3], [20, 20, 30, 30]],               # wholly outside
    [[-2, -3, 4, 5], [6, 5, 14, 12]],                   # partly outside
    [[3, 3, 3, 3], [2.5, 1, 2.5, 6]],                   # zero area
], ids=["empty", "outside", "partly-outside", "zero-area"])
def test_roi_align_edge_cases(mode, coordinates, rois):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 9))  # float64: onnxruntime's double kernel too
    rois = np.asarray(rois, np.float64).reshape(-1, 4)
    batch_indices = np.arange(len(rois)) % 2
    for sampling_ratio in (0, 2):
        ours, theirs = _roi_align_both(x, rois, batch_indices, output_height=3, output_width=2,
                                       sampling_ratio=sampling_ratio, mode=mode,
                                       coordinate_transformation_mode=coordinates)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_roi_align_reversed_corners():
    """output_half_pixel forces reversed RoIs to 1x1; half_pixel keeps the negative size, so the
    adaptive grid has no samples and the bin is 0 — where onnxruntime runs at all: with the grid
    negative along exactly one axis its sample buffer size overflows and it raises."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    rois = np.array([[6, 6, 2, 2], [6, 1, 2, 5], [1, 6, 5, 2]], np.float32)  # both axes, x only, y only
    batch_indices = np.zeros(3, np.int64)
    for mode in ("avg", "max"):
        ours, theirs = _roi_align_both(x, rois, batch_indices, output_height=2, output_width=2,
                                       mode=mode, coordinate_transformation_mode="output_half_pixel")
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
        ours = roi_align(x, rois, batch_indices, 2, 2, 0, 1.0, mode, "half_pixel")
        assert not ours[0].any() and not ours[1].any() and not ours[2].any()
        np.testing.assert_array_equal(ours[:1], _ort_roi_align(x, rois[:1], batch_indices[:1], output_height=2,
                                                                 output_width=2, mode=mode))
        for one_axis in (1, 2):
            with pytest.raises(Exception, match="overflow"):
                _ort_roi_align(x, rois[one_axis:one_axis + 1], batch_indices[:1], output_height=2,
                               output_width=2, mode=mode)


# ----------------------------------------------------------------------------- NonMaxSuppression
def _ort_nms(boxes, scores, max_output, iou_threshold, score_threshold, center_point_box=0):
    names = (("boxes", F32), ("scores", F32), ("max_output", I64), ("iou", F32), ("score", F32))
    arrays = [boxes, scores, np.array([max_output], np.int64), np.array([iou_threshold], np.float32)]
    if score_threshold is None:
        names = names[:4]
    else:
        arrays.append(np.array([score_threshold], np.float32))
    run = _session("NonMaxSuppression", names, (("selected", I64),), (("center_point_box", center_point_box),))
    return run(*arrays)[0]


def _random_detections(rng, batch, boxes, classes, ties):
    """Boxes (corners in any order, some degenerate) and scores (with ties when ``ties``)."""
    corners = rng.uniform(0, 20, (batch, boxes, 4)).astype(np.float32)
    if rng.random() < 0.5:
        corners = np.round(corners)  # zero-area boxes, exact IoU ties
    if ties:
        scores = rng.integers(0, 6, (batch, classes, boxes)).astype(np.float32) / 5
    else:
        scores = rng.random((batch, classes, boxes)).astype(np.float32)
    return corners, scores


def test_nms_matches_onnxruntime_on_random_cases():
    rng = np.random.default_rng(5)
    for case in range(1200):
        batch, classes = int(rng.integers(1, 4)), int(rng.integers(1, 6))
        boxes, scores = _random_detections(rng, batch, int(rng.integers(0, 40)), classes, ties=case % 2 == 0)
        center_point_box = int(rng.integers(0, 2))
        if center_point_box:
            boxes[..., 2:] = np.abs(boxes[..., 2:]) / 2
        max_output = int(rng.choice([0, 1, 3, 10, 100]))
        iou = float(rng.choice([0.0, 0.3, 0.5, 0.7, 1.0]))
        score = None if rng.random() < 0.2 else float(rng.choice([-np.inf, 0.0, 0.3, 0.6]))
        ours = non_max_suppression(boxes, scores, max_output, iou, score, center_point_box)
        theirs = _ort_nms(boxes, scores, max_output, iou, score, center_point_box)
        np.testing.assert_array_equal(ours, theirs, err_msg=f"case {case}")


@pytest.mark.parametrize("name, boxes, scores, max_output, iou, score", [
    ("no boxes", np.zeros((2, 0, 4)), np.zeros((2, 3, 0)), 10, 0.5, 0.0),
    ("all suppressed by score", [[[0, 0, 1, 1], [0, 0, 2, 2]]], [[[0.1, 0.2]]], 10, 0.5, 0.5),
    ("ties", [[[0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 6, 6], [0, 0, 1, 1]]], [[[0.5, 0.5, 0.5, 0.5]]], 10, 0.5, None),
    ("iou 0: any overlap suppresses", [[[0, 0, 4, 4], [3, 3, 8, 8], [3.99, 0, 9, 1], [4, 4, 5, 5]]],
     [[[0.9, 0.8, 0.7, 0.6]]], 10, 0.0, None),
    ("iou 1: nothing suppressed", [[[0, 0, 4, 4], [0, 0, 4, 4], [4, 4, 0, 0]]], [[[0.9, 0.8, 0.7]]], 10, 1.0, None),
    ("zero area and reversed", [[[2, 2, 2, 6], [6, 6, 2, 2], [2, 2, 6, 6], [3, 3, 3, 3]]],
     [[[0.9, 0.8, 0.7, 0.6]]], 10, 0.1, None),
    ("max output 0", [[[0, 0, 1, 1]]], [[[0.9]]], 0, 0.5, None),
])
def test_nms_edge_cases(name, boxes, scores, max_output, iou, score):
    boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, max_output, iou, score),
                                  _ort_nms(boxes, scores, max_output, iou, score))


def test_nms_many_classes_and_batches():
    rng = np.random.default_rng(6)
    boxes, scores = _random_detections(rng, 3, 60, 80, ties=False)
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, 5, 0.45, 0.2), _ort_nms(boxes, scores, 5, 0.45, 0.2))


def test_nms_rejects_an_iou_threshold_outside_0_1():
    with pytest.raises(InputError, match="iou_threshold"):
        non_max_suppression(np.zeros((1, 1, 4)), np.zeros((1, 1, 1)), 1, 1.5)


# ----------------------------------------------------------------------------- EfficientNms
def composed_efficient_nms(boxes, scores, score_threshold, iou_threshold, k, pre_nms_top_k, class_agnostic):
    """The fixed-size form from onnxruntime's NonMaxSuppression: top-k mask, NMS, per-image top-K."""
    batch, num_boxes, num_classes = scores.shape
    flat = scores.reshape(batch, -1)
    best = np.argsort(-flat, axis=1, kind="stable")[:, :pre_nms_top_k]
    masked = np.full_like(flat, -np.inf)
    np.put_along_axis(masked, best, np.take_along_axis(flat, best, axis=1), axis=1)
    if class_agnostic:  # one class over the (box, class) pairs
        selected = _ort_nms(np.repeat(boxes, num_classes, axis=1), masked[:, None, :], k, iou_threshold, score_threshold)
        picked = selected[:, 2]
    else:
        selected = _ort_nms(boxes, masked.reshape(scores.shape).transpose(0, 2, 1), k, iou_threshold, score_threshold)
        picked = selected[:, 2] * num_classes + selected[:, 1]
    out = (np.zeros((batch, 1), np.int32), np.zeros((batch, k, 4), boxes.dtype), np.zeros((batch, k), scores.dtype),
           np.zeros((batch, k), np.int32))
    for b in range(batch):
        mine = picked[selected[:, 0] == b]
        mine = mine[np.lexsort((mine, -flat[b, mine]))][:k]
        out[0][b] = len(mine)
        out[1][b, :len(mine)] = boxes[b, mine // num_classes]
        out[2][b, :len(mine)] = flat[b, mine]
        out[3][b, :len(mine)] = mine % num_classes
    return out


def test_efficient_nms_matches_onnxruntime_composition_on_random_cases():
    rng = np.random.default_rng(7)
    for case in range(1200):
        batch, num_boxes, classes = int(rng.integers(1, 4)), int(rng.integers(0, 40)), int(rng.integers(1, 6))
        boxes, scores = _random_detections(rng, batch, num_boxes, classes, ties=case % 2 == 0)
        scores = scores.transpose(0, 2, 1).copy()
        arguments = (float(rng.choice([-np.inf, 0.0, 0.3])), float(rng.choice([0.0, 0.3, 0.5, 1.0])),
                     int(rng.choice([1, 5, 20])), int(rng.choice([1, 7, 30, 4096])), bool(rng.integers(0, 2)))
        ours = efficient_nms(boxes, scores, *arguments)
        theirs = composed_efficient_nms(boxes, scores, *arguments)
        for got, want, name in zip(ours, theirs, ("num_detections", "boxes", "scores", "classes")):
            np.testing.assert_array_equal(got, want, err_msg=f"case {case} {name} {arguments}")


def test_efficient_nms_edge_cases():
    boxes = np.array([[[0, 0, 4, 4], [0, 0, 4, 4.2], [10, 10, 14, 14]]], np.float32)
    scores = np.array([[[0.9, 0.9], [0.9, 0.1], [0.2, 0.9]]], np.float32)  # [1, 3 boxes, 2 classes]
    num, out_boxes, out_scores, classes = efficient_nms(boxes, scores, 0.5, 0.5, 5, 4096)
    assert num.tolist() == [[3]]  # box 1 class 0 overlaps box 0 class 0; classes do not suppress each other
    assert classes[0, :3].tolist() == [0, 1, 1] and out_scores[0, :3].tolist() == pytest.approx([0.9] * 3)
    np.testing.assert_array_equal(out_boxes[0, :3], boxes[0, [0, 0, 2]])  # ties: lower box, then lower class
    assert not out_boxes[0, 3:].any() and not classes[0, 3:].any()
    num, _, _, classes = efficient_nms(boxes, scores, 0.5, 0.5, 5, 4096, class_agnostic=True)
    assert num.tolist() == [[2]] and classes[0, :2].tolist() == [0, 1]
    assert efficient_nms(boxes, scores, 0.95, 0.5, 5, 4096)[0].tolist() == [[0]]  # everything under threshold
    assert efficient_nms(boxes, scores, 0.5, 0.5, 1, 4096)[0].tolist() == [[1]]
    empty = efficient_nms(np.zeros((2, 0, 4), np.float32), np.zeros((2, 0, 3), np.float32), 0.0, 0.5, 4, 10)
    assert empty[0].tolist() == [[0], [0]] and empty[1].shape == (2, 4, 4)


# ----------------------------------------------------------------------------- MaxPool indices + MaxUnpool
def _ort_pool_unpool(x, kernel, strides, pads):
    """MaxPool's two outputs and MaxUnpool back to ``x.shape``. onnxruntime refuses the unpool when
    the *default* output size would not be positive even though ``output_shape`` is given: None then."""
    attributes = (("kernel_shape", kernel), ("strides", strides), ("pads", pads))
    y, indices = _session("MaxPool", (("x", F32),), (("y", F32), ("indices", I64)), attributes)(x)
    unpool = _session("MaxUnpool", (("y", F32), ("indices", I64), ("shape", I64)), (("x", F32),), attributes)
    default = [unpooled_size(y.shape[2 + i], kernel[i], strides[i], pads[i], pads[i + 2]) for i in (0, 1)]
    if min(default) < 1:
        with pytest.raises(Exception, match="not positive"):
            unpool(y, indices, np.array(x.shape, np.int64))
        return y, indices, None
    return y, indices, unpool(y, indices, np.array(x.shape, np.int64))[0]


def test_max_pool_indices_and_unpool_match_onnxruntime_on_random_cases():
    rng = np.random.default_rng(8)
    cases = 0
    for _ in range(40):
        kernel = tuple(int(k) for k in rng.integers(1, 4, 2))
        strides = tuple(int(s) for s in rng.integers(1, 4, 2))
        pads = tuple(int(rng.integers(0, k)) for k in kernel + kernel)
        for _ in range(25):
            n, c = int(rng.integers(1, 3)), int(rng.integers(1, 4))
            h = int(rng.integers(max(kernel[0] - pads[0] - pads[2], 1), 13))
            w = int(rng.integers(max(kernel[1] - pads[1] - pads[3], 1), 13))
            x = rng.integers(-3, 4, (n, c, h, w)).astype(np.float32)  # many ties
            y, indices = max_pool_with_indices(x, kernel, strides, pads)
            ort_y, ort_indices, ort_x = _ort_pool_unpool(x, kernel, strides, pads)
            np.testing.assert_array_equal(y, ort_y)
            np.testing.assert_array_equal(indices, ort_indices)
            unpooled = max_unpool(y, indices, kernel, strides, pads, x.shape)
            np.testing.assert_array_equal(unpooled, unpooled if ort_x is None else ort_x)
            np.testing.assert_array_equal(unpooled[unpooled != 0], x[unpooled != 0])  # maxima back in place
            cases += 1
    assert cases >= 1000


def test_max_unpool_default_output_shape_matches_onnxruntime():
    x = np.arange(2 * 3 * 6 * 8, dtype=np.float32).reshape(2, 3, 6, 8)[..., ::-1].copy()
    attributes = (("kernel_shape", (2, 2)), ("strides", (2, 2)), ("pads", (0, 0, 0, 0)))
    y, indices = max_pool_with_indices(x, (2, 2), (2, 2))
    theirs = _session("MaxUnpool", (("y", F32), ("indices", I64)), (("x", F32),), attributes)(y, indices)[0]
    np.testing.assert_array_equal(max_unpool(y, indices, (2, 2), (2, 2)), theirs)


def _onnx_reference_unpool(y, indices, output_shape):
    """ONNX's own reference implementation (``onnx.reference``) of MaxUnpool 2x2 stride 2."""
    from onnx import reference
    node = helper.make_node("MaxUnpool", ["y", "indices", "shape"], ["x"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph([node], "unpool", [helper.make_tensor_value_info(n, t, None) for n, t in
                                                 (("y", F32), ("indices", I64), ("shape", I64))],
                              [helper.make_tensor_value_info("x", F32, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    return reference.ReferenceEvaluator(model).run(None, {"y": y, "indices": indices, "shape": output_shape})[0]


def test_max_unpool_with_a_larger_output_shape_follows_onnxruntime_not_onnx_reference():
    """The disagreement, exactly (README "Semantics"): with ``output_shape`` larger than the default,
    onnxruntime reads the indices as flat over ``output_shape`` (as MaxPool of a tensor of that shape
    gives them); ONNX's reference and its backend test ``test_maxunpool_export_with_output_shape``
    read them as flat over the *default* shape and pad that result with zeros at the bottom and right.
    visionrt's reference, plugin kernel and torch op follow onnxruntime."""
    y = np.array([[[[5, 6], [7, 8]]]], np.float32)  # ONNX's backend test case
    indices = np.array([[[[5, 7], [13, 15]]]], np.int64)
    shape = np.array([1, 1, 5, 5], np.int64)
    attributes = (("kernel_shape", (2, 2)), ("strides", (2, 2)), ("pads", (0, 0, 0, 0)))
    ort_x = _session("MaxUnpool", (("y", F32), ("indices", I64), ("shape", I64)), (("x", F32),), attributes)(
        y, indices, shape)[0]
    ours = max_unpool(y, indices, (2, 2), (2, 2), output_shape=shape)
    np.testing.assert_array_equal(ours, ort_x)
    assert ours[0, 0].tolist() == [[0, 0, 0, 0, 0], [5, 0, 6, 0, 0], [0, 0, 0, 7, 0], [8, 0, 0, 0, 0], [0] * 5]

    onnx_x = _onnx_reference_unpool(y, indices, shape)
    assert onnx_x[0, 0].tolist() == [[0, 0, 0, 0, 0], [0, 5, 0, 6, 0], [0] * 5, [0, 7, 0, 8, 0], [0] * 5]
    padded_default = np.zeros((1, 1, 5, 5), np.float32)
    padded_default[..., :4, :4] = max_unpool(y, indices, (2, 2), (2, 2))
    np.testing.assert_array_equal(onnx_x, padded_default)

    # Why onnxruntime's reading: it inverts MaxPool on an odd-sized input, the reason output_shape exists.
    x = np.arange(25, 0, -1, dtype=np.float32).reshape(1, 1, 5, 5)  # each window's maximum is its top-left
    pooled, pool_indices = max_pool_with_indices(x, (2, 2), (2, 2))
    assert pool_indices.ravel().tolist() == [0, 2, 10, 12]
    ours = max_unpool(pooled, pool_indices, (2, 2), (2, 2), output_shape=x.shape)
    np.testing.assert_array_equal(np.argwhere(ours[0, 0]), [[0, 0], [0, 2], [2, 0], [2, 2]])
    np.testing.assert_array_equal(ours[ours != 0], x[ours != 0])
    onnx_x = _onnx_reference_unpool(pooled, pool_indices, np.array(x.shape, np.int64))
    np.testing.assert_array_equal(np.argwhere(onnx_x[0, 0]), [[0, 0], [0, 2], [2, 2], [3, 0]])  # misplaced
    with pytest.raises(IndexError):  # and an index past the default size (here 4x4 = 16) fails there
        _onnx_reference_unpool(y, np.array([[[[0, 2], [10, 24]]]], np.int64), shape)


def test_max_pool_documented_example():
    x = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 8, 7, 6], [5, 4, 3, 2]], np.float32)[None, None]
    y, indices = max_pool_with_indices(x, (2, 2), (2, 2))
    assert y[0, 0].tolist() == [[6, 8], [9, 7]]
    assert max_unpool(y, indices, (2, 2), (2, 2))[0, 0].tolist() == [[0, 0, 0, 0], [0, 6, 0, 8], [9, 0, 7, 0], [0, 0, 0, 0]]


def test_pooling_rejects_pads_as_large_as_the_kernel():
    with pytest.raises(InputError, match="pad"):
        max_pool_with_indices(np.zeros((1, 1, 4, 4), np.float32), (2, 2), (1, 1), (2, 0, 0, 0))


def test_max_pool_nan_and_minus_inf_windows_follow_pytorch():
    """The chosen semantics (kernel and reference): NaN wins, the last NaN of the window; a window
    of only -inf gives -inf at its first element inside the input, never a padded position."""
    inf, nan = np.inf, np.nan
    x = np.array([[-inf, -inf, 1, nan], [-inf, -inf, nan, 2], [nan, 3, -inf, -inf], [4, nan, -inf, -inf]],
                 np.float32)[None, None]
    y, indices = max_pool_with_indices(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(y[0, 0], [[-inf, nan], [nan, -inf]])
    assert indices[0, 0].tolist() == [[0, 6], [13, 10]]  # first element; last NaN (2 and 6: 6); last NaN; first
    # padded windows: the -inf of the padding never wins, the window's first element inside does
    y, indices = max_pool_with_indices(np.full((1, 1, 3, 3), -inf, np.float32), (2, 2), (2, 2), (1, 1, 1, 1))
    assert indices[0, 0].tolist() == [[0, 1], [3, 4]] and np.all(y == -inf)


def test_max_pool_special_values_match_pytorch_on_random_cases():
    torch = require_or_skip("torch")
    rng = np.random.default_rng(7)
    for _ in range(100):
        n, c, (h, w) = 2, 3, rng.integers(3, 9, 2)
        kernel = tuple(int(k) for k in rng.integers(1, 4, 2))
        strides = tuple(int(s) for s in rng.integers(1, 3, 2))
        pad = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        x = rng.choice([np.nan, -np.inf, -np.inf, 1.0, 2.0], size=(n, c, h, w)).astype(np.float32)
        y, indices = max_pool_with_indices(x, kernel, strides, (*pad, *pad))
        expected, plane_indices = torch.nn.functional.max_pool2d(torch.from_numpy(x), kernel, strides, pad,
                                                                  return_indices=True)
        np.testing.assert_array_equal(y, expected.numpy())  # NaN equals NaN here
        np.testing.assert_array_equal(indices, plane_indices.numpy() + np.arange(n * c).reshape(n, c, 1, 1) * h * w)
