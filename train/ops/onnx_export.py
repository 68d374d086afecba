"""Export models that use the visionrt ops to the portable ONNX.

``roi_pool``, ``roi_align``, ``max_pool2d_with_indices`` and ``max_unpool2d`` become the
standard MaxRoiPool, RoiAlign, MaxPool (two outputs) and MaxUnpool. ``efficient_nms`` becomes
a ``visionrt::EfficientNms`` node that the file also *defines*, as a model-local function in
standard ops (NonMaxSuppression + TopK, ``runtime/plugins/nms/onnx_node.py``): onnxruntime runs
the definition, and ``export/trt_flavour.py`` recognises the node by name and drops the
definition so that TensorRT takes the plugin. (``torch.onnx.export`` inlines every function
while converting opsets, so the definition is attached after export.)
"""
from __future__ import annotations

import functools
import os

import onnx
import torch

from ...runtime.plugins.op import DOMAIN, PLUGIN_VERSION
from ...runtime.plugins.nms.onnx_node import EFFICIENT_NMS, portable_functions
from .max_unpool import max_pool2d_with_indices_onnx, max_unpool2d_onnx
from .nms import efficient_nms_onnx
from .roi_align import roi_align_onnx
from .roi_pool import roi_pool_onnx


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``."""
    _register_schemas()
    ops = torch.ops.visionrt
    return {ops.roi_pool.default: roi_pool_onnx, ops.roi_align.default: roi_align_onnx,
            ops.max_pool2d_with_indices.default: max_pool2d_with_indices_onnx,
            ops.max_unpool2d.default: max_unpool2d_onnx, ops.efficient_nms.default: efficient_nms_onnx}


def export_with_ops(model: torch.nn.Module, args: tuple, path: str | os.PathLike | None = None,
                **kwargs) -> onnx.ModelProto:
    """``torch.onnx.export(model, args, dynamo=True, ...)`` with the visionrt ops, made portable;
    saved to ``path`` when given. ``kwargs`` go to ``torch.onnx.export``."""
    program = torch.onnx.export(model, args, dynamo=True, custom_translation_table=translation_table(), **kwargs)
    portable = define_visionrt_functions(program.model_proto)
    if path is not None:
        onnx.save(portable, os.fspath(path))
    return portable


def define_visionrt_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose ``visionrt::EfficientNms`` nodes are defined in standard ops."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == EFFICIENT_NMS.name]
    if not nodes:
        return model
    for node in nodes:
        agnostic = any(a.name == "class_agnostic" and a.i for a in node.attribute)
        node.overload = "class_agnostic" if agnostic else ""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    used = {n.overload for n in nodes}
    model.functions.extend(f for f in portable_functions(opset) if f.overload in used)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, int(PLUGIN_VERSION)))
    model.ir_version = max(model.ir_version, 10)  # function overloads
    return model


@functools.cache
def _register_schemas() -> None:
    """Make ``visionrt::EfficientNms`` known to onnx (onnxscript looks ops up there)."""
    if not onnx.defs.has(EFFICIENT_NMS.name, DOMAIN):
        onnx.defs.register_schema(EFFICIENT_NMS.onnx_schema())
