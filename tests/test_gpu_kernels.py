"""The GPU check-and-time script (``visionrt.benchmarks.gpu_plugins``): its CPU side here on any
machine; the kernels themselves against the NumPy references only on a CUDA GPU (``gpu``)."""
from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import require_or_skip
from visionrt.benchmarks import gpu_plugins
from visionrt.runtime.errors import BackendUnavailable
from visionrt.runtime.plugins import registry, tensorrt_registration
from visionrt.runtime.plugins.launch import KernelLaunch

from test_tensorrt_plugins import TensorDesc, aot, launch_of, trtp  # noqa: F401 (trtp is a fixture)


def test_arguments():
    args = gpu_plugins.parse_args(["--out", "somewhere"])
    assert (str(args.out), args.runs, args.warmup, args.quick, args.no_torchvision) == ("somewhere", 200, 20, False, False)
    assert args.kernel_format == "ptx"  # what TensorRT embeds; --kernel-format cubin for machine code
    assert gpu_plugins.parse_args(["--out", "x", "--kernel-format", "cubin"]).kernel_format == "cubin"
    with pytest.raises(SystemExit):
        gpu_plugins.parse_args([])


def test_kernel_arguments_follow_the_aot_order():
    launch = KernelLaunch("k", (1, 1, 1), (256, 1, 1), args=(7, 9))
    values, types = gpu_plugins.kernel_arguments([0x1000, 0x2000], launch, [0x3000])
    assert values == (0x1000, 0x2000, 7, 9, 0x3000)
    assert types == (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


@pytest.mark.parametrize("quick", [True, False])
def test_cases_are_valid_and_named_once(quick):
    cases = gpu_plugins.cases(quick)
    assert len({c.name for c in cases}) == len(cases)
    assert {c.plugin for c in cases} == set(registry.plugins())
    for case in cases:
        registry.get(case.plugin).resolve(case.attributes)
        assert case.dtype in ("float32", "float16")


def test_the_script_launches_exactly_as_the_plugins(trtp):  # noqa: F811
    """The launch of every case equals what the plugin's aot_impl hands TensorRT."""
    require_or_skip("cuda.bindings.nvrtc", reason="aot_impl compiles with NVRTC: pip install 'visionrt[cuda]'")
    for case in gpu_plugins.cases(quick=True):
        kernel, launch, defines = gpu_plugins.plan(case.plugin, case.dtype, [a.shape for a in case.inputs],
                                                   case.attributes)
        descs = [TensorDesc(a.shape, {"float32": "FLOAT", "float16": "HALF"}.get(str(a.dtype), "INT64"))
                 for a in case.inputs]
        theirs = launch_of(aot(trtp, case.plugin, *descs, **case.attributes))
        assert kernel == tensorrt_registration.op_module(case.plugin).KERNEL
        assert (launch.kernel, tuple(launch.grid), launch.block, launch.shared_mem, list(launch.args)) == (
            theirs["kernel"], theirs["grid"], theirs["block"], theirs["shared_mem"], theirs["args"]), case.name


def test_torchvision_runs_on_the_chosen_device():
    """``--device`` reaches torch too (not only the driver API): inputs go to ``cuda:<ordinal>``."""
    placed = []

    class Tensor:
        def to(self, device):
            placed.append(device)
            return self

    torch = type("torch", (), {"from_numpy": staticmethod(lambda array: Tensor())})
    case = next(c for c in gpu_plugins.cases(quick=True) if c.torchvision == "roi_pool")
    gpu_plugins.torchvision_op(case, torch, torchvision=type("torchvision", (), {"ops": None}), ordinal=1)
    assert placed == ["cuda:1"] * len(case.inputs)


def test_compare():
    ref = [np.array([1.0, 2.0]), np.array([3], dtype=np.int32)]
    assert gpu_plugins.compare(ref, ref, 0.0) == {"ok": True, "max_rel_diff": 0.0}
    assert not gpu_plugins.compare([np.array([1.0, 2.1]), ref[1]], ref, 1e-3)["ok"]
    assert not gpu_plugins.compare([np.zeros(3)], ref[:1], 1.0)["ok"]


def test_bandwidth_figures():
    assert gpu_plugins.peak_bandwidth(2_619_000, 5120) == pytest.approx(3.352e12, rel=1e-3)  # H100 SXM
    assert gpu_plugins.peak_bandwidth(0, 5120) is None
    assert gpu_plugins.moved_bytes([np.zeros((2, 3), np.float32), np.zeros(4, np.float16)]) == 32


def test_report(tmp_path):
    row = {"case": "RoiAlign2d avg", "plugin": "RoiAlign2d", "dtype": "float32",
           "reference": {"ok": True, "max_rel_diff": 0.0}, "kernel": {"median_ms": 0.02, "p90_ms": 0.021},
           "bytes": 34_000_000, "bandwidth_gb_s": 1700.0, "bandwidth_of_peak": 0.51,
           "torchvision_check": {"ok": True, "max_rel_diff": 1e-7}, "torchvision": {"median_ms": 0.04, "p90_ms": 0.05},
           "speedup": 2.0}
    nms = {"case": "EfficientNms", "plugin": "EfficientNms", "dtype": "float16",
           "reference": {"ok": False, "max_rel_diff": 1.0}, "kernel": {"median_ms": 0.1, "p90_ms": 0.2}}
    report = {"device": {"name": "NVIDIA H100", "arch": 90, "peak_gb_s": 3352.0}, "nvrtc": "13.5", "runs": 200,
              "warmup": 20, "torchvision": True, "machine": {}, "rows": [row, nms]}
    json_path, md_path = gpu_plugins.write_gpu_plugin_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text()) == report
    text = md_path.read_text()
    assert "NVIDIA H100 (sm_90, peak 3352 GB/s); NVRTC 13.5, CUBIN kernels" in text
    assert "| RoiAlign2d avg | ok, torchvision ok | 0.0200 (0.0210) | 0.0400 | 2.00x | 1700 | 51% |" in text
    assert "**FAIL**" in text and "| - | - | - | - |" in text


