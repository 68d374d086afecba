"""Precisions of a model directory and the manifest key of the ONNX file that holds each.

Precision lives in the ONNX: ``fp32`` is the exported file, ``fp16`` its float16 conversion
(float32 inputs and outputs), ``int8`` a static Q/DQ file calibrated on the task's training
images (``visionrt export MODEL --precision int8`` writes it). Each precision has two targets:

* ``portable``: what onnxruntime and OpenVINO run; for int8 onnxruntime's fast CPU layout
  (u8 activations, s8 per-channel weights);
* ``tensorrt``: what a TensorRT build parses; the TensorRT-flavoured graph (plugin nodes)
  where export wrote one, and for int8 the symmetric s8 layout (zero points 0, float bias).

Keys: ``onnx``, ``onnx_fp16``, ``onnx_int8`` (portable); ``onnx_trt``, ``onnx_trt_fp16``,
``onnx_trt_int8`` (TensorRT).
"""
from __future__ import annotations

from .errors import ArtifactError, InputError
from .manifest import ModelDir

PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("portable", "tensorrt")


def check_precision(precision: str) -> str:
    """``precision`` unchanged if visionrt knows it, else an :class:`InputError` listing those it does."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'", fix=f"choose one of {', '.join(PRECISIONS)}")
    return precision


def onnx_key(precision: str, target: str = "portable") -> str:
    """Manifest key of the ONNX file of ``precision`` for ``target`` (see the module doc)."""
    check_precision(precision)
    if target not in TARGETS:
        raise InputError(f"unknown ONNX target '{target}'", fix=f"choose one of {', '.join(TARGETS)}")
    base = "onnx_trt" if target == "tensorrt" else "onnx"
    return base if precision == "fp32" else f"{base}_{precision}"


def resolve_onnx_key(model_dir: ModelDir, precision: str, target: str = "portable") -> str:
    """The key of ``model_dir``'s file for ``precision`` and ``target``, checked to exist.

    For ``tensorrt`` the portable file stands in where export wrote no TensorRT flavour (the
    graph has no plugin ops), except for int8, whose TensorRT layout is always its own file. Raises
    :class:`ArtifactError` naming the export command when the precision was not exported."""
    key = onnx_key(precision, target)
    if model_dir.has(key):
        return key
    portable = onnx_key(precision)
    if target == "tensorrt" and precision != "int8" and not model_dir.has("onnx_trt") and model_dir.has(portable):
        return portable
    raise ArtifactError(f"{model_dir.root} has no {precision} ONNX for {target} (manifest key '{key}'): "
                        f"that precision was not exported",
                        fix=f"visionrt export {model_dir.root} --precision {precision}")
