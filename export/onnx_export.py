"""PyTorch -> portable ONNX (torch.onnx dynamo exporter), dynamic batch, metadata embedded.

Models that use visionrt's custom ops (RoI pooling, RoIAlign, NMS, max-unpooling) export
them as the standard ONNX ops (see ``visionrt.train.ops``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import warnings
from pathlib import Path

import onnx
import torch

from ..runtime import atomic
from ..runtime.errors import ArtifactError
from ..runtime.manifest import ModelDir
from ..train.loop import load_trained
from ..train.ops.onnx_export import export_with_ops

ONNX_FILE = "model.onnx"
log = logging.getLogger(__name__)
OPSET = 20


@contextlib.contextmanager
def _quiet_exporter():
    """Hide the exporter's chatter (torchvision registration notes, deprecation warnings)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logger.setLevel(level)


def metadata_props(model_dir: ModelDir) -> dict[str, str]:
    """What a consumer of the bare ONNX file needs: task, classes, input normalisation, outputs."""
    m = model_dir.manifest
    return {
        "visionrt.task": m.task,
        "visionrt.classes": json.dumps(m.classes),
        "visionrt.input": json.dumps(dataclasses.asdict(m.input)),
        "visionrt.outputs": json.dumps([dataclasses.asdict(o) for o in m.outputs]),
    }


def export_onnx(model_dir: ModelDir, opset: int = OPSET, model: torch.nn.Module | None = None) -> Path:
    """Write ``model.onnx`` (batch axis dynamic) into the model directory and register it; ``model``
    (default: the directory's trained one) takes the manifest's input (dtype, layout) and returns
    its outputs in order."""
    manifest = model_dir.manifest
    spec = manifest.input
    model = load_trained(model_dir) if model is None else model
    nhwc = spec.layout == "NHWC"
    sides = (spec.height or 64, spec.width or 64)
    example = torch.zeros(2, *(sides + (spec.channels,) if nhwc else (spec.channels,) + sides),
                          dtype=getattr(torch, spec.dtype))
    dynamic = {0: torch.export.Dim("batch", min=1, max=4096)}
    if spec.height is None:
        dynamic.update({1 + (not nhwc): torch.export.Dim("height", min=16, max=4096),
                        2 + (not nhwc): torch.export.Dim("width", min=16, max=4096)})
    with _quiet_exporter():
        proto = export_with_ops(model, (example,), opset_version=opset, input_names=[spec.name],
                                         output_names=[o.name for o in manifest.outputs],
                                         dynamic_shapes=(dynamic,), verbose=False)
    for key, value in metadata_props(model_dir).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"visionrt {manifest.task} model ({manifest.model.get('arch')})"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ArtifactError(f"exported ONNX fails the onnx checker: {err}") from err
    path = model_dir.root / ONNX_FILE
    write_onnx(proto, path)
    model_dir.add_file("onnx", path, role=f"portable ONNX, opset {opset}, dynamic batch")
    model_dir.manifest.versions.update(onnx=onnx.__version__, opset=str(opset))
    model_dir.record("export", onnx=ONNX_FILE, opset=opset)
    model_dir.save()
    log.info("exported %s (%.1f MB, opset %d)", path, path.stat().st_size / 1e6, opset)
    return path


def write_onnx(proto: onnx.ModelProto, path: Path) -> None:
    """Serialise atomically (a failed write never leaves a truncated ONNX behind)."""
    atomic.write_bytes(path, proto.SerializeToString())
