"""The PyTorch ops equal the NumPy references, have correct gradients and export to the standard ops."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from visionrt.runtime.errors import InputError
from visionrt.runtime.plugins.max_unpool.reference import max_pool_with_indices, max_unpool
from visionrt.runtime.plugins.nms.reference import efficient_nms as efficient_nms_reference
from visionrt.runtime.plugins.roi_align.reference import roi_align as roi_align_reference
from visionrt.runtime.plugins.roi_pool.reference import max_roi_pool
from visionrt.train import ops


def _random_rois(rng, count, batch, height, width, scale):
    corners = rng.uniform(-4, 1.3 * max(height, width), (count, 4)) / scale
    return np.concatenate([rng.integers(0, batch, (count, 1)), corners], axis=1)


# ----------------------------------------------------------------------------- forward = reference
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roi_pool_forward_equals_reference(dtype):
    rng = np.random.default_rng(10)
    for _ in range(150):
        n, c, h, w = (int(v) for v in rng.integers(1, [3, 4, 16, 16]))
        pooled, scale = tuple(int(p) for p in rng.integers(1, 7, 2)), float(rng.choice([1.0, 0.5, 0.3]))
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        rois = _random_rois(rng, int(rng.integers(0, 6)), n, h, w, scale).astype(dtype)
        got = ops.roi_pool(torch.from_numpy(x), torch.from_numpy(rois), *pooled, scale)
        np.testing.assert_array_equal(got.numpy(), max_roi_pool(x, rois, pooled, scale))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roi_align_forward_equals_reference(dtype):
    rng = np.random.default_rng(11)
    for case in range(150):
        n, c, h, w = (int(v) for v in rng.integers(1, [3, 4, 14, 14]))
        attributes = (int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(0, 3)),
                      float(rng.choice([1.0, 0.5, 0.3])), ("avg", "max")[case % 2],
                      ("half_pixel", "output_half_pixel")[case // 2 % 2])
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        rois = _random_rois(rng, int(rng.integers(0, 6)), n, h, w, attributes[3])
        got = ops.roi_align(torch.from_numpy(x), torch.from_numpy(rois[:, 1:].astype(dtype)),
                            torch.from_numpy(rois[:, 0].astype(np.int64)), *attributes)
        np.testing.assert_array_equal(got.numpy(), roi_align_reference(x, rois[:, 1:].astype(dtype),
                                                                       rois[:, 0].astype(np.int64), *attributes))


def test_max_pool_and_unpool_forward_equal_reference():
    rng = np.random.default_rng(12)
    for _ in range(200):
        kernel = [int(k) for k in rng.integers(1, 4, 2)]
        stride = [int(s) for s in rng.integers(1, 4, 2)]
        pads = [int(rng.integers(0, k)) for k in kernel + kernel]
        h = int(rng.integers(max(kernel[0] - pads[0] - pads[2], 1), 12))
        w = int(rng.integers(max(kernel[1] - pads[1] - pads[3], 1), 12))
        x = rng.integers(-3, 4, (int(rng.integers(1, 3)), int(rng.integers(1, 4)), h, w)).astype(np.float32)
        y, indices = ops.max_pool2d_with_indices(torch.from_numpy(x), kernel, stride, pads)
        want_y, want_indices = max_pool_with_indices(x, kernel, stride, pads)
        np.testing.assert_array_equal(y.numpy(), want_y)
        np.testing.assert_array_equal(indices.numpy(), want_indices)  # ONNX's flat N*C*H*W indices
        np.testing.assert_array_equal(ops.max_unpool2d(y, indices, kernel, stride, pads, [h, w]).numpy(),
                                      max_unpool(want_y, want_indices, kernel, stride, pads, x.shape))


def test_efficient_nms_forward_equals_reference():
    rng = np.random.default_rng(13)
    for case in range(300):
        batch, boxes, classes = int(rng.integers(1, 3)), int(rng.integers(0, 30)), int(rng.integers(1, 5))
        corners = rng.uniform(0, 20, (batch, boxes, 4)).astype(np.float32)
        scores = rng.integers(0, 6, (batch, boxes, classes)).astype(np.float32) / 5  # ties
        if case % 2:
            corners, scores = np.round(corners), rng.random((batch, boxes, classes)).astype(np.float32)
        arguments = (float(rng.choice([-np.inf, 0.0, 0.3])), float(rng.choice([0.0, 0.5, 1.0])),
                     int(rng.choice([1, 5, 20])), int(rng.choice([1, 7, 4096])), bool(rng.integers(0, 2)))
        got = ops.efficient_nms(torch.from_numpy(corners), torch.from_numpy(scores), *arguments)
        for g, w in zip(got, efficient_nms_reference(corners, scores, *arguments)):
            np.testing.assert_array_equal(g.numpy(), w)


def test_efficient_nms_compares_scores_with_the_threshold_in_float32():
    """A score equal to the float32 threshold is not above it (as onnxruntime's float32 compare)."""
    boxes = torch.tensor([[[0.0, 0, 1, 1], [5, 5, 6, 6]]])
    scores = torch.tensor([[[0.3], [0.31]]])
    num, _, _, _ = ops.efficient_nms(boxes, scores, 0.3, 0.5, 4)
    assert num.tolist() == [[1]]
    assert efficient_nms_reference(boxes.numpy(), scores.numpy(), 0.3, 0.5, 4, 4096)[0].tolist() == [[1]]


def test_ops_refuse_bad_batch_indices():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(InputError):
        ops.roi_pool(x, torch.tensor([[1.0, 0, 0, 2, 2]]), 2, 2)
    with pytest.raises(InputError):
        ops.roi_align(x, torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([3]))


# ----------------------------------------------------------------------------- gradients
ROIS = torch.tensor([[0, 1, 1, 5, 5], [1, 0, 2, 8, 6], [0, 3, 3, 3.4, 3.2], [1, -5, -5, -1, -1], [1, 2, 1, 30, 6]],
                    dtype=torch.float64)


def test_roi_pool_gradcheck():
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ops.roi_pool(x, ROIS, 3, 2, 0.9), (x,), fast_mode=True)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("coordinates", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_gradcheck(mode, coordinates, sampling_ratio):
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    batch_indices = ROIS[:, 0].long()
    assert torch.autograd.gradcheck(
        lambda x: ops.roi_align(x, ROIS[:, 1:], batch_indices, 3, 2, sampling_ratio, 0.8, mode, coordinates), (x,),
        fast_mode=True)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_ops_full_gradcheck_on_a_small_map(mode):
    """Every column of the Jacobian (``fast_mode`` above checks random projections)."""
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 1, 4, 4.5], [1, 2, 0, 5, 3], [1, -2, -1, 2, 6]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: ops.roi_pool(x, rois, 2, 3), (x,))
    assert torch.autograd.gradcheck(lambda x: ops.roi_align(x, rois[:, 1:], rois[:, 0].long(), 2, 2, 2, 1.0, mode), (x,))


