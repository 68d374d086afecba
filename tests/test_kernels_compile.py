"""Every plugin kernel compiles with NVRTC, warnings as errors, for every target architecture
and both element types (no GPU needed); the compile helper's error paths."""
from __future__ import annotations

import struct
import subprocess
import sys
import time

import pytest

from conftest import require_or_skip

require_or_skip("cuda.bindings.nvrtc", reason="compiling kernels needs NVRTC: pip install 'visionrt[cuda]'")

from visionrt.runtime.errors import PluginError  # noqa: E402 (after the skip)
from visionrt.runtime.plugins import nvrtc, tensorrt_registration  # noqa: E402
from visionrt.runtime.plugins.launch import DTYPE_SUFFIX  # noqa: E402
from visionrt.runtime.plugins.roi_align import tensorrt as roi_align  # noqa: E402

OPS = {module.__name__.split(".")[-2]: module for module in tensorrt_registration.op_modules()}


def entry_points(module) -> list[str]:
    """Every extern "C" kernel of an op: visionrt_<stem>_<f32|f16>."""
    source = module.KERNEL.read_text()
    stems = [line.split("visionrt_")[1].split("##")[0] for line in source.splitlines()
             if "__global__" in line and "visionrt_" in line]
    return [f"visionrt_{stem}{suffix}" for stem in stems for suffix in DTYPE_SUFFIX.values()]


def elf_arch(cubin: bytes) -> int:
    """The SM a CUDA ELF is for: bits 8-15 of e_flags (ELF64 header offset 48)."""
    assert cubin[:4] == b"\x7fELF" and struct.unpack_from("<H", cubin, 18)[0] == 190  # EM_CUDA
    return (struct.unpack_from("<I", cubin, 48)[0] >> 8) & 0xFF


@pytest.fixture(scope="module", autouse=True)
def timing():
    """Prints the time the module's compilations took (NVRTC runs once per op and arch)."""
    start = time.perf_counter()
    yield
    print(f"\nkernel compilation tests: {time.perf_counter() - start:.1f} s", file=sys.stderr)


