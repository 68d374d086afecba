"""TensorRT plugin glue without TensorRT: a stand-in ``tensorrt.plugin`` records what
``register``/``aot_impl`` receive and checks their signatures as TensorRT does; the output
shapes, kernels, launch geometry and arguments are then checked here, and the version guard."""
from __future__ import annotations

import inspect
import re
import struct
import sys
import types
import typing
from pathlib import Path

import pytest

from conftest import require_or_skip
from visionrt.runtime.errors import PluginError
from visionrt.runtime.plugins import nvrtc, registry, tensorrt_registration
from visionrt.runtime.plugins.max_unpool.reference import pooled_size, unpooled_size

ROOT = Path(__file__).resolve().parents[1]


# the stand-in TensorRT --------------------------------------------------------------------
class Dim:
    """A symbolic dimension with a known value: like TensorRT's ShapeExpr it supports only
    ``expr <op> int|expr`` for + - * // (no reflected operators)."""

    def __init__(self, value: int, text: str | None = None):
        self.value, self.text = value, text or str(value)

    def _op(self, other, fn, sign):
        value, text = (other.value, other.text) if isinstance(other, Dim) else (other, str(other))
        assert isinstance(value, int), f"shape arithmetic with {other!r}"
        return Dim(fn(self.value, value), f"({self.text}{sign}{text})")

    def __add__(self, other): return self._op(other, lambda a, b: a + b, "+")
    def __sub__(self, other): return self._op(other, lambda a, b: a - b, "-")
    def __mul__(self, other): return self._op(other, lambda a, b: a * b, "*")
    def __floordiv__(self, other): return self._op(other, lambda a, b: a // b, "//")


def value(x):
    return x.value if isinstance(x, Dim) else x


class TensorDesc:
    def __init__(self, shape, dtype):
        self.shape_expr = tuple(d if isinstance(d, Dim) else Dim(d) for d in shape)
        self.dtype = dtype

    @property
    def shape(self):
        return tuple(value(d) for d in self.shape_expr)


class KernelLaunchParams:
    def __init__(self):
        self.grid_x = self.grid_y = self.grid_z = self.block_x = self.block_y = self.block_z = 1
        self.shared_mem = 0


class SymInt32:
    def __init__(self, expr):
        assert isinstance(expr, (int, Dim)), expr
        self.expr = expr


class SymIntExprs(tuple):
    @classmethod
    def from_tuple(cls, items):
        assert all(isinstance(i, SymInt32) for i in items)
        return cls(items)


def make_tensorrt(version: str = "10.9.0.34", name: str = "tensorrt"):
    """``(trt, trtp)`` stand-ins; ``trtp.plugins[name]`` holds each plugin's two functions."""
    trt = types.ModuleType(name)
    trt.__version__ = version
    trt.float32, trt.float16, trt.int32, trt.int64, trt.int8 = "FLOAT", "HALF", "INT32", "INT64", "INT8"
    trtp = types.ModuleType(f"{name}.plugin")
    trtp.TensorDesc, trtp.KernelLaunchParams, trtp.SymInt32, trtp.SymIntExprs = (
        TensorDesc, KernelLaunchParams, SymInt32, SymIntExprs)
    trtp.from_shape_expr = lambda shape, dtype: TensorDesc(shape, dtype)
    trtp.plugins = {}

    def register(plugin_id):
        def decorator(fn):
            assert plugin_id not in trtp.plugins, f"{plugin_id} registered twice"  # TensorRT refuses too
            namespace, _, name = plugin_id.partition("::")
            assert namespace == "visionrt"
            params = inspect.signature(fn).parameters.values()
            assert all(isinstance(p.annotation, type) for p in params), "annotations must be classes"
            trtp.plugins[name] = {"register": fn,
                                  "inputs": [p.name for p in params if p.annotation is TensorDesc],
                                  "attributes": {p.name: p.annotation for p in params if p.annotation is not TensorDesc}}
            return fn
        return decorator

    def aot_impl(plugin_id):
        def decorator(fn):
            plugin = trtp.plugins[plugin_id.partition("::")[2]]
            names = list(inspect.signature(fn).parameters)
            n = len(plugin["inputs"])
            attrs = names[n:-2]
            # TensorRT's schema: inputs, attributes in register's order, outputs, tactic
            assert names[:n] == plugin["inputs"] and names[-2:] == ["outputs", "tactic"]
            assert attrs == [a for a in plugin["attributes"] if a in attrs]
            ret = inspect.signature(fn).return_annotation
            assert typing.get_origin(ret) is tuple and typing.get_args(ret)[2:] == (KernelLaunchParams, SymIntExprs)
            plugin["aot_impl"] = fn
            return fn
        return decorator

    trtp.register, trtp.aot_impl = register, aot_impl
    trt.plugin = trtp
    return trt, trtp


@pytest.fixture
def trtp(monkeypatch):
    """Registers every plugin with a stand-in TensorRT 10.9 for sm_86, CUBIN kernels."""
    trt, plugin = make_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", plugin)
    monkeypatch.setattr(tensorrt_registration, "_builder", None)
    names = tensorrt_registration.register_plugins(trt, arch=86, output="cubin")
    assert names == list(registry.plugins())
    return plugin


def describe(trtp, name, *inputs, **attributes):
    """Output descriptors of plugin ``name``, attributes completed from the registry's defaults."""
    values = registry.get(name).resolve(attributes)
    outputs = trtp.plugins[name]["register"](*inputs, **values)
    return outputs if isinstance(outputs, tuple) else (outputs,)


def aot(trtp, name, *inputs, **attributes):
    """What the plugin's aot_impl returns, called as TensorRT does: attributes positionally in
    the ONNX node's (alphabetical) order."""
    require_or_skip("cuda.bindings.nvrtc", reason="aot_impl compiles with NVRTC: pip install 'visionrt[cuda]'")
    values = registry.get(name).resolve(attributes)
    outputs = describe(trtp, name, *inputs, **attributes)
    return trtp.plugins[name]["aot_impl"](*inputs, *(values[k] for k in sorted(values)), outputs, 0)


def launch_of(result):
    kernel, code, params, args = result
    sizes = [value(v.expr) if isinstance(v, SymInt32) else v for v in (params.grid_x, params.grid_y, params.grid_z)]
    return {"kernel": kernel, "code": code, "grid": tuple(sizes), "block": (params.block_x, params.block_y, params.block_z),
            "shared_mem": params.shared_mem, "args": [value(a.expr) for a in args]}


def elf_arch(cubin: bytes) -> int:
    return (struct.unpack_from("<I", cubin, 48)[0] >> 8) & 0xFF


# tests ---------------------------------------------------------------------------------------
def test_registers_every_registry_op_with_its_attributes_in_onnx_order(trtp):
    assert sorted(trtp.plugins) == sorted(registry.plugins())
    for name, plugin in trtp.plugins.items():
        op = registry.get(name)
        assert plugin["inputs"] == [port.name for port in op.inputs]
        # onnx.helper.make_node sorts attributes, and TensorRT hands them to aot_impl in that order
        assert list(plugin["attributes"]) == sorted(a.name for a in op.attributes)
        types_ = {a.name: (float if a.type is float else int) for a in op.attributes}
        assert plugin["attributes"] == types_


def test_roi_pool(trtp):
    x, rois = TensorDesc((2, 256, 64, 64), "FLOAT"), TensorDesc((512, 5), "FLOAT")
    (y,) = describe(trtp, "RoiPool2d", x, rois, pooled_height=7, pooled_width=6, spatial_scale=0.0625)
    assert y.shape == (512, 256, 7, 6) and y.dtype == "FLOAT"
    launch = launch_of(aot(trtp, "RoiPool2d", x, rois, pooled_height=7, pooled_width=6, spatial_scale=0.0625))
    total = 512 * 256 * 7 * 6
    assert launch["kernel"] == "visionrt_roi_pool_f32" and elf_arch(launch["code"]) == 86
    assert launch["grid"] == (total // 256 + 1, 1, 1) and launch["block"] == (256, 1, 1)
    assert launch["args"] == [2, 256, 64, 64, 7, 6, 512]  # the kernel counts R*C*7*6 in 64 bits


@pytest.mark.parametrize("plugin, extra", [("RoiPool2d", ()), ("RoiAlign2d", (TensorDesc((0,), "INT64"),))])
def test_a_batch_without_rois_launches_one_idle_block_not_an_empty_grid(trtp, plugin, extra):
    x, rois = TensorDesc((1, 8, 16, 16), "FLOAT"), TensorDesc((0, 5 if plugin == "RoiPool2d" else 4), "FLOAT")
    size = {"pooled_height": 2, "pooled_width": 2} if plugin == "RoiPool2d" else {"output_height": 2, "output_width": 2}
    launch = launch_of(aot(trtp, plugin, x, rois, *extra, spatial_scale=0.25, **size))
    assert launch["grid"] == (1, 1, 1) and launch["args"][-1] == 0  # no RoIs: every thread skips the loop


def test_roi_align_half(trtp):
    x, rois, idx = TensorDesc((1, 8, 32, 40), "HALF"), TensorDesc((100, 4), "HALF"), TensorDesc((100,), "INT64")
    attrs = dict(output_height=14, output_width=14, sampling_ratio=2, spatial_scale=0.25, mode_max=1, half_pixel=0)
    (y,) = describe(trtp, "RoiAlign2d", x, rois, idx, **attrs)
    assert y.shape == (100, 8, 14, 14) and y.dtype == "HALF"
    launch = launch_of(aot(trtp, "RoiAlign2d", x, rois, idx, **attrs))
    assert launch["kernel"] == "visionrt_roi_align_f16"
    assert launch["args"] == [1, 8, 32, 40, 14, 14, 2, 100]
    assert launch["grid"][0] * 256 > 100 * 8 * 14 * 14 >= (launch["grid"][0] - 1) * 256


def test_efficient_nms(trtp):
    boxes, scores = TensorDesc((4, 5000, 4), "FLOAT"), TensorDesc((4, 5000, 80), "FLOAT")
    attrs = dict(score_threshold=0.05, iou_threshold=0.5, max_output_boxes=100, pre_nms_top_k=4096, class_agnostic=1)
    num, det_boxes, det_scores, det_classes = describe(trtp, "EfficientNms", boxes, scores, **attrs)
    assert (num.shape, num.dtype) == ((4, 1), "INT32")
    assert (det_boxes.shape, det_boxes.dtype) == ((4, 100, 4), "FLOAT")
    assert (det_scores.shape, det_classes.shape, det_classes.dtype) == ((4, 100), (4, 100), "INT32")
    launch = launch_of(aot(trtp, "EfficientNms", boxes, scores, **attrs))
    assert launch["kernel"] == "visionrt_efficient_nms_f32"
    assert launch["grid"] == (4, 1, 1) and launch["block"] == (1024, 1, 1) and launch["shared_mem"] == 0
    assert launch["args"] == [5000, 80, 100, 4096, 1]


@pytest.mark.parametrize("boxes_dtype, scores_dtype", [("HALF", "FLOAT"), ("FLOAT", "HALF"), ("INT32", "FLOAT")])
def test_efficient_nms_checks_the_boxes_type_too(trtp, boxes_dtype, scores_dtype):
    boxes, scores = TensorDesc((1, 10, 4), boxes_dtype), TensorDesc((1, 10, 3), scores_dtype)
    with pytest.raises(PluginError, match="boxes is|not INT32"):
        describe(trtp, "EfficientNms", boxes, scores, max_output_boxes=5, score_threshold=0.1, iou_threshold=0.5)


@pytest.mark.parametrize("geometry", [dict(kernel_h=2, kernel_w=2, stride_h=2, stride_w=2),
                                      dict(kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, pad_top=1, pad_left=1,
                                           pad_bottom=1, pad_right=1)])
def test_max_pool_and_unpool(trtp, geometry):
    x = TensorDesc((2, 16, 33, 40), "FLOAT")
    y, indices = describe(trtp, "MaxPool2dWithIndices", x, **geometry)
    g = registry.get("MaxPool2dWithIndices").resolve(geometry)
    out_h = pooled_size(33, g["kernel_h"], g["stride_h"], g["pad_top"], g["pad_bottom"])
    out_w = pooled_size(40, g["kernel_w"], g["stride_w"], g["pad_left"], g["pad_right"])
    assert y.shape == indices.shape == (2, 16, out_h, out_w) and indices.dtype == "INT64"
    launch = launch_of(aot(trtp, "MaxPool2dWithIndices", x, **geometry))
    assert launch["kernel"] == "visionrt_max_pool_with_indices_f32"
    assert launch["args"] == [33, 40, out_h, out_w, g["kernel_h"], g["kernel_w"], g["stride_h"], g["stride_w"],
                              g["pad_top"], g["pad_left"], 2 * 16]  # planes: the kernel counts N*C*oh*ow

    (x_back,) = describe(trtp, "MaxUnpool2d", y, indices, output_height=33, output_width=40, **geometry)
    assert x_back.shape == (2, 16, 33, 40)
    assert unpooled_size(out_h, g["kernel_h"], g["stride_h"], g["pad_top"], g["pad_bottom"]) in (33, 32)
    launch = launch_of(aot(trtp, "MaxUnpool2d", y, indices, output_height=33, output_width=40, **geometry))
    assert launch["kernel"] == "visionrt_max_unpool_f32"
    assert launch["args"][:4] == [out_h, out_w, 33, 40] and launch["args"][-1] == 2 * 16
    assert launch["grid"][0] * 256 > 2 * 16 * 33 * 40


def test_launch_arguments_match_the_kernel_signatures(trtp):
    """Pointers for the inputs, int32 arguments, pointers for the outputs: the AOT order."""
    cases = {
        "RoiPool2d": ((TensorDesc((1, 4, 8, 8), "FLOAT"), TensorDesc((3, 5), "FLOAT")),
                      dict(pooled_height=2, pooled_width=2)),
        "RoiAlign2d": ((TensorDesc((1, 4, 8, 8), "FLOAT"), TensorDesc((3, 4), "FLOAT"), TensorDesc((3,), "INT64")), {}),
        "EfficientNms": ((TensorDesc((1, 10, 4), "FLOAT"), TensorDesc((1, 10, 3), "FLOAT")),
                         dict(score_threshold=0.1, iou_threshold=0.5, max_output_boxes=5, pre_nms_top_k=10)),
        "MaxPool2dWithIndices": ((TensorDesc((1, 4, 8, 8), "FLOAT"),), dict(kernel_h=2, kernel_w=2)),
        "MaxUnpool2d": ((TensorDesc((1, 4, 4, 4), "FLOAT"), TensorDesc((1, 4, 4, 4), "INT64")),
                        dict(kernel_h=2, kernel_w=2, stride_h=2, stride_w=2, output_height=8, output_width=8)),
    }
    for name, (inputs, attrs) in cases.items():
        launch = launch_of(aot(trtp, name, *inputs, **attrs))
        source = tensorrt_registration.op_module(name).KERNEL.read_text()
        stem = launch["kernel"].rsplit("_", 1)[0]
        signature = re.search(rf"{stem}_##SUFFIX\((.*?)\)\s*{{", source, re.S).group(1)
        kinds = ["int" if re.match(r"\s*int\s", p) else "ptr" for p in signature.replace("\\", " ").split(",")]
        op = registry.get(name)
        assert kinds == ["ptr"] * len(op.inputs) + ["int"] * len(launch["args"]) + ["ptr"] * len(op.outputs), name


def test_unsupported_dtype_is_a_plugin_error(trtp):
    with pytest.raises(PluginError, match="float32 or float16"):
        describe(trtp, "RoiPool2d", TensorDesc((1, 4, 8, 8), "INT8"), TensorDesc((3, 5), "INT8"),
                 pooled_height=2, pooled_width=2)


@pytest.mark.parametrize("name, inputs, attrs, match", [
    ("RoiPool2d", (TensorDesc((1, 4, 8, 8), "FLOAT"), TensorDesc((3, 5), "HALF")), dict(pooled_height=2, pooled_width=2),
     "x is FLOAT and rois HALF"),
    ("RoiAlign2d", (TensorDesc((1, 4, 8, 8), "HALF"), TensorDesc((3, 4), "FLOAT"), TensorDesc((3,), "INT64")), {},
     "x is HALF and rois FLOAT"),
    ("RoiAlign2d", (TensorDesc((1, 4, 8, 8), "FLOAT"), TensorDesc((3, 4), "FLOAT"), TensorDesc((3,), "INT32")), {},
     "batch_indices must be int64, not INT32"),
    ("MaxUnpool2d", (TensorDesc((1, 4, 4, 4), "FLOAT"), TensorDesc((1, 4, 4, 4), "INT32")),
     dict(kernel_h=2, kernel_w=2, output_height=8, output_width=8), "indices must be int64, not INT32"),
])
def test_every_input_type_is_checked(trtp, name, inputs, attrs, match):
    """Not only the first input's: a kernel reads every input as its one float type (or int64)."""
    with pytest.raises(PluginError, match=match):
        describe(trtp, name, *inputs, **attrs)
    with pytest.raises(PluginError, match=match):
        aot(trtp, name, *inputs, **attrs)


def test_two_to_the_31_output_elements_need_no_32_bit_count(trtp):
    """MaxUnpool at a 32x64x1024x1024 profile maximum writes 2^31 elements, one more than int32
    holds: every int32 argument stays a shape factor, the grid covers every element, and the
    kernel multiplies the factors in 64 bits (grid-stride loop, see visionrt_cuda.cuh)."""
    y, indices = TensorDesc((32, 64, 512, 512), "HALF"), TensorDesc((32, 64, 512, 512), "INT64")
    geometry = dict(kernel_h=2, kernel_w=2, stride_h=2, stride_w=2, output_height=1024, output_width=1024)
    launch = launch_of(aot(trtp, "MaxUnpool2d", y, indices, **geometry))
    total = 32 * 64 * 1024 * 1024
    assert total == 2 ** 31
    assert all(0 <= arg < 2 ** 31 for arg in launch["args"]) and launch["args"][-1] == 32 * 64
    assert launch["grid"][0] < 2 ** 31 and launch["grid"][0] * launch["block"][0] > total
    source = tensorrt_registration.op_module("MaxUnpool2d").KERNEL.read_text()
    assert "VRT_FOR_EACH_ELEMENT(index, static_cast<long long>(planes) * height * width)" in source
    assert "int total" not in source


def test_register_plugins_is_idempotent(trtp):
    trt = sys.modules["tensorrt"]
    assert tensorrt_registration.register_plugins(trt, arch=89, output="ptx") == list(registry.plugins())
    result = aot(trtp, "MaxPool2dWithIndices", TensorDesc((1, 1, 4, 4), "FLOAT"), kernel_h=2, kernel_w=2)
    assert b".target sm_89" in result[1]


def test_build_gpu_and_kernel_format_are_found_at_the_first_kernel(trtp, monkeypatch):
    tensorrt_registration.register_plugins(sys.modules["tensorrt"])  # arch and format: from the device
    monkeypatch.setattr(tensorrt_registration, "_current_device", lambda: (80, 99000))
    result = aot(trtp, "MaxPool2dWithIndices", TensorDesc((1, 1, 4, 4), "FLOAT"), kernel_h=2, kernel_w=2)
    assert b".target sm_80" in result[1]  # PTX: the form aot_impl documents


def test_a_driver_too_old_for_the_ptx_is_refused_at_the_first_kernel(trtp, monkeypatch):
    tensorrt_registration.register_plugins(sys.modules["tensorrt"])
    monkeypatch.setattr(tensorrt_registration, "_current_device", lambda: (80, 11000))
    with pytest.raises(PluginError, match=r"driver \(CUDA 11\.0\) cannot JIT the PTX of NVRTC"):
        aot(trtp, "MaxPool2dWithIndices", TensorDesc((1, 1, 4, 4), "FLOAT"), kernel_h=2, kernel_w=2)


def test_kernel_format():
    assert tensorrt_registration.kernel_format(13050, (13, 5)) == "ptx"
    with pytest.raises(PluginError, match=r"CUDA 13\.0\) cannot JIT the PTX of NVRTC 13\.5") as err:
        tensorrt_registration.kernel_format(13000, (13, 5))
    assert "CUDA 13.0 or older" in err.value.fix and "output='cubin'" in err.value.fix


# failures inside the callbacks reach the user -----------------------------------------------
def swallowed(callback, *args):
    """Call ``callback`` as TensorRT's Python plugin wrapper does: an exception is printed and
    turned into a failure status, never raised."""
    try:
        callback(*args)
    except Exception:
        return False
    return True


def test_a_callback_exception_is_raised_by_the_build_not_the_generic_error(trtp):
    from visionrt.export.build import BuildError

    x, rois = TensorDesc((1, 4, 8, 8), "INT8"), TensorDesc((3, 5), "INT8")
    with pytest.raises(PluginError, match="float32 or float16 tensors, not INT8") as err:
        with tensorrt_registration.callback_failures():
            assert not swallowed(trtp.plugins["RoiPool2d"]["register"], x, rois, 2, 2, 0.25)
            raise BuildError("TensorRT failed to parse model.onnx: node 0 (RoiPool2d): UNSUPPORTED_NODE",
                             fix="build the TensorRT-flavour ONNX with full TensorRT >= 10.9")
    assert "export the model in fp32 or fp16" in err.value.fix  # the callback's own fix, not the generic one
    assert isinstance(err.value.__cause__, BuildError)


def test_an_unexpected_callback_exception_is_wrapped_with_its_cause(trtp, monkeypatch):
    monkeypatch.setattr(tensorrt_registration._builder, "kernel", lambda *a: 1 / 0)
    x, rois = TensorDesc((1, 4, 8, 8), "FLOAT"), TensorDesc((3, 5), "FLOAT")
    with pytest.raises(PluginError, match="plugin callback failed: ZeroDivisionError") as err:
        with tensorrt_registration.callback_failures():
            assert not swallowed(trtp.plugins["RoiPool2d"]["aot_impl"], x, rois, 2, 2, 0.25, (), 0)
            raise RuntimeError("TensorRT: engine build failed")
    assert isinstance(err.value.__cause__, ZeroDivisionError)


def test_a_build_without_callback_failures_keeps_its_own_error(trtp):
    x, rois = TensorDesc((1, 4, 8, 8), "FLOAT"), TensorDesc((3, 5), "FLOAT")
    assert swallowed(trtp.plugins["RoiPool2d"]["register"], x, rois, 2, 2, 0.25)
    with pytest.raises(ValueError, match="its own"):
        with tensorrt_registration.callback_failures():
            raise ValueError("its own")
    # a failure left from an earlier build does not leak into the next one
    assert not swallowed(trtp.plugins["RoiPool2d"]["register"], TensorDesc((1, 4, 8, 8), "INT8"), rois, 2, 2, 0.25)
    with pytest.raises(ValueError, match="next build"):
        with tensorrt_registration.callback_failures():
            raise ValueError("next build")


def test_preflight_compiles_every_op_for_the_build_gpu(monkeypatch):
    require_or_skip("cuda.bindings.nvrtc", reason="the pre-flight compiles with NVRTC: pip install 'visionrt[cuda]'")
    compiled = []
    real = nvrtc.compile_file

    def spy(path, *args):
        compiled.append((path.parent.name, *args[::2]))  # (folder, arch, output)
        return real(path, *args)

    monkeypatch.setattr(nvrtc, "compile_file", spy)
    monkeypatch.setattr(tensorrt_registration, "_current_device", lambda: (86, 99000))
    assert tensorrt_registration.preflight(["RoiAlign2d", "MaxPool2dWithIndices", "MaxUnpool2d"]) == (86, "ptx")
    assert compiled == [("roi_align", 86, "ptx"), ("max_unpool", 86, "ptx")]  # one compile per kernel file


def test_preflight_refuses_before_parsing(monkeypatch):
    monkeypatch.setattr(tensorrt_registration, "_current_device", lambda: (90, 12080))
    monkeypatch.setattr(nvrtc, "nvrtc_version", lambda: (12, 9))
    with pytest.raises(PluginError, match=r"driver \(CUDA 12\.8\) cannot JIT the PTX of NVRTC 12\.9"):
        tensorrt_registration.preflight(["EfficientNms"])

    def broken(path, *args):
        raise nvrtc.KernelCompileError(f"NVRTC failed compiling {path.name} for sm_90", "error: expected a ';'")

    monkeypatch.setattr(nvrtc, "compile_file", broken)
    with pytest.raises(nvrtc.KernelCompileError, match="expected a ';'"):
        tensorrt_registration.preflight(["EfficientNms"], arch=90, output="cubin")


def test_preflight_without_a_device(monkeypatch):
    cudart = FailingCudart()
    cudart.cudaGetDevice = lambda: (100, 0)  # cudaErrorNoDevice
    monkeypatch.setattr(tensorrt_registration.tensorrt_env, "import_cudart", lambda: cudart)
    with pytest.raises(PluginError, match="no CUDA device to compile the plugin kernels for") as err:
        tensorrt_registration.preflight(["RoiPool2d"])
    assert "on the GPU they are for" in err.value.fix


class FailingCudart:
    """cuda-python's runtime module where the device is found but reading its attributes fails."""

    cudaError_t = types.SimpleNamespace(cudaSuccess=0)
    cudaDeviceAttr = types.SimpleNamespace(cudaDevAttrComputeCapabilityMajor=75, cudaDevAttrComputeCapabilityMinor=76)

    def cudaGetDevice(self):
        return 0, 0

    def cudaDeviceGetAttribute(self, attribute, device):
        return 101, 0  # cudaErrorInvalidDevice; the value is meaningless

    def cudaDriverGetVersion(self):
        return 0, 13000

    def cudaGetErrorName(self, err):
        return 0, b"cudaErrorInvalidDevice"

    def cudaGetErrorString(self, err):
        return 0, b"invalid device ordinal"


def test_device_attribute_errors_are_checked(monkeypatch):
    monkeypatch.setattr(tensorrt_registration.tensorrt_env, "import_cudart", FailingCudart)
    with pytest.raises(PluginError, match="compute capability of CUDA device 0: cudaErrorInvalidDevice"):
        tensorrt_registration._current_device()


@pytest.mark.parametrize("version", ["10.8.3.1", "9.3.0"])
def test_tensorrt_without_aot_plugins_is_refused(version):
    trt, _ = make_tensorrt(version)
    with pytest.raises(PluginError, match=rf"TensorRT {version} cannot.*10\.9.*\(RoiAlign2d\)") as err:
        tensorrt_registration.check_tensorrt_takes_plugins(trt, ["RoiAlign2d"])
    assert "onnxruntime" in err.value.fix
    with pytest.raises(PluginError, match="10.9"):
        tensorrt_registration.register_plugins(trt)


@pytest.mark.parametrize("module", ["tensorrt_rtx", "tensorrt_rtx_bindings"])
def test_tensorrt_rtx_is_refused_naming_the_ops_and_alternatives(module):
    trt, _ = make_tensorrt("1.7.1", name=module)
    with pytest.raises(PluginError, match=r"TensorRT-RTX has no plugin layer.*\(EfficientNms, RoiPool2d\)") as err:
        tensorrt_registration.check_tensorrt_takes_plugins(trt, ["RoiPool2d", "EfficientNms"])
    assert "full TensorRT" in err.value.fix and "onnxruntime" in err.value.fix


def test_models_without_plugin_ops_pass_the_guard():
    trt, _ = make_tensorrt("1.7.1", name="tensorrt_rtx")
    tensorrt_registration.check_tensorrt_takes_plugins(trt, [])


def test_doctor_status_here():
    from visionrt.runtime.plugins import status

    require_or_skip("cuda.bindings.nvrtc", reason="compiling the kernels needs NVRTC: pip install 'visionrt[cuda]'")

    report = status.plugin_status(arch=86)
    assert report["arch"] == "sm_86"
    assert report["tensorrt"]["TensorRT"] == "not installed" or report["tensorrt"]["TensorRT"].startswith("yes")
    assert [row["plugin"] for row in report["plugins"]] == list(registry.plugins())
    assert all(row["compiles"] and row["seconds"] >= 0 for row in report["plugins"])
    if report["tensorrt"]["TensorRT-RTX"] != "not installed":
        assert "no plugin layer" in report["tensorrt"]["TensorRT-RTX"]


def test_doctor_status_without_nvrtc(monkeypatch):
    from visionrt.runtime.plugins import status

    def missing():
        raise PluginError("NVRTC is not available: no module", fix="pip install 'visionrt[cuda]'")

    monkeypatch.setattr(nvrtc, "nvrtc_version", missing)
    report = status.plugin_status(arch=86)
    assert report["nvrtc"].startswith("missing: NVRTC is not available") and "visionrt[cuda]" in report["nvrtc"]
    assert not any(row["compiles"] for row in report["plugins"])


# the NVRTC each install extra pins, and the drivers that load its PTX ---------------------------
@pytest.mark.parametrize("extra", sorted(nvrtc.PLUGIN_DRIVER_MINIMUM), ids=lambda extra: f"[{extra}]")  # not "trt":
# a bare id is a keyword, and conftest skips the "trt" keyword without full TensorRT
def test_every_nvrtc_an_extra_admits_writes_ptx_its_minimum_driver_loads(extra):
    """pyproject.toml's NVRTC range per extra against :data:`nvrtc.PLUGIN_DRIVER_MINIMUM` (the driver
    README "GPU requirements" names) by the rule the build applies (``driver_loads_ptx_from``)."""
    tomllib = require_or_skip("tomllib")
    from packaging.requirements import Requirement
    from packaging.version import Version

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (requirement,) = [r for r in map(Requirement, extras[extra]) if r.name.startswith("nvidia-cuda-nvrtc")]
    major = 12 if requirement.name.endswith("-cu12") else 13
    admitted = [(major, minor) for minor in range(100)
                if any(Version(f"{major}.{minor}.{patch}") in requirement.specifier for patch in (0, 999))]
    assert admitted, f"{extra}: {requirement} admits no {major}.x"
    minimum = nvrtc.PLUGIN_DRIVER_MINIMUM[extra]
    assert all(nvrtc.driver_loads_ptx_from(minimum, version) for version in admitted), (extra, requirement, minimum)


def test_the_readme_names_each_minimum_driver():
    section = (ROOT / "README.md").read_text().split("## GPU requirements")[1].split("\n## ")[0]
    for extra, driver in nvrtc.PLUGIN_DRIVER_MINIMUM.items():
        assert f"`{extra}`" in section and f"CUDA {driver // 1000}.{driver % 1000 // 10}" in section, extra
