"""Run the TensorRT-flavoured ONNX in onnxruntime, the plugin ops backed by their NumPy references.

This proves a TensorRT-flavoured graph's wiring on a machine without TensorRT. It needs the
optional ``onnxruntime-extensions`` (Python functions as onnxruntime ops) and ``onnx`` (to
rewrite the file). The extensions run Python ops only in their own domain
``ai.onnx.contrib``, so the model is run from a copy whose ``visionrt`` nodes are moved there::

    ort_path = write_for_onnxruntime("model.trt.onnx", tmp_dir / "model.trt.ort.onnx")
    runner = OnnxRuntimeRunner(ort_path, session_setup=session_setup())

Limits: float32 only (the extensions' Python ops take no float16; a float16 op aborts the
process), CPU provider only, every attribute present on each node (``PluginOp.make_node`` and the
graph pass write them all), and each output is copied through Python lists: a check, not a fast path.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

from .. import atomic
from ..errors import BackendUnavailable
from .registry import DOMAIN, PluginOp, plugins

#: The only domain onnxruntime-extensions registers Python ops in.
PYOP_DOMAIN = "ai.onnx.contrib"

_INSTALL = "pip install onnxruntime-extensions onnx"


def session_setup() -> Callable[[Any], None]:
    """A ``session_setup`` for :class:`OnnxRuntimeRunner` that makes every plugin op available."""
    library = _register_ops()
    return lambda options: options.register_custom_ops_library(library)


def for_onnxruntime(model):
    """A copy of ``model`` (an ``onnx.ModelProto``) with its ``visionrt`` nodes in :data:`PYOP_DOMAIN`."""
    copy = type(model)()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if node.domain == DOMAIN:
            node.domain = PYOP_DOMAIN
    for opset in copy.opset_import:
        if opset.domain == DOMAIN:
            opset.domain, opset.version = PYOP_DOMAIN, 1
    return copy


def write_for_onnxruntime(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Write :func:`for_onnxruntime` of the ONNX file ``source`` to ``destination``; returns it."""
    try:
        import onnx
    except ImportError as err:
        raise BackendUnavailable("running the TensorRT-flavoured ONNX in onnxruntime needs the onnx package",
                                 fix=_INSTALL) from err
    destination = Path(destination)
    atomic.write_bytes(destination, for_onnxruntime(onnx.load(os.fspath(source))).SerializeToString())
    return destination


@functools.cache
def _register_ops() -> str:
    """Register every plugin op with onnxruntime-extensions once; returns its library path."""
    try:
        import onnxruntime_extensions as ext
    except ImportError as err:
        raise BackendUnavailable("running visionrt plugin ops in onnxruntime needs onnxruntime-extensions",
                                 fix=_INSTALL) from err
    types = {"T": ext.PyCustomOpDef.dt_float, "int64": ext.PyCustomOpDef.dt_int64,
             "int32": ext.PyCustomOpDef.dt_int32}
    for op in plugins().values():
        ext.onnx_op(op_type=op.name,
                    inputs=[types[port.dtype] for port in op.inputs],
                    outputs=[types[port.dtype] for port in op.outputs],
                    attrs={a.name: ext.PyCustomOpDef.dt_float if a.type is float else ext.PyCustomOpDef.dt_int64
                           for a in op.attributes})(_compute(op))
    return ext.get_library_path()


def _compute(op: PluginOp) -> Callable[..., Any]:
    def compute(*arrays, **attributes):
        outputs = op.run(*arrays, **attributes)
        return outputs if len(outputs) > 1 else outputs[0]

    compute.__name__ = op.name
    return compute
