"""The TensorRT-flavoured ONNX runs in onnxruntime (plugin ops backed by the references) and matches
the portable ONNX; the graph pass enforces the plugins' limits; the plugin registry is consistent."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from visionrt.export.trt_flavour import convert, plugin_ops, to_trt_flavour
from visionrt.runtime.backends.onnxruntime import OnnxRuntimeRunner
from visionrt.runtime.errors import BackendUnavailable, PluginError
from visionrt.runtime.plugins import onnxruntime_ops, plugin_table, plugins
from visionrt.runtime.plugins.nms.onnx_node import MAX_NMS_CANDIDATES, MAX_NMS_OUTPUT_BOXES
from visionrt.train import ops

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "runtime" / "plugins"


class AllOps(torch.nn.Module):
    """Every plugin op once, NMS twice: class-agnostic in the middle (its boxes feed RoIAlign, as
    RPN proposals do) and class-aware at the end. Odd input size: the unpooling needs its size."""

    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.mid = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.box = torch.nn.Conv2d(8, 4, 1)
        self.cls = torch.nn.Conv2d(8, classes, 1)
        self.register_buffer("rois", torch.tensor([[0, 0, 0, 40, 30], [1, 8, 4, 30, 36], [1, 20, 20, 4, 6]],
                                                  dtype=torch.float32))

    def forward(self, image):
        features = torch.relu(self.stem(image))                              # [B, 8, 19, 23]
        pooled, indices = ops.max_pool2d_with_indices(features, [2, 2], [2, 2], [0, 0, 0, 0])
        unpooled = ops.max_unpool2d(torch.relu(self.mid(pooled)), indices, [2, 2], [2, 2], [0, 0, 0, 0], [19, 23])
        roi_pooled = ops.roi_pool(unpooled, self.rois, 3, 3, 0.5)
        roi_aligned = ops.roi_align(unpooled, self.rois[:, 1:], self.rois[:, 0].long(), 2, 3, 2, 0.5)
        batch, _, height, width = unpooled.shape
        boxes = (torch.sigmoid(self.box(unpooled)) * 40).flatten(2).transpose(1, 2)  # [B, H*W, 4]
        scores = torch.sigmoid(self.cls(unpooled)).flatten(2).transpose(1, 2)      # [B, H*W, C]
        _, proposals, _, _ = ops.efficient_nms(boxes, scores, 0.3, 0.6, 6, 200, True)
        image_of = torch.arange(batch).repeat_interleave(6)
        proposal_features = ops.roi_align(unpooled, proposals.reshape(-1, 4), image_of, 2, 2, 2, 0.5, "max")
        detections = ops.efficient_nms(boxes, scores, 0.4, 0.5, 10, 300, False)
        return (unpooled, indices, roi_pooled, roi_aligned, proposal_features) + detections


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Portable and TensorRT-flavoured files of :class:`AllOps`, the inputs and torch's outputs."""
    folder = tmp_path_factory.mktemp("all_ops")
    model = AllOps().eval()
    image = torch.randn(2, 3, 19, 23)
    portable = folder / "model.onnx"
    ops.export_with_ops(model, (image,), portable)
    trt = convert(portable, folder / "model.trt.onnx")
    with torch.no_grad():
        expected = [t.numpy() for t in model(image)]
    return portable, trt, {"image": image.numpy()}, expected


def _run_portable(path, feed):
    with OnnxRuntimeRunner(path) as runner:
        return list(runner.infer(feed).values())


def _run_trt_flavour(path, feed):
    ort_copy = onnxruntime_ops.write_for_onnxruntime(path, path.with_suffix(".ort.onnx"))
    with OnnxRuntimeRunner(ort_copy, session_setup=onnxruntime_ops.session_setup()) as runner:
        return list(runner.infer(feed).values())


