"""Engine builder: a real TensorRT-RTX build of a tiny ONNX on the CPU, and its error paths."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_extra, require_or_skip
from visionrt.export.build import BuildError, build, scan_onnx
from visionrt.runtime import atomic, tensorrt_env
from visionrt.runtime.errors import ArtifactError, BackendUnavailable, PluginError
from visionrt.runtime.manifest import InputSpec, Manifest, ModelDir, OutputSpec

onnx = require_or_skip("onnx")
from onnx import TensorProto, helper  # noqa: E402

#: Absent: skip. Installed but broken: ``installed`` raises BrokenInstall, which fails the collection.
needs_rtx = needs_extra(tensorrt_env.installed("tensorrt_rtx") is not None,
                        "TensorRT-RTX is not installed (pip install 'visionrt[rtx]')")


# tiny models -------------------------------------------------------------------------------
def save_onnx(path: Path, nodes, inputs, outputs, initializers=(), domains=()) -> Path:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domains)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10  # onnxruntime 1.31 reads at most 13
    onnx.save(model, str(path))
    return path


def tiny_resnet(path: Path, dtype=np.float32, batch="batch", height=16, width=16, classes=4) -> Path:
    """conv-relu-conv + residual, global pool, linear: ``images [B,3,H,W] -> logits [B,classes]``."""
    rng = np.random.default_rng(0)
    weights = {"w1": (8, 3, 3, 3), "b1": (8,), "w2": (8, 8, 3, 3), "b2": (8,), "fc_w": (classes, 8), "fc_b": (classes,)}
    initializers = [helper.make_tensor(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape,
                                       (rng.standard_normal(shape) * 0.2).astype(dtype).tobytes(), raw=True)
                    for name, shape in weights.items()]
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], name="conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", **conv),
        helper.make_node("Add", ["r1", "c2"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return save_onnx(path, nodes, [helper.make_tensor_value_info("images", elem, [batch, 3, height, width])],
                     [helper.make_tensor_value_info("logits", elem, [batch, classes])], initializers)


def model_dir_with(root: Path, onnx_writer=tiny_resnet, key: str = "onnx", name: str = "model.onnx",
                   build_profile=None, **kwargs) -> ModelDir:
    """A model directory holding one ONNX file under ``key``."""
    manifest = Manifest(task="classify", model={"name": "tiny"}, classes=list("abcd"),
                        input=InputSpec(height=16, width=16), outputs=[OutputSpec("logits", ["batch", 4], "scores")],
                        build_profile=build_profile or {})
    model_dir = ModelDir.create(root, manifest)
    model_dir.add_file(key, onnx_writer(root / name, **kwargs), role="onnx")
    model_dir.save()
    return model_dir


# the build ---------------------------------------------------------------------------------
@pytest.mark.slow
@needs_rtx
def test_rtx_build_writes_engine_and_facts(tmp_path):
    model_dir = model_dir_with(tmp_path)
    result = build(tmp_path, flavour="tensorrt_rtx", min_batch=1, opt_batch=2, max_batch=4)

    assert result.key == "rtx" and result.path == tmp_path / "model.rtx.engine"
    reopened = ModelDir.open(tmp_path)  # what was saved, not what is in memory
    entry = reopened.manifest.files["rtx"]
    assert reopened.path("rtx") == result.path  # exists and sha256 matches
    assert entry.sha256 == atomic.sha256(result.path) and entry.bytes == result.path.stat().st_size

    facts = reopened.manifest.engines["rtx"]
    assert facts == result.facts
    assert facts["flavour"] == "tensorrt_rtx"
    assert facts["tensorrt_version"] == tensorrt_env.version(tensorrt_env.import_tensorrt("tensorrt_rtx"))
    assert facts["compute_capabilities"] == ["8.0", "8.6", "8.9", "12.0", "12.1"]
    assert facts["precision"] == "fp32"
    assert facts["profile"] == {"images": {"min": [1, 3, 16, 16], "opt": [2, 3, 16, 16], "max": [4, 3, 16, 16]}}
    assert facts["inputs"] == [{"name": "images", "shape": [-1, 3, 16, 16], "dtype": "float32"}]
    assert facts["outputs"] == [{"name": "logits", "shape": [-1, 4], "dtype": "float32"}]
    assert facts["engine_bytes"] == entry.bytes > 10_000
    assert 0 < facts["build_seconds"] < 60
    assert facts["onnx_sha256"] == model_dir.manifest.files["onnx"].sha256
    assert facts["host"]["hostname"]
    assert reopened.manifest.history[-1]["stage"] == "build"

    log = json.loads((tmp_path / facts["build_log"]).read_text())
    assert log["facts"] == facts and log["messages"]


@pytest.mark.slow
@needs_rtx
def test_fp16_onnx_builds_a_strongly_typed_fp16_engine(tmp_path):
    model_dir_with(tmp_path, key="onnx_fp16", name="model_fp16.onnx", dtype=np.float16)
    result = build(tmp_path, flavour="tensorrt_rtx", onnx_key="onnx_fp16", compute_capabilities=["8.6"], max_batch=2)
    assert result.key == "rtx_fp16" and result.path.name == "model_fp16.rtx.engine"
    assert result.facts["precision"] == "fp16"
    assert result.facts["compute_capabilities"] == ["8.6"]
    assert result.facts["inputs"][0]["dtype"] == "float16"


@pytest.mark.slow  # builds an engine
@needs_rtx
def test_batch_defaults_come_from_the_manifest(tmp_path):
    model_dir_with(tmp_path, build_profile={"max_batch": 3})
    facts = build(tmp_path, flavour="tensorrt_rtx").facts
    assert facts["profile"]["images"]["min"][0] == 1 and facts["profile"]["images"]["max"][0] == 3


@pytest.mark.slow  # builds an engine
@needs_rtx
def test_dynamic_height_and_width_need_sizes(tmp_path):
    model_dir = model_dir_with(tmp_path, height="height", width="width")
    model_dir.manifest.input.height = model_dir.manifest.input.width = None
    model_dir.save()
    with pytest.raises(BuildError, match=r"dynamic axis 2 \(height\).*--height"):
        build(tmp_path, flavour="tensorrt_rtx")
    facts = build(tmp_path, flavour="tensorrt_rtx", max_batch=2, height=(16, 24, 32), width=20).facts
    assert facts["profile"]["images"] == {"min": [1, 3, 16, 20], "opt": [2, 3, 24, 20], "max": [2, 3, 32, 20]}


# errors ------------------------------------------------------------------------------------
def test_without_tensorrt_names_the_extra(tmp_path, monkeypatch):
    for module in (m for flavour in tensorrt_env.FLAVOURS.values() for m in flavour.modules):
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    model_dir_with(tmp_path)
    with pytest.raises(BackendUnavailable, match=r"visionrt\[rtx\]") as auto:
        build(tmp_path)
    assert "\n" not in str(auto.value)
    with pytest.raises(BackendUnavailable, match=r"TensorRT-RTX is not installed.*visionrt\[rtx\]"):
        build(tmp_path, flavour="tensorrt_rtx")
    with pytest.raises(BackendUnavailable, match=r"visionrt\[trt\].*pypi.nvidia.com"):
        build(tmp_path, flavour="tensorrt")


@needs_rtx
def test_plugin_ops_stop_an_rtx_build_before_parsing(tmp_path, monkeypatch):
    def plugin_model(path):
        x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 16, 16])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        nodes = [helper.make_node("RoiAlign", ["images"], ["a"], name="roi", domain="visionrt"),
                 helper.make_node("MaxUnpool", ["a"], ["y"], name="unpool", domain="visionrt")]
        return save_onnx(path, nodes, [x], [y], domains=["visionrt"])

    model_dir_with(tmp_path, plugin_model)
    build_module = importlib.import_module("visionrt.export.build")
    monkeypatch.setattr(build_module, "_parse", lambda *a: pytest.fail("parsed despite plugin ops"))
    with pytest.raises(PluginError, match=r"no plugin layer.*MaxUnpool, RoiAlign.*TensorRT >= 10.9.*onnxruntime"):
        build(tmp_path, flavour="tensorrt_rtx")


@needs_rtx
def test_parser_errors_name_the_failing_node(tmp_path):
    def roi_pool_model(path):
        inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8]),
                  helper.make_tensor_value_info("rois", TensorProto.FLOAT, [2, 5])]
        node = helper.make_node("MaxRoiPool", ["images", "rois"], ["y"], name="roi_pool0", pooled_shape=[2, 2])
        return save_onnx(path, [node], inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])

    model_dir = model_dir_with(tmp_path, roi_pool_model)
    with pytest.raises(BuildError, match=r"cannot parse model.onnx: node 0 'roi_pool0' \(MaxRoiPool\)") as err:
        build(tmp_path, flavour="tensorrt_rtx")
    assert "MaxRoiPool" in err.value.fix
    # the model directory is as it was, with a log of why
    assert ModelDir.open(tmp_path).manifest.to_dict() == model_dir.manifest.to_dict()
    assert not (tmp_path / "model.rtx.engine").exists()
    assert "MaxRoiPool" in json.loads((tmp_path / "model.rtx.build.json").read_text())["error"]


@pytest.mark.slow  # builds an engine
@needs_rtx
def test_bad_build_requests(tmp_path):
    model_dir_with(tmp_path)
    with pytest.raises(BuildError, match="1 <= min <= opt <= max"):
        build(tmp_path, flavour="tensorrt_rtx", min_batch=4, max_batch=2)
    with pytest.raises(BuildError, match="compute capability 9.0.*choose from"):
        build(tmp_path, flavour="tensorrt_rtx", compute_capabilities=["9.0"])
    static = tmp_path / "static"
    model_dir_with(static, batch=1)
    with pytest.raises(BuildError, match="fixed batch of 1"):
        build(static, flavour="tensorrt_rtx", max_batch=8)
    assert build(static, flavour="tensorrt_rtx").facts["profile"]["images"]["max"][0] == 1


@needs_rtx
def test_missing_external_weights(tmp_path):
    model_dir = model_dir_with(tmp_path)
    model = onnx.load(str(tmp_path / "model.onnx"))
    onnx.save(model, str(tmp_path / "model.onnx"), save_as_external_data=True, location="model.onnx.data",
              size_threshold=0)
    model_dir.add_file("onnx", tmp_path / "model.onnx")
    model_dir.save()
    (tmp_path / "model.onnx.data").unlink()
    with pytest.raises(ArtifactError, match="model.onnx.data, which is missing"):
        build(tmp_path, flavour="tensorrt_rtx")


def test_scan_finds_precision_and_plugins(tmp_path):
    assert scan_onnx(tiny_resnet(tmp_path / "a.onnx")).precision == "fp32"
    assert scan_onnx(tiny_resnet(tmp_path / "b.onnx", dtype=np.float16)).precision == "fp16"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    qdq = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    consts = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
    assert scan_onnx(save_onnx(tmp_path / "q.onnx", qdq, [x], [y], consts)).precision == "int8"
    body = helper.make_graph([helper.make_node("Nms", ["x"], ["y"], domain="visionrt")], "body", [], [y])
    branch = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    facts = scan_onnx(save_onnx(tmp_path / "p.onnx", [branch], [x, cond], [y], domains=["visionrt"]))
    assert facts.plugin_ops == ["Nms"] and facts.external_data == []


# a plugin callback that raises, through a stand-in full TensorRT ---------------------------------
class _Severity(int):
    pass


def stand_in_full_tensorrt(monkeypatch):
    """A stand-in ``tensorrt`` 10.9 whose ONNX parser calls each visionrt node's ``describe``
    callback as TensorRT's plugin wrapper does (an exception is printed, never raised) and then
    fails with TensorRT's generic error; on a stand-in sm_86 GPU."""
    from test_tensorrt_plugins import TensorDesc, make_tensorrt

    from visionrt.runtime.plugins import registry, tensorrt_registration

    trt, trtp = make_tensorrt("10.9.0.34")
    severity = {name: _Severity(i) for i, name in enumerate(["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])}
    for name, value in severity.items():
        value.name = name
    trt.ILogger = type("ILogger", (), {"Severity": type("Severity", (), {"__members__": severity}),
                                       "__init__": lambda self: None})
    trt.NetworkDefinitionCreationFlag = type("Flags", (), {"STRONGLY_TYPED": 0})
    trt.Builder = lambda logger: type("Builder", (), {"create_network": lambda self, flags: object()})()
    types_ = {TensorProto.FLOAT: "FLOAT", TensorProto.FLOAT16: "HALF", TensorProto.INT64: "INT64"}

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.logger = logger

        def parse_from_file(self, path):
            model = onnx.load(path)
            shapes = {v.name: ([d.dim_value for d in v.type.tensor_type.shape.dim], types_[v.type.tensor_type.elem_type])
                      for v in model.graph.input}
            for node in model.graph.node:
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute
                         if a.name not in ("plugin_namespace", "plugin_version")}
                values = registry.get(node.op_type).resolve(attrs)
                try:
                    trtp.plugins[node.op_type]["register"](*(TensorDesc(*shapes[i]) for i in node.input), **values)
                except Exception:  # printed to stderr by TensorRT, then:
                    self.logger.log(severity["ERROR"], f"IPluginV3 {node.op_type}: getOutputDataTypes failed")
                    self.num_errors, self.node = 1, node
                    return False
            return True

        def get_error(self, i):
            node = self.node
            return type("Error", (), {"node": lambda s: 0, "node_name": lambda s: node.name,
                                      "node_operator": lambda s: node.op_type, "desc": lambda s: "",
                                      "code": lambda s: type("Code", (), {"name": "UNSUPPORTED_NODE"})()})()

    trt.OnnxParser = OnnxParser
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    monkeypatch.setattr(tensorrt_registration, "_builder", None)
    monkeypatch.setattr(tensorrt_registration, "_current_device", lambda: (86, 99000))
    monkeypatch.setattr(tensorrt_env, "find_gpus", lambda: ([tensorrt_env.Gpu(0, "stand-in", "8.6", 8192)], None))
    return trt


def test_a_plugin_callback_error_is_the_build_error_with_its_own_fix(tmp_path, monkeypatch):
    require_or_skip("cuda.bindings.nvrtc", reason="the pre-flight compiles with NVRTC: pip install 'visionrt[cuda]'")
    from visionrt.runtime.plugins import registry

    stand_in_full_tensorrt(monkeypatch)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16]),
              helper.make_tensor_value_info("rois", TensorProto.FLOAT16, [4, 5])]
    node = registry.get("RoiPool2d").make_node(["x", "rois"], ["y"], name="pool", pooled_height=2, pooled_width=2,
                                               spatial_scale=0.25)
    path = save_onnx(tmp_path / "model.onnx", [node], inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                     domains=["visionrt"])
    with pytest.raises(PluginError, match="RoiPool2d: x is FLOAT and rois HALF") as err:
        build_module = importlib.import_module("visionrt.export.build")
        build_module.build_onnx_file(path, flavour="tensorrt")
    assert "cast x and rois to the same float type" in err.value.fix  # not "build ... with full TensorRT >= 10.9"
    assert isinstance(err.value.__cause__, BuildError) and "UNSUPPORTED_NODE" in str(err.value.__cause__)
    log = json.loads((tmp_path / "model.trt.build.json").read_text())
    assert "x is FLOAT and rois HALF" in log["error"] and not (tmp_path / "model.trt.engine").exists()


def test_full_tensorrt_parse_failures_do_not_suggest_full_tensorrt(tmp_path, monkeypatch):
    stand_in_full_tensorrt(monkeypatch)
    build_module = importlib.import_module("visionrt.export.build")
    fix = build_module._parse_fix(tensorrt_env.FLAVOURS["tensorrt"], "RoiPool2d")
    assert "full TensorRT" not in fix and "build log" in fix
    assert "TensorRT >= 10.9" in build_module._parse_fix(tensorrt_env.FLAVOURS["tensorrt_rtx"], "MaxRoiPool")
