"""Portable ONNX -> TensorRT-flavoured ONNX: the ops TensorRT lacks become ``visionrt`` plugin nodes.

=================================================  =====================================
portable ONNX (standard ops)                       TensorRT flavour (``visionrt`` domain)
=================================================  =====================================
MaxRoiPool                                         RoiPool2d
RoiAlign (opset 10 or 16)                          RoiAlign2d
MaxPool whose ``Indices`` output is used           MaxPool2dWithIndices
MaxUnpool                                          MaxUnpool2d (output size fixed here)
``visionrt::EfficientNms`` defined by a function   EfficientNms plugin (definition dropped)
=================================================  =====================================

The NMS contract: NMS reaches the portable ONNX only as ``visionrt::EfficientNms`` nodes that
the file defines as model-local functions in standard ops (NonMaxSuppression + TopK, see
``runtime/plugins/nms``; ``visionrt.train.ops.export_with_ops`` writes them). The pass keeps each
node, checks its limits and drops the definitions, so TensorRT takes the plugin, with the same
fixed-size outputs (``num_detections [B, 1]``, ``boxes [B, K, 4]``, ``scores [B, K]``,
``classes [B, K]``). No subgraph is pattern-matched; a bare NonMaxSuppression, whose output size
depends on the data, is refused. Limits are enforced here, with :class:`PluginError`.
Only the main graph is rewritten (not If/Loop bodies).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import onnx
from onnx import helper, shape_inference

from ..runtime import atomic
from ..runtime.errors import ArtifactError, PluginError
from ..runtime.plugins import registry
from ..runtime.plugins.op import DOMAIN, PLUGIN_VERSION

_NMS_FIX = ("build the model's NMS with visionrt.train.ops.efficient_nms (fixed-size outputs) and export "
            "with visionrt.train.ops.export_with_ops")


def to_trt_flavour(model: onnx.ModelProto) -> onnx.ModelProto:
    """The TensorRT-flavoured copy of the portable ``model``."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    shapes = _static_shapes(model)
    nodes = []
    for node in model.graph.node:
        rewrite = _CONVERSIONS.get((node.domain or "", node.op_type))
        try:
            nodes.append(rewrite(node, opset, shapes) if rewrite else node)
        except PluginError as err:
            raise PluginError(f"node '{node.name}' ({node.op_type}): {err.args[0]}", fix=err.fix) from None
    flavour = onnx.ModelProto()
    flavour.CopyFrom(model)
    del flavour.graph.node[:]
    flavour.graph.node.extend(nodes)
    _drop_unused(flavour.graph)
    kept = [f for f in flavour.functions if f.domain != DOMAIN]
    del flavour.functions[:]
    flavour.functions.extend(kept)
    if any(n.domain == DOMAIN for n in nodes) and not any(
            o.domain == DOMAIN for o in flavour.opset_import):
        flavour.opset_import.append(helper.make_opsetid(DOMAIN, int(PLUGIN_VERSION)))
    return flavour