@pytest.mark.parametrize("dtype", sorted(DTYPE_SUFFIX))
@pytest.mark.parametrize("arch", nvrtc.ARCHS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_kernel_compiles_to_cubin(op, arch, dtype):
    """One NVRTC call per op and arch builds both element types (cached across dtypes)."""
    module = OPS[op]
    compiled = nvrtc.compile_file(module.KERNEL, arch, module.EXAMPLE_DEFINES)
    assert elf_arch(compiled.code) == arch
    for name in entry_points(module):
        if name.endswith(DTYPE_SUFFIX[dtype]):
            assert name.encode() in compiled.code, f"{name} missing from the {op} CUBIN"


def test_every_op_has_float32_and_float16_entry_points():
    assert entry_points(OPS["max_unpool"]) == ["visionrt_max_pool_with_indices_f32", "visionrt_max_pool_with_indices_f16",
                                               "visionrt_max_unpool_f32", "visionrt_max_unpool_f16"]
    assert all(len(entry_points(module)) >= 2 for module in OPS.values())


@pytest.mark.parametrize("half_pixel", [0, 1])
@pytest.mark.parametrize("mode_max", [0, 1])
def test_roi_align_variants_compile(half_pixel, mode_max):
    compiled = nvrtc.compile_file(roi_align.KERNEL, 86, roi_align.defines(half_pixel, mode_max, 0.25))
    assert elf_arch(compiled.code) == 86


@pytest.mark.parametrize("op", ["roi_pool", "roi_align", "max_unpool"])
def test_elementwise_kernels_count_in_64_bits(op):
    """Outputs of 2^31 elements and more: no 32-bit count argument; every entry point walks a
    64-bit count (int32 shape factors multiplied as long long) in the grid-stride loop of
    visionrt_cuda.cuh, whose index is 64-bit; and it still compiles warning-free."""
    source = OPS[op].KERNEL.read_text()
    loops = source.count("VRT_FOR_EACH_ELEMENT(index, static_cast<long long>(")
    assert "int total" not in source and "global_thread_index" not in source
    assert loops == len(entry_points(OPS[op])) // 2  # one per template entry (f32 and f16 share it)
    assert "for (long long index =" in nvrtc.HEADER.read_text()
    assert nvrtc.compile_file(OPS[op].KERNEL, 90, OPS[op].EXAMPLE_DEFINES, output="ptx").code


@pytest.mark.parametrize("op", sorted(OPS))
def test_ptx_for_a_virtual_arch(op):
    module = OPS[op]
    ptx = nvrtc.compile_file(module.KERNEL, 75, module.EXAMPLE_DEFINES, output="ptx").code.decode().rstrip("\0")
    assert ".target sm_75" in ptx and ".version" in ptx
    assert all(f".entry {name}(" in ptx for name in entry_points(module))


def test_compiling_leaves_python_bytes_objects_intact():
    """NVRTC writes its log and code into the buffers it is given; they must be the compiler's own
    (a clean log is 1 byte: ``b" " * 1`` is CPython's shared ``b" "``). Run in a fresh interpreter
    (cold cache, and a failure corrupts only that process)."""
    script = (
        "from visionrt.runtime.plugins import nvrtc\n"
        "nvrtc.compile_source('extern \"C\" __global__ void k(float* x) { x[0] = 1.0f; }', 80)\n"
        "nvrtc.compile_source('extern \"C\" __global__ void k(float* x) { x[0] = 2.0f; }', 80, output='ptx')\n"
        "assert b' ' == bytes([32]), b' '\n"
        "assert b'a b'.split(b' ') == [b'a', b'b']\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_broken_kernel_reports_the_compiler_log():
    with pytest.raises(nvrtc.KernelCompileError, match="failed") as err:
        nvrtc.compile_source('extern "C" __global__ void k(float* x) { x[0] = undefined_name; }', 80)
    assert "undefined_name" in err.value.log and "identifier" in err.value.log
    assert isinstance(err.value, PluginError) and err.value.fix


def test_a_warning_fails_the_compilation():
    source = 'extern "C" __global__ void k(float* x) { int unused; x[0] = 1.0f; }'
    with pytest.raises(nvrtc.KernelCompileError, match="warned") as err:
        nvrtc.compile_source(source, 80)
    assert "unused" in err.value.log


def test_missing_define_is_a_compile_error():
    with pytest.raises(nvrtc.KernelCompileError, match="SPATIAL_SCALE"):
        nvrtc.compile_file(OPS["roi_pool"].KERNEL, 80, {})


def test_results_are_cached_by_source_arch_output_and_defines():
    module = OPS["roi_pool"]
    first = nvrtc.compile_file(module.KERNEL, 80, module.EXAMPLE_DEFINES)
    assert nvrtc.compile_file(module.KERNEL, 80, dict(module.EXAMPLE_DEFINES)) is first
    assert nvrtc.compile_file(module.KERNEL, 80, module.defines(0.5)) is not first
    assert nvrtc.compile_file(module.KERNEL, 80, module.EXAMPLE_DEFINES, output="ptx") is not first


def test_unsupported_arch_names_the_supported_ones():
    with pytest.raises(PluginError, match="sm_61.*supports.*sm_75"):
        nvrtc.compile_source('extern "C" __global__ void k() {}', 61)


def test_missing_nvrtc_names_the_extra(monkeypatch):
    import cuda.bindings

    monkeypatch.setitem(sys.modules, "cuda.bindings.nvrtc", None)
    monkeypatch.delattr(cuda.bindings, "nvrtc", raising=False)
    monkeypatch.setattr(nvrtc, "_cache", {})
    with pytest.raises(PluginError, match="NVRTC is not available") as err:
        nvrtc.compile_source('extern "C" __global__ void k() {}', 80)
    assert "visionrt[cuda]" in err.value.fix


@pytest.mark.parametrize("value", [0.1, 1 / 16, -0.0, 1e-40, 3.4e38, 0.7])
def test_float_literals_are_exact_float32(value):
    import numpy as np

    literal = nvrtc.float_literal(value)
    assert literal.endswith("f") and np.float32(float.fromhex(literal[:-1])) == np.float32(value)


def test_infinite_and_nan_literals():
    assert nvrtc.float_literal(float("-inf")) == "(-__int_as_float(0x7f800000))"
    with pytest.raises(PluginError, match="NaN"):
        nvrtc.float_literal(float("nan"))


def test_driver_ptx_compatibility():
    assert nvrtc.driver_loads_ptx_from(13050, (13, 5))
    assert not nvrtc.driver_loads_ptx_from(13000, (13, 5))
    assert nvrtc.driver_loads_ptx_from(13000, (12, 9))