def test_portable_onnx_uses_standard_ops_and_matches_torch(exported):
    portable, _, feed, expected = exported
    model = onnx.load(portable)
    types = {(n.domain, n.op_type) for n in model.graph.node}
    assert {("", "MaxPool"), ("", "MaxUnpool"), ("", "MaxRoiPool"), ("", "RoiAlign")} <= types
    assert {n.op_type for f in model.functions for n in f.node} >= {"NonMaxSuppression", "TopK"}
    assert all(n.domain == "" for f in model.functions for n in f.node)  # the definitions: standard ops only
    for got, want in zip(_run_portable(portable, feed), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_trt_flavour_has_plugin_nodes_only_where_tensorrt_lacks_ops(exported):
    _, trt, _, _ = exported
    model = onnx.load(trt)
    onnx.checker.check_model(model)
    onnx.checker.check_model(onnx.load(exported[0]))
    assert plugin_ops(model) == sorted(plugins())
    standard = {n.op_type for n in model.graph.node if n.domain == ""}
    assert not standard & {"MaxRoiPool", "RoiAlign", "MaxUnpool", "NonMaxSuppression", "MaxPool"}
    assert not model.functions
    for node in model.graph.node:
        if node.domain == "visionrt":
            attributes = {a.name: a for a in node.attribute}
            assert attributes.pop("plugin_namespace").s == b"visionrt"
            assert attributes.pop("plugin_version").s == b"1"
            declared = {a.name: a.type for a in plugins()[node.op_type].attributes}
            assert {name: a.type for name, a in attributes.items()} == {
                name: onnx.AttributeProto.FLOAT if t is float else onnx.AttributeProto.INT for name, t in declared.items()}


def test_trt_flavour_runs_in_onnxruntime_and_matches_portable(exported):
    portable, trt, feed, _ = exported
    portable_outputs = _run_portable(portable, feed)
    trt_outputs = _run_trt_flavour(trt, feed)
    assert len(trt_outputs) == len(portable_outputs) == 9
    num_detections, boxes, scores, classes = trt_outputs[5:]
    assert num_detections.shape == (2, 1) and boxes.shape == (2, 10, 4) and scores.shape == classes.shape == (2, 10)
    assert num_detections.dtype == classes.dtype == np.int32 and num_detections.min() > 0
    for got, want in zip(trt_outputs, portable_outputs):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_trt_flavour_keeps_a_dynamic_batch(tmp_path):
    from torch.export import Dim

    image = torch.randn(3, 3, 19, 23)
    model = ops.export_with_ops(AllOps().eval(), (image,), dynamic_shapes=({0: Dim("batch", max=8)},))
    onnx.save(to_trt_flavour(model), tmp_path / "dynamic.trt.onnx")
    outputs = _run_trt_flavour(tmp_path / "dynamic.trt.onnx", {"image": image.numpy()})
    with torch.no_grad():
        expected = AllOps().eval()(image)
    assert outputs[5].shape == (3, 1)
    np.testing.assert_array_equal(outputs[5], expected[5].numpy())


# ----------------------------------------------------------------------------- limits and refusals
def _graph(nodes, inputs, outputs, opset=16):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("visionrt", 1)])
    model.ir_version = 10
    return model


def _nms_model(**attributes):
    node = helper.make_node("EfficientNms", ["boxes", "scores"], ["n", "b", "s", "c"], domain="visionrt",
                            name="nms", **attributes)
    return _graph([node], [("boxes", TensorProto.FLOAT, [1, 8, 4]), ("scores", TensorProto.FLOAT, [1, 8, 2])],
                  [("n", TensorProto.INT32, None), ("b", TensorProto.FLOAT, None), ("s", TensorProto.FLOAT, None),
                   ("c", TensorProto.INT32, None)])


@pytest.mark.parametrize("attributes, message", [
    (dict(max_output_boxes=MAX_NMS_OUTPUT_BOXES + 1, pre_nms_top_k=MAX_NMS_CANDIDATES), "max_output_boxes"),
    (dict(max_output_boxes=10, pre_nms_top_k=MAX_NMS_CANDIDATES + 1), "pre_nms_top_k"),
    (dict(max_output_boxes=100, pre_nms_top_k=50), "exceeds pre_nms_top_k"),
    (dict(max_output_boxes=10, iou_threshold=1.5), "iou_threshold"),
    (dict(max_output_boxes=10, class_agnostic=2), "0 or 1"),
])
def test_pass_enforces_nms_limits(attributes, message):
    attributes = {"score_threshold": 0.1, "iou_threshold": 0.5, **attributes}
    with pytest.raises(PluginError, match=message) as raised:
        to_trt_flavour(_nms_model(**attributes))
    assert "node 'nms'" in str(raised.value)


def test_pass_accepts_the_largest_nms():
    model = to_trt_flavour(_nms_model(score_threshold=0.1, iou_threshold=0.5, max_output_boxes=MAX_NMS_OUTPUT_BOXES,
                                      pre_nms_top_k=MAX_NMS_CANDIDATES))
    assert plugin_ops(model) == ["EfficientNms"]


def test_pass_refuses_a_bare_non_max_suppression():
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["selected"])
    model = _graph([node], [("boxes", TensorProto.FLOAT, [1, 8, 4]), ("scores", TensorProto.FLOAT, [1, 2, 8])],
                   [("selected", TensorProto.INT64, None)])
    with pytest.raises(PluginError, match="data") as raised:
        to_trt_flavour(model)
    assert "efficient_nms" in raised.value.fix


@pytest.mark.parametrize("attributes, message", [
    (dict(kernel_shape=[2, 2], dilations=[2, 2]), "dilations"),
    (dict(kernel_shape=[2, 2], ceil_mode=1), "ceil_mode"),
    (dict(kernel_shape=[2, 2], auto_pad="SAME_UPPER"), "auto_pad"),
    (dict(kernel_shape=[2, 2, 2]), "2-D"),
    (dict(kernel_shape=[2, 2], pads=[2, 0, 0, 0]), "smaller than the kernel"),
])
def test_pass_refuses_max_pool_the_plugin_does_not_take(attributes, message):
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], **attributes)
    model = _graph([node], [("x", TensorProto.FLOAT, [1, 1, 8, 8])], [("y", TensorProto.FLOAT, None),
                                                                      ("i", TensorProto.INT64, None)])
    with pytest.raises(PluginError, match=message):
        to_trt_flavour(model)


