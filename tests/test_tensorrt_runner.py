"""TensorRT runner: every check that needs no GPU, the inference loop over a stand-in device, and a
real GPU run (skipped without one). TensorRT-RTX absent: its tests skip; installed but broken:
they fail (``tensorrt_env.BrokenInstall``), as does a failed build on a GPU it supports."""
from __future__ import annotations

import ctypes
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from visionrt.export.build import build
from visionrt.runtime import tensorrt_env
from visionrt.runtime.backends.base import TensorSpec
from visionrt.runtime.backends.onnxruntime import OnnxRuntimeRunner
from visionrt.runtime.backends.tensorrt import CudaError, TensorRTRunner, deserialize
from visionrt.runtime.errors import ArtifactError, BackendUnavailable, EngineMismatch, InputError
from visionrt.runtime.manifest import ModelDir

from test_build import model_dir_with, needs_rtx  # the tiny model and its model directory


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A model directory with the tiny ONNX and its TensorRT-RTX engine (batch 1..4)."""
    if tensorrt_env.installed("tensorrt_rtx") is None:  # a broken install raises: a failure, not a skip
        pytest.skip("TensorRT-RTX is not installed (pip install 'visionrt[rtx]')")
    root = tmp_path_factory.mktemp("tiny")
    model_dir_with(root)
    build(root, flavour="tensorrt_rtx", min_batch=1, opt_batch=2, max_batch=4)
    return ModelDir.open(root)


def runner_with(built, **facts) -> TensorRTRunner:
    return TensorRTRunner(built.path("rtx"), {**built.manifest.engines["rtx"], **facts})


def hide(monkeypatch, *flavours: str) -> None:
    """Make the TensorRT modules of ``flavours`` unimportable."""
    for name in flavours:
        for module in tensorrt_env.FLAVOURS[name].modules:
            monkeypatch.setitem(sys.modules, module, None)


def test_metadata_comes_from_the_build_facts(built):
    runner = TensorRTRunner.from_model_dir(built, "rtx")
    assert runner.name == "tensorrt-rtx"
    assert runner.inputs == [TensorSpec("images", (None, 3, 16, 16), "float32")]
    assert runner.outputs == [TensorSpec("logits", (None, 4), "float32")]


def test_missing_engine_or_facts(built):
    with pytest.raises(ArtifactError, match="no engine 'trt' .*it has: rtx"):
        TensorRTRunner.from_model_dir(built, "trt")
    with pytest.raises(ArtifactError, match="lack profile"):
        TensorRTRunner(built.path("rtx"), {k: v for k, v in built.manifest.engines["rtx"].items() if k != "profile"})


def test_other_release_is_a_mismatch(built):
    with pytest.raises(EngineMismatch, match=r"built with TensorRT-RTX 1\.0\.0, this machine has TensorRT-RTX \d") as err:
        runner_with(built, tensorrt_version="1.0.0").activate()
    assert "visionrt build" in err.value.fix


def test_other_flavour_is_a_mismatch(built, monkeypatch):
    hide(monkeypatch, "tensorrt")
    with pytest.raises(EngineMismatch, match=r"built with TensorRT 10\.13\.0, this machine has TensorRT-RTX") as err:
        runner_with(built, flavour="tensorrt", tensorrt_version="10.13.0").activate()
    assert "visionrt[trt]" in err.value.fix


def test_no_tensorrt_at_all(built, monkeypatch):
    hide(monkeypatch, *tensorrt_env.FLAVOURS)
    with pytest.raises(BackendUnavailable, match=r"no TensorRT is installed .*visionrt\[rtx\]"):
        runner_with(built).activate()


def test_truncated_engine_is_caught_before_loading(built, tmp_path):
    half = tmp_path / "half.engine"
    data = built.path("rtx").read_bytes()
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=f"has {len(data) // 2} bytes, the build wrote {len(data)}: truncated"):
        TensorRTRunner(half, built.manifest.engines["rtx"]).activate()


def test_truncated_engine_fails_to_deserialize_cleanly(built):
    """TensorRT-RTX reads the plan header without a GPU: a cut engine is an error, not a crash."""
    trt = tensorrt_env.import_tensorrt("tensorrt_rtx")
    logger = tensorrt_env.make_logger(trt, keep="WARNING")
    data = built.path("rtx").read_bytes()
    with pytest.raises(ArtifactError, match="cannot deserialize engine half.engine: .*rebuild") as err:
        deserialize(trt, trt.Runtime(logger), data[: len(data) // 2], logger, "half.engine")
    if not tensorrt_env.find_gpus()[0]:
        assert "blobSize" in str(err.value)  # the header says how long the plan should be


def test_no_gpu_says_use_onnxruntime(built):
    gpus, _ = tensorrt_env.find_gpus()
    if gpus:
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendUnavailable, match=r"no CUDA GPU \(.+\): TensorRT engines run only on an NVIDIA GPU "
                                                 r"\(use the onnxruntime backend\)"):
        runner_with(built).activate()


@pytest.mark.parametrize("cc, fix", [("9.0", "does not support compute capability 9.0.*onnxruntime"),
                                     ("7.5", "--compute-capability 7.5")])
def test_gpu_the_engine_does_not_target(built, monkeypatch, cc, fix):
    gpu = tensorrt_env.Gpu(0, "Some GPU", cc, 80_000)
    monkeypatch.setattr(tensorrt_env, "find_gpus", lambda: ([gpu], None))
    with pytest.raises(EngineMismatch, match=f"targets compute capability 8.0, .*; this GPU \\(Some GPU\\) is {cc}") as err:
        runner_with(built).activate()
    assert err.match(fix)


# the inference loop over a stand-in device --------------------------------------------------
class HostCudart:
    """Host memory posing as device memory: the part of cuda-python the inference loop uses."""

    cudaError_t = SimpleNamespace(cudaSuccess=0)
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, fail_above: int | None = None):
        self.blocks = {}  # "device" pointer -> ctypes buffer
        self.pinned = {}  # pinned host pointer -> ctypes buffer
        self.fail_above = fail_above  # cudaMalloc of more bytes fails (out of memory)

    def cudaMalloc(self, nbytes):
        if self.fail_above is not None and nbytes > self.fail_above:
            return 2, None  # cudaErrorMemoryAllocation
        return 0, self._allocate(self.blocks, nbytes)

    def cudaFree(self, pointer):
        del self.blocks[pointer]  # a KeyError here is a double free
        return (0,)

    def cudaMallocHost(self, nbytes):
        return 0, self._allocate(self.pinned, nbytes)

    def cudaFreeHost(self, pointer):
        del self.pinned[pointer]
        return (0,)

    def cudaGetErrorName(self, err):
        return 0, b"cudaErrorMemoryAllocation"

    def cudaGetErrorString(self, err):
        return 0, b"out of memory"

    @staticmethod
    def _allocate(pool, nbytes):
        block = ctypes.create_string_buffer(nbytes)
        pool[ctypes.addressof(block)] = block
        return ctypes.addressof(block)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)


class SumContext:
    """Stands in for an execution context of ``logits[b, j] = (j + 1) * sum(images[b])``."""

    def __init__(self):
        self.shapes, self.addresses = {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return (self.shapes["images"][0], 4)

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer
        return True

    def execute_async_v3(self, stream):
        images = _view(self.addresses["images"], self.shapes["images"])
        logits = _view(self.addresses["logits"], self.get_tensor_shape("logits"))
        logits[:] = images.sum(axis=(1, 2, 3))[:, None] * np.arange(1, 5, dtype=np.float32)
        return True


def _view(pointer, shape):
    count = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(pointer)).reshape(shape)


def test_inference_loop_with_dynamic_batch(built):
    runner = runner_with(built)
    cudart = runner._cudart = HostCudart()
    runner._context, runner._stream, runner.is_active = SumContext(), 0, True
    rng = np.random.default_rng(0)
    for batch in (2, 4, 1):
        images = rng.standard_normal((batch, 3, 16, 16), dtype=np.float32)
        logits = runner.infer({"images": images})["logits"]
        assert logits.shape == (batch, 4)
        np.testing.assert_allclose(logits, images.sum(axis=(1, 2, 3))[:, None] * [1, 2, 3, 4], rtol=1e-5)
    assert runner._buffers["images"][1] == 4 * 3 * 16 * 16 * 4  # grown to the largest batch, never shrunk
    assert len(cudart.blocks) == 2  # the smaller first buffers were freed
    assert len(cudart.pinned) == 2 and runner._pinned["logits"][1] == 4 * 4 * 4  # pinned host staging, likewise
    with pytest.raises(InputError, match="batch 5, the engine takes 1..4"):
        runner.infer({"images": np.zeros((5, 3, 16, 16), np.float32)})
    runner.deactivate()
    assert not cudart.blocks and not cudart.pinned


def test_outputs_stay_valid_after_the_next_call(built):
    runner = runner_with(built)
    runner._cudart, runner._context, runner._stream, runner.is_active = HostCudart(), SumContext(), 0, True
    first = runner.infer({"images": np.ones((2, 3, 16, 16), np.float32)})["logits"]
    runner.infer({"images": np.zeros((2, 3, 16, 16), np.float32)})
    np.testing.assert_array_equal(first, np.full((2, 1), 768.0) * [1, 2, 3, 4])
    runner.deactivate()


def test_a_failed_growth_leaves_no_freed_pointer(built):
    """Growing a buffer frees the old one first; when the new allocation fails, the freed pointer
    must not stay in the table (the next, smaller call would hand it to TensorRT, and
    deactivation would free it a second time)."""
    runner = runner_with(built)
    cudart = runner._cudart = HostCudart(fail_above=2 * 3 * 16 * 16 * 4)
    runner._context, runner._stream, runner.is_active = SumContext(), 0, True
    runner.infer({"images": np.ones((2, 3, 16, 16), np.float32)})
    with pytest.raises(CudaError, match="allocate 12288 bytes of device memory for 'images'.*out of memory"):
        runner.infer({"images": np.ones((4, 3, 16, 16), np.float32)})
    assert all(pointer in cudart.blocks for pointer, _ in runner._buffers.values())
    logits = runner.infer({"images": np.ones((1, 3, 16, 16), np.float32)})["logits"]  # reallocates
    np.testing.assert_array_equal(logits, [[768.0, 1536.0, 2304.0, 3072.0]])
    runner.deactivate()  # a double free raises KeyError in the stand-in
    assert not cudart.blocks and not cudart.pinned


def test_cuda_packages_follow_the_tensorrt_wheels(built, monkeypatch):
    assert tensorrt_env.built_for_cuda("tensorrt_rtx") == 13  # tensorrt-rtx-cu13-* (the rtx extra)
    assert tensorrt_env.cuda_bindings_major() == 13
    monkeypatch.setattr(tensorrt_env, "built_for_cuda", lambda name: 12)
    with pytest.raises(BackendUnavailable, match="built for CUDA 12, the installed cuda-bindings for CUDA 13") as err:
        runner_with(built).activate()
    assert "cuda-bindings>=12,<13" in err.value.fix


@pytest.mark.parametrize("dtype", ["bf16", "fp8", "fp4"])  # as the build facts name them
def test_io_without_a_numpy_type_is_a_clear_error(built, dtype):
    facts = built.manifest.engines["rtx"]
    runner = runner_with(built, outputs=[{**facts["outputs"][0], "dtype": dtype}])
    with pytest.raises(ArtifactError, match=f"tensor 'logits' is {dtype}.*NumPy") as err:
        runner.activate()
    assert "float32 or float16" in err.value.fix


# on a GPU -----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("flavour", [pytest.param("tensorrt_rtx", marks=needs_rtx),
                                     pytest.param("tensorrt", marks=pytest.mark.trt)])
def test_engine_matches_onnxruntime_on_a_gpu(tmp_path, flavour):
    """A build failure here is a failure: the only skips are no GPU, no such TensorRT, and a GPU
    that TensorRT-RTX does not support at all (Hopper), told before building."""
    gpus, why = tensorrt_env.find_gpus()
    if not gpus:
        pytest.skip(f"no CUDA GPU ({why})")
    trt = tensorrt_env.installed(flavour)  # broken: raises
    if trt is None:
        pytest.skip(f"{tensorrt_env.FLAVOURS[flavour].title} is not installed")
    here = gpus[0].compute_capability
    if flavour == "tensorrt_rtx" and here not in tensorrt_env.rtx_targets(trt):
        pytest.skip(f"TensorRT-RTX does not support this GPU (compute capability {here})")
    model_dir = model_dir_with(tmp_path)
    result = build(model_dir, flavour=flavour, max_batch=4,
                   compute_capabilities=[here] if flavour == "tensorrt_rtx" else None)
    reference = OnnxRuntimeRunner(model_dir.path("onnx"))
    rng = np.random.default_rng(1)
    with TensorRTRunner.from_model_dir(model_dir, result.key) as runner:
        for batch in (1, 4, 3):
            feed = {"images": rng.standard_normal((batch, 3, 16, 16), dtype=np.float32)}
            np.testing.assert_allclose(runner.infer(feed)["logits"], reference.infer(feed)["logits"],
                                       rtol=1e-3, atol=1e-3)


@needs_rtx
def test_doctor_report(monkeypatch):
    rtx = tensorrt_env.report()["flavours"]["tensorrt_rtx"]
    assert rtx["installed"] and rtx["can_build"] and rtx["version"]
    assert {"7.5", "8.6", "8.9", "12.0"} <= set(rtx["compute_capabilities"])
    hide(monkeypatch, *tensorrt_env.FLAVOURS)
    monkeypatch.setattr(tensorrt_env, "find_gpus", lambda: ([], "no NVIDIA driver"))
    report = tensorrt_env.report()
    assert report["no_gpu_reason"] == "no NVIDIA driver" and report["gpus"] == []
    assert not report["flavours"]["tensorrt"]["can_build"]
    assert "visionrt[rtx]" in report["flavours"]["tensorrt_rtx"]["fix"]


# absent or broken ------------------------------------------------------------------------------
@pytest.fixture
def broken_tensorrt(tmp_path, monkeypatch):
    """A ``tensorrt`` package on sys.path whose import fails as a wheel without its libraries does."""
    package = tmp_path / "tensorrt"
    package.mkdir()
    (package / "__init__.py").write_text(
        'raise OSError("libnvinfer.so.10: cannot open shared object file: No such file or directory")\n')
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    return package


def test_a_broken_install_is_an_error_not_an_absence(broken_tensorrt):
    with pytest.raises(tensorrt_env.BrokenInstall, match=r"TensorRT is installed but cannot be imported "
                                                          r"\(tensorrt: OSError: libnvinfer\.so\.10") as err:
        tensorrt_env.installed("tensorrt")
    assert "--force-reinstall" in err.value.fix
    with pytest.raises(tensorrt_env.BrokenInstall):
        tensorrt_env.resolve("auto")  # full TensorRT is tried first: broken is not "use the other one"


def test_a_missing_dependency_of_the_module_is_broken_too(broken_tensorrt):
    (broken_tensorrt / "__init__.py").write_text("import tensorrt_libs_that_is_not_there\n")
    with pytest.raises(tensorrt_env.BrokenInstall, match="No module named 'tensorrt_libs_that_is_not_there'"):
        tensorrt_env.installed("tensorrt")


def test_an_absent_flavour_is_none(monkeypatch):
    hide(monkeypatch, "tensorrt")
    assert tensorrt_env.installed("tensorrt") is None


def test_doctor_reports_a_broken_install_in_its_row(broken_tensorrt):
    from visionrt.runtime.plugins import status

    row = tensorrt_env.report()["flavours"]["tensorrt"]
    assert row["installed"] and not row["can_build"] and "OSError: libnvinfer" in row["broken"]
    assert "--force-reinstall" in row["fix"]
    assert status._verdict("tensorrt", ["RoiPool2d"]).startswith("broken: TensorRT is installed but")


@needs_rtx
def test_the_runner_logger_keeps_only_the_latest_messages():
    trt = tensorrt_env.import_tensorrt("tensorrt_rtx")
    logger = tensorrt_env.make_logger(trt, keep="WARNING", limit=3)
    for i in range(10):
        logger.log(trt.ILogger.Severity.WARNING, f"warning {i}")
        logger.log(trt.ILogger.Severity.INFO, "chatter")  # below `keep`: not kept
    logger.log(trt.ILogger.Severity.ERROR, "the cause")
    assert list(logger.messages) == [("WARNING", "warning 8"), ("WARNING", "warning 9"), ("ERROR", "the cause")]
    assert logger.errors() == ["the cause"]