def test_max_pool_and_unpool_gradcheck():
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    pooling = ([3, 2], [2, 2], [1, 0, 1, 1])  # overlapping windows, asymmetric pads
    assert torch.autograd.gradcheck(lambda x: ops.max_pool2d_with_indices(x, *pooling)[0], (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda x: ops.max_unpool2d(*ops.max_pool2d_with_indices(x, *pooling), *pooling, [7, 8]),
                                    (x,), fast_mode=True)


def test_models_train_through_the_ops():
    """A loss over every differentiable op reaches the convolution's weights."""
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(2, 2, 8, 8)
    features = conv(x)
    pooled, indices = ops.max_pool2d_with_indices(features, [2, 2], [2, 2], [0, 0, 0, 0])
    unpooled = ops.max_unpool2d(pooled, indices, [2, 2], [2, 2], [0, 0, 0, 0], [8, 8])
    rois = ROIS.float()
    loss = (ops.roi_pool(unpooled, rois, 2, 2).sum()
            + ops.roi_align(features, rois[:, 1:], rois[:, 0].long(), 2, 2, 2).sum())
    loss.backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- export
class _OneOp(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _export_and_run(fn, args):
    """Export ``fn`` alone, return (the ONNX model, its outputs in onnxruntime, torch's outputs)."""
    model = ops.export_with_ops(_OneOp(fn).eval(), args)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    with torch.no_grad():
        expected = fn(*args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    return model, session.run(None, feed), [e.numpy() for e in expected]


def _op_types(model):
    return {(n.domain, n.op_type) for n in model.graph.node}


@pytest.fixture(scope="module")
def feature_map():
    return torch.randn(2, 3, 11, 13)


def test_roi_pool_exports_to_max_roi_pool(feature_map):
    rois = torch.tensor([[0, 1, 2, 18, 15], [1, -3, 4, 9, 30], [0, 6, 6, 2, 2]], dtype=torch.float32)
    model, got, want = _export_and_run(lambda x, r: ops.roi_pool(x, r, 3, 4, 0.5), (feature_map, rois))
    assert ("", "MaxRoiPool") in _op_types(model)
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("coordinates", ["half_pixel", "output_half_pixel"])
def test_roi_align_exports_to_roi_align(feature_map, mode, coordinates):
    rois = torch.tensor([[1, 2, 18, 15], [-3, 4, 9, 30], [6, 6, 2, 2]], dtype=torch.float32)
    fn = lambda x, r, b: ops.roi_align(x, r, b, 3, 2, 0, 0.5, mode, coordinates)  # noqa: E731
    model, got, want = _export_and_run(fn, (feature_map, rois, torch.tensor([0, 1, 1])))
    node = next(n for n in model.graph.node if n.op_type == "RoiAlign")
    assert any(o.domain in ("", "ai.onnx") and o.version >= 16 for o in model.opset_import)
    assert {a.name for a in node.attribute} >= {"mode", "coordinate_transformation_mode"}
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)


def test_max_pool_and_unpool_export_to_standard_ops(feature_map):
    pooling = ([3, 2], [2, 2], [1, 0, 1, 1])
    fn = lambda x: ops.max_unpool2d(*ops.max_pool2d_with_indices(x, *pooling), *pooling, [11, 13])  # noqa: E731
    model, got, want = _export_and_run(lambda x: (fn(x), ops.max_pool2d_with_indices(x, *pooling)[1]), (feature_map,))
    pool = next(n for n in model.graph.node if n.op_type == "MaxPool")
    assert len([o for o in pool.output if o]) == 2 and ("", "MaxUnpool") in _op_types(model)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_efficient_nms_exports_to_a_defined_visionrt_node(class_agnostic):
    rng = np.random.default_rng(14)
    boxes = torch.from_numpy(np.round(rng.uniform(0, 30, (2, 40, 4))).astype(np.float32))
    scores = torch.from_numpy((rng.integers(0, 8, (2, 40, 3)) / 7).astype(np.float32))
    fn = lambda b, s: ops.efficient_nms(b, s, 0.2, 0.45, 15, 50, class_agnostic)  # noqa: E731
    model, got, want = _export_and_run(fn, (boxes, scores))
    node = next(n for n in model.graph.node if n.op_type == "EfficientNms")
    assert node.domain == "visionrt" and node.overload == ("class_agnostic" if class_agnostic else "")
    body = {n.op_type for f in model.functions if f.overload == node.overload for n in f.node}
    assert "NonMaxSuppression" in body and all(f.domain == "visionrt" for f in model.functions)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