def test_pass_keeps_max_pool_without_indices():
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], dilations=[2, 2])
    model = _graph([node], [("x", TensorProto.FLOAT, [1, 1, 8, 8])], [("y", TensorProto.FLOAT, None)])
    assert to_trt_flavour(model).graph.node[0] == node


def test_pass_needs_a_static_unpool_size():
    node = helper.make_node("MaxUnpool", ["y", "i"], ["x"], kernel_shape=[2, 2], strides=[2, 2])
    model = _graph([node], [("y", TensorProto.FLOAT, [1, 1, "h", 4]), ("i", TensorProto.INT64, [1, 1, "h", 4])],
                   [("x", TensorProto.FLOAT, None)])
    with pytest.raises(PluginError, match="static"):
        to_trt_flavour(model)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 3
    model.graph.input[1].type.tensor_type.shape.dim[2].dim_value = 3
    unpool = to_trt_flavour(model).graph.node[0]
    assert unpool.op_type == "MaxUnpool2d"
    assert {a.name: a.i for a in unpool.attribute if a.name.startswith("output")} == {"output_height": 6,
                                                                                       "output_width": 8}


@pytest.mark.parametrize("opset, attributes, half_pixel, mode_max", [
    (10, {}, 0, 0),                                                   # opset 10: output_half_pixel semantics
    (16, {}, 1, 0),
    (16, {"coordinate_transformation_mode": "output_half_pixel", "mode": "max"}, 0, 1),
])
def test_pass_maps_roi_align_attributes(opset, attributes, half_pixel, mode_max):
    node = helper.make_node("RoiAlign", ["x", "rois", "b"], ["y"], output_height=7, sampling_ratio=2, **attributes)
    model = _graph([node], [("x", TensorProto.FLOAT, [1, 4, 8, 8]), ("rois", TensorProto.FLOAT, [3, 4]),
                            ("b", TensorProto.INT64, [3])], [("y", TensorProto.FLOAT, None)], opset=opset)
    plugin = {a.name: helper.get_attribute_value(a) for a in to_trt_flavour(model).graph.node[0].attribute}
    assert (plugin["half_pixel"], plugin["mode_max"], plugin["output_height"], plugin["sampling_ratio"]) == (
        half_pixel, mode_max, 7, 2)


# ----------------------------------------------------------------------------- registry and runtime
def test_registry_lists_every_op_with_limits():
    rows = {row["name"]: row for row in plugin_table()}
    assert set(rows) == {"RoiPool2d", "RoiAlign2d", "EfficientNms", "MaxPool2dWithIndices", "MaxUnpool2d"}
    assert all(row["domain"] == "visionrt" and row["version"] == "1" for row in rows.values())
    assert str(MAX_NMS_CANDIDATES) in rows["EfficientNms"]["limits"]
    assert str(MAX_NMS_OUTPUT_BOXES) in rows["EfficientNms"]["limits"]


@pytest.mark.parametrize("name", sorted(plugins()))
def test_each_op_readme_documents_its_interface(name):
    op = plugins()[name]
    text = (PLUGIN_DIR / op.folder / "README.md").read_text()
    for heading in ("## Semantics", "## Inputs", "## Outputs", "## Attributes", "## Limits", "## Verified"):
        assert heading in text
    for item in [name, *(a.name for a in op.attributes), *(p.name for p in op.inputs + op.outputs)]:
        assert item in text, f"{item} missing from {op.folder}/README.md"


def test_missing_onnxruntime_extensions_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)
    monkeypatch.setattr(onnxruntime_ops, "_register_ops", onnxruntime_ops._register_ops.__wrapped__)
    with pytest.raises(BackendUnavailable, match="onnxruntime-extensions") as raised:
        onnxruntime_ops.session_setup()
    assert "pip install onnxruntime-extensions" in raised.value.fix


def test_plugin_ops_check_limits_when_run():
    with pytest.raises(PluginError, match="pooled_height"):
        plugins()["RoiPool2d"].run(np.zeros((1, 1, 4, 4), np.float32), np.zeros((0, 5), np.float32),
                                   pooled_height=0, pooled_width=2)
    trt = to_trt_flavour(_nms_model(score_threshold=0.0, iou_threshold=0.5, max_output_boxes=3, pre_nms_top_k=8))
    session = ort.InferenceSession(onnxruntime_ops.for_onnxruntime(trt).SerializeToString(), _options(),
                                   providers=["CPUExecutionProvider"])
    boxes = np.array([[[0, 0, 2, 2]] * 8], np.float32)
    num, _, _, classes = session.run(None, {"boxes": boxes, "scores": np.full((1, 8, 2), 0.5, np.float32)})
    assert num.tolist() == [[2]] and classes[0].tolist() == [0, 1, 0]  # one box per class survives


def _options():
    options = ort.SessionOptions()
    onnxruntime_ops.session_setup()(options)
    return options
