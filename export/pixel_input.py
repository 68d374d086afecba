"""``visionrt export --input-dtype uint8 --input-layout NHWC``: the input tensor the ONNX is to take.

Recorded in the manifest's input spec before export; the exported graph then takes decoded
pixels and does the cast, scale and mean/std itself (:mod:`visionrt.train.models.pixel_input`),
and the runtime's preprocessing leaves them as they are (:func:`visionrt.runtime.preprocess.normalise`).
"""
from __future__ import annotations

import dataclasses

from ..runtime.errors import InputError
from ..runtime.manifest import ModelDir
from .fp32_reference import is_imported


def set_pixel_input(model_dir: ModelDir, dtype: str | None, layout: str | None) -> None:
    """Record in the manifest's input spec the tensor the exported ONNX is to take: ``dtype``
    ``uint8`` (decoded pixels; cast, scale and mean/std inside the graph, see
    :mod:`visionrt.train.models.pixel_input`) or ``float32``, ``layout`` NCHW or NHWC (``None``:
    as it is). Only for models trained here: an imported ONNX takes what its file takes."""
    spec = model_dir.manifest.input
    changed = dataclasses.replace(spec, dtype=dtype or spec.dtype, layout=layout or spec.layout)
    if changed == spec:
        return
    if is_imported(model_dir):
        raise InputError("--input-dtype/--input-layout apply to models trained with visionrt; an imported "
                         "ONNX takes the input its file declares", fix="leave the options out")
    model_dir.manifest.input = changed
