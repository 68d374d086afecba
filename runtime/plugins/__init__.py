"""Custom ops for TensorRT: RoI pooling, RoIAlign, NMS, max-pool indices and max-unpool.

One folder per op (``roi_pool``, ``roi_align``, ``nms``, ``max_unpool``) with its NumPy
reference, CUDA kernel, TensorRT registration, ONNX node definition and README;
:mod:`.op` defines what an op is, :mod:`.registry` lists them. Torch-free.
"""
from .op import DOMAIN, PLUGIN_VERSION, PluginOp
from .registry import get, plugin_table, plugins

__all__ = ["DOMAIN", "PLUGIN_VERSION", "PluginOp", "get", "plugin_table", "plugins"]
