"""PyTorch ops of the plugin ops (namespace ``visionrt``), with the semantics of their NumPy
references in ``visionrt.runtime.plugins``, fake implementations for tracing, backward where
models train through them, and export to the portable ONNX (:func:`export_with_ops`).
"""
from .max_unpool import max_pool2d_with_indices, max_unpool2d, max_unpool2d_size
from .nms import efficient_nms
from .onnx_export import define_visionrt_functions, export_with_ops, translation_table
from .roi_align import roi_align
from .roi_pool import roi_pool

__all__ = ["define_visionrt_functions", "efficient_nms", "export_with_ops", "max_pool2d_with_indices", "max_unpool2d",
           "max_unpool2d_size", "roi_align", "roi_pool", "translation_table"]