def convert(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Write the TensorRT flavour of the portable ONNX file ``source`` to ``destination`` (atomically)."""
    destination = Path(destination)
    atomic.write_bytes(destination, to_trt_flavour(onnx.load(os.fspath(source))).SerializeToString())
    return destination


def plugin_ops(model: onnx.ModelProto) -> list[str]:
    """The plugin ops a (TensorRT-flavoured) model uses, sorted."""
    return sorted({n.op_type for n in model.graph.node if n.domain == DOMAIN})


# ---------------------------------------------------------------------------------------- per op
def _roi_pool(node, opset, shapes):
    a = _attributes(node)
    pooled = a.get("pooled_shape")
    if pooled is None or len(pooled) != 2:
        raise PluginError(f"MaxRoiPool needs pooled_shape of 2 numbers, got {pooled}")
    return _plugin("RoiPool2d", node, pooled_height=pooled[0], pooled_width=pooled[1],
                   spatial_scale=a.get("spatial_scale", 1.0))


def _roi_align(node, opset, shapes):
    a = _attributes(node)
    # opset 10 RoiAlign has no coordinate_transformation_mode and behaves as output_half_pixel
    coordinates = _text(a.get("coordinate_transformation_mode", "half_pixel" if opset >= 16 else "output_half_pixel"))
    mode = _text(a.get("mode", "avg"))
    if mode not in ("avg", "max") or coordinates not in ("half_pixel", "output_half_pixel"):
        raise PluginError(f"RoiAlign mode '{mode}' / coordinate_transformation_mode '{coordinates}' unknown")
    return _plugin("RoiAlign2d", node, output_height=a.get("output_height", 1), output_width=a.get("output_width", 1),
                   sampling_ratio=a.get("sampling_ratio", 0), spatial_scale=a.get("spatial_scale", 1.0),
                   mode_max=mode == "max", half_pixel=coordinates == "half_pixel")


def _max_pool(node, opset, shapes):
    if len(node.output) < 2 or not node.output[1]:
        return node  # without Indices TensorRT has MaxPool
    return _plugin("MaxPool2dWithIndices", node, **_pooling(node, "MaxPool"))


def _max_unpool(node, opset, shapes):
    dims = shapes.get(node.output[0])
    if dims is None or len(dims) != 4 or not all(isinstance(d, int) for d in dims[2:]):
        raise PluginError(f"MaxUnpool needs a static output height and width, got {dims}",
                          fix="export the model with a fixed input height and width")
    inputs = list(node.input[:2])  # the output size becomes attributes
    return _plugin("MaxUnpool2d", node, inputs=inputs, output_height=dims[2], output_width=dims[3],
                   **_pooling(node, "MaxUnpool"))


def _efficient_nms(node, opset, shapes):
    attributes = {k: v for k, v in _attributes(node).items() if k not in ("plugin_namespace", "plugin_version")}
    return _plugin("EfficientNms", node, **attributes)


def _bare_nms(node, opset, shapes):
    raise PluginError("a NonMaxSuppression outside visionrt::EfficientNms: its output size depends on the data, "
                      "which the TensorRT flavour does not take", fix=_NMS_FIX)


_CONVERSIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("", "MaxRoiPool"): _roi_pool,
    ("", "RoiAlign"): _roi_align,
    ("", "MaxPool"): _max_pool,
    ("", "MaxUnpool"): _max_unpool,
    ("", "NonMaxSuppression"): _bare_nms,
    (DOMAIN, "EfficientNms"): _efficient_nms,
}


# ---------------------------------------------------------------------------------------- helpers
def _plugin(name: str, node, inputs=None, **attributes):
    """The plugin node standing for ``node``: same name, inputs and outputs, checked attributes."""
    return registry.get(name).make_node(inputs if inputs is not None else node.input, node.output,
                                        name=node.name or None, **attributes)


def _pooling(node, op_type: str) -> dict[str, int]:
    """MaxPool/MaxUnpool attributes as the plugins' scalars, refusing what they do not take."""
    a = _attributes(node)
    kernel = a.get("kernel_shape", [])
    if len(kernel) != 2:
        raise PluginError(f"{op_type} plugin is 2-D, kernel_shape is {kernel}")
    strides, pads = a.get("strides", [1, 1]), a.get("pads", [0, 0, 0, 0])
    unsupported = {name: value for name, value, default in (
        ("auto_pad", _text(a.get("auto_pad", "NOTSET")), "NOTSET"), ("ceil_mode", a.get("ceil_mode", 0), 0),
        ("storage_order", a.get("storage_order", 0), 0), ("dilations", list(a.get("dilations", [1, 1])), [1, 1]))
        if value != default}
    if unsupported:
        raise PluginError(f"{op_type} with {unsupported} is not supported by the plugin",
                          fix="use explicit pads, ceil_mode 0, storage_order 0 and dilations 1")
    return dict(kernel_h=kernel[0], kernel_w=kernel[1], stride_h=strides[0], stride_w=strides[1],
                pad_top=pads[0], pad_left=pads[1], pad_bottom=pads[2], pad_right=pads[3])


def _attributes(node) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _drop_unused(graph) -> None:
    """Remove nodes and initializers nothing uses any more (e.g. MaxUnpool's output_shape)."""
    def names_used(g):
        used = {o.name for o in g.output}
        for node in g.node:
            used.update(node.input)
            for a in node.attribute:
                for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    used |= names_used(sub)
        return used

    while True:
        used = names_used(graph)
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _static_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Tensor name -> dims (int, or the symbolic name / None) from ONNX shape inference with data propagation."""
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except shape_inference.InferenceError as err:
        raise ArtifactError(f"ONNX shape inference fails on the portable model: {err}",
                            fix="the file is not a valid ONNX model; re-export it") from err
    infos = list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)
    return {v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in v.type.tensor_type.shape.dim]
            for v in infos if v.type.tensor_type.HasField("shape")}
