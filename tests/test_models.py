"""Each classification architecture trains, exports to ONNX and matches PyTorch in onnxruntime."""
from __future__ import annotations

import onnx
import pytest
import torch

from conftest import HAS_RTX, build_rtx_engine
from visionrt.export.stage import export_and_verify
from visionrt.runtime.manifest import ModelDir
from visionrt.train.config import TrainConfig
from visionrt.train.loop import fit
from visionrt.runtime.tasks import architectures
from visionrt.train.tasks.architectures import build_model

#: The classification architectures of the catalogue.
ARCHITECTURES = list(architectures("classify"))

SMALL = {"resnet": {"widths": [8, 16, 16], "blocks": 1}, "inception": {"width": 8},
         "densenet": {"growth": 6, "layers_per_block": 2}}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_forward_shape(arch):
    model = build_model("classify", {"arch": arch, "kwargs": SMALL[arch]}, [str(c) for c in range(7)]).eval()
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown classify model 'vgg'"):
        build_model("classify", {"arch": "vgg"}, [str(c) for c in range(10)])


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_export_and_parity(arch, tiny_data, tmp_path):
    fit(TrainConfig(model=arch, model_kwargs=SMALL[arch], epochs=1), tiny_data, tmp_path)
    model_dir = ModelDir.open(tmp_path)
    report = export_and_verify(model_dir, tiny_data)
    assert report.passed, report.summary()
    assert report.samples == 64
    proto = onnx.load(model_dir.path("onnx"))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["visionrt.task"] == "classify" and '"mean"' in meta["visionrt.input"]
    ops = {n.op_type for n in proto.graph.node}
    expected = {"resnet": {"Add"}, "inception": {"Concat", "MaxPool"}, "densenet": {"Concat", "AveragePool"}}[arch]
    assert expected <= ops
    if HAS_RTX:
        build_rtx_engine(model_dir)