# on a GPU --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu():
    try:
        return gpu_plugins.Gpu(output="cubin")  # the kernels' results; PTX loading: test_the_script_end_to_end
    except BackendUnavailable as err:
        pytest.skip(f"no CUDA GPU: {err}")


def test_without_a_gpu_the_script_says_so():
    try:
        gpu_plugins.Gpu(output="cubin")
    except BackendUnavailable as err:
        assert "driver" in str(err) or "cuda-python" in str(err)
    else:
        pytest.skip("this machine has a CUDA GPU")


def test_without_a_gpu_the_script_exits_2_with_one_line(tmp_path):
    try:
        gpu_plugins.Gpu(output="cubin")
    except BackendUnavailable:
        pass
    else:
        pytest.skip("this machine has a CUDA GPU")
    done = subprocess.run([sys.executable, "-m", "visionrt.benchmarks.gpu_plugins", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.gpu
@pytest.mark.parametrize("case", gpu_plugins.cases(quick=True), ids=lambda c: c.name)
def test_kernel_matches_the_reference(gpu, case):
    expected = registry.get(case.plugin).run(*case.inputs, **case.attributes)
    outputs, _ = gpu.run(case, expected)
    result = gpu_plugins.compare(outputs, expected, case.tolerance)
    assert result["ok"], result


@pytest.mark.gpu
@pytest.mark.parametrize("kernel_format", ["ptx", "cubin"])
def test_the_script_end_to_end(gpu, tmp_path, kernel_format):
    args = ["--out", str(tmp_path), "--quick", "--runs", "3", "--warmup", "1", "--kernel-format", kernel_format]
    assert gpu_plugins.main(args) == 0
    report = json.loads((tmp_path / "gpu_plugins.json").read_text())
    assert report["device"]["arch"] == gpu.arch and all(row["reference"]["ok"] for row in report["rows"])
    assert report["kernel_format"] == kernel_format


@pytest.mark.gpu
def test_max_pool_kernel_follows_the_reference_on_nan_and_minus_inf(gpu):
    """NaN wins (the last one), a window of -inf gives -inf at its first element inside the input."""
    rng = np.random.default_rng(3)
    x = rng.choice([np.nan, -np.inf, -np.inf, 1.0, 2.0], size=(2, 3, 9, 11)).astype(np.float32)
    for geometry in (dict(kernel_h=2, kernel_w=2, stride_h=2, stride_w=2),
                     dict(kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, pad_top=1, pad_left=1, pad_bottom=1,
                          pad_right=1)):
        case = gpu_plugins.Case("special values", "MaxPool2dWithIndices", [x], geometry)
        expected = registry.get(case.plugin).run(x, **geometry)
        outputs, _ = gpu.run(case, expected)
        for output, reference in zip(outputs, expected):
            np.testing.assert_array_equal(output, reference)  # NaN where NaN, same indices


@pytest.mark.gpu
@pytest.mark.slow
def test_max_unpool_kernel_writes_two_to_the_31_elements(gpu):
    """A 32x64x1024x1024 output (2^31 elements, fp16: 4 GiB): the last plane, past the int32 range,
    is where its indices put it (a 32-bit count would stop short or wrap)."""
    planes, size = 32 * 64, 512
    rng = np.random.default_rng(5)
    y = rng.standard_normal((32, 64, size, size), dtype=np.float32).astype(np.float16)
    rows = ((2 * np.arange(size))[:, None] + rng.integers(0, 2, (planes, size, size), dtype=np.int8)).astype(np.int64)
    cols = 2 * np.arange(size) + rng.integers(0, 2, (planes, size, size), dtype=np.int8)
    indices = (np.arange(planes, dtype=np.int64)[:, None, None] * 2 * size + rows) * 2 * size + cols
    del rows, cols
    indices = indices.reshape(y.shape)
    geometry = dict(kernel_h=2, kernel_w=2, stride_h=2, stride_w=2, output_height=2 * size, output_width=2 * size)
    like = [np.empty((32, 64, 2 * size, 2 * size), np.float16)]
    (out,) = gpu.run(gpu_plugins.Case("2^31", "MaxUnpool2d", [y, indices], geometry), like)[0]
    assert out.size == 2 ** 31
    for n, c in ((0, 0), (31, 63), (16, 0)):
        plane = (n * 64 + c) * (2 * size) ** 2
        expected = registry.get("MaxUnpool2d").run(y[n:n + 1, c:c + 1], indices[n:n + 1, c:c + 1] - plane, **geometry)
        np.testing.assert_array_equal(out[n, c], expected[0][0, 0])
