"""The visionrt plugin ops by name: :func:`plugins`, :func:`get`, and the table ``visionrt doctor`` shows.

The ops are declared in each folder's ``onnx_node.py`` (types in :mod:`.op`); this module
gathers them. Torch-free, numpy-only.
"""
from __future__ import annotations

import functools
from typing import Any

from ..errors import PluginError
from .max_unpool.onnx_node import MAX_POOL_WITH_INDICES, MAX_UNPOOL
from .nms.onnx_node import EFFICIENT_NMS
from .op import DOMAIN, PLUGIN_VERSION, PluginOp
from .roi_align.onnx_node import ROI_ALIGN
from .roi_pool.onnx_node import ROI_POOL


@functools.cache
def plugins() -> dict[str, PluginOp]:
    """Every plugin op by name (node op_type and TensorRT plugin name)."""
    return {op.name: op for op in (ROI_POOL, ROI_ALIGN, EFFICIENT_NMS, MAX_POOL_WITH_INDICES, MAX_UNPOOL)}


def get(name: str) -> PluginOp:
    """The plugin op called ``name``, or :class:`PluginError` naming the ones that exist."""
    try:
        return plugins()[name]
    except KeyError:
        raise PluginError(f"no visionrt plugin op '{name}'", fix=f"the plugin ops are {sorted(plugins())}") from None


def plugin_table() -> list[dict[str, Any]]:
    """One row per plugin op for ``visionrt doctor``: name, domain, version, what it replaces, limits."""
    return [{"name": op.name, "domain": DOMAIN, "version": PLUGIN_VERSION, "folder": op.folder,
             "replaces": op.replaces, "limits": "; ".join(op.limit_texts()) or "-"}
            for op in plugins().values()]
