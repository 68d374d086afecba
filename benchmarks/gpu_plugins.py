"""Check the plugin kernels on a CUDA GPU and time them against torchvision.

    python -m visionrt.benchmarks.gpu_plugins --out results/gpu_plugins

Each kernel is compiled by NVRTC for this GPU, by default as PTX for its ``compute_XY`` (the form
TensorRT's ahead-of-time plugins embed, JIT-compiled by the driver, which must be no older than
the NVRTC: checked first, as the engine build does) or with ``--kernel-format cubin`` as machine
code for its ``sm_XY``; loaded with ``cuModuleLoadData`` and
launched with ``cuLaunchKernel`` using the launch its TensorRT plugin uses: the op module's
``launch*`` and ``defines`` functions (``runtime/plugins/<op>/tensorrt.py``), arguments in
TensorRT's AOT order (inputs, int32 scalars, outputs). Every output is checked against the
NumPy reference (through ``registry``) and, where torchvision imports, against its CUDA
``roi_pool``/``roi_align``/``batched_nms``. Then kernel and torchvision are timed with CUDA
events: warm-up, then the median (and p90) of ``--runs`` single launches. For the
memory-bound ops the report gives the achieved bandwidth, bytes moved (inputs read once,
outputs written once) over time, against the peak from the device attributes
(2 x memory clock x bus width).

Writes ``gpu_plugins.json`` and ``gpu_plugins.md`` under ``--out``. Needs an NVIDIA driver and
``visionrt[cuda]``; torch + torchvision are optional. ``--quick`` runs small sizes (the tests).
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from visionrt.runtime import atomic
from visionrt.runtime.errors import BackendUnavailable, VisionRTError
from visionrt.runtime.plugins import nvrtc, registry, tensorrt_registration
from visionrt.runtime.plugins.launch import KernelLaunch
from visionrt.runtime.plugins.max_unpool import tensorrt as max_unpool
from visionrt.runtime.plugins.nms import tensorrt as nms
from visionrt.runtime.plugins.roi_align import tensorrt as roi_align
from visionrt.runtime.plugins.roi_pool import tensorrt as roi_pool

from .machine import describe_machine

Shapes = Sequence[Sequence[int]]

#: Per plugin: (its kernel file, and (dtype, input shapes, attributes) -> (launch, defines)),
#: the same functions the plugin's aot_impl calls.
PLANS: dict[str, tuple[Path, Callable[[str, Shapes, Mapping[str, Any]], tuple[KernelLaunch, dict]]]] = {
    "RoiPool2d": (roi_pool.KERNEL, lambda dtype, s, a: (
        roi_pool.launch(dtype, s[0], s[1], a["pooled_height"], a["pooled_width"]),
        roi_pool.defines(a["spatial_scale"]))),
    "RoiAlign2d": (roi_align.KERNEL, lambda dtype, s, a: (
        roi_align.launch(dtype, s[0], s[1], a["output_height"], a["output_width"], a["sampling_ratio"]),
        roi_align.defines(a["half_pixel"], a["mode_max"], a["spatial_scale"]))),
    "EfficientNms": (nms.KERNEL, lambda dtype, s, a: (
        nms.launch(dtype, s[1], a["class_agnostic"], a["max_output_boxes"], a["pre_nms_top_k"]),
        nms.defines(a["iou_threshold"], a["score_threshold"]))),
    "MaxPool2dWithIndices": (max_unpool.KERNEL, lambda dtype, s, a: (
        max_unpool.launch_pool(dtype, s[0], a["kernel_h"], a["kernel_w"], a["pad_bottom"], a["pad_left"],
                               a["pad_right"], a["pad_top"], a["stride_h"], a["stride_w"]),
        max_unpool.defines())),
    "MaxUnpool2d": (max_unpool.KERNEL, lambda dtype, s, a: (
        max_unpool.launch_unpool(dtype, s[0], a["kernel_h"], a["kernel_w"], a["output_height"], a["output_width"],
                                 a["pad_left"], a["pad_top"], a["stride_h"], a["stride_w"]),
        max_unpool.defines())),
}


def plan(plugin: str, dtype: str, shapes: Shapes, attributes: Mapping[str, Any]) -> tuple[Path, KernelLaunch, dict]:
    """Kernel file, launch and defines of ``plugin`` for inputs of ``shapes`` (attributes resolved)."""
    kernel, make = PLANS[plugin]
    launch, defines = make(dtype, shapes, registry.get(plugin).resolve(attributes))
    return kernel, launch, defines


def kernel_arguments(inputs: Sequence[int], launch: KernelLaunch, outputs: Sequence[int]) -> tuple[tuple, tuple]:
    """``cuLaunchKernel``'s (values, types): input pointers, int32 scalars, output pointers."""
    values = (*inputs, *launch.args, *outputs)
    types = (ctypes.c_void_p,) * len(inputs) + (ctypes.c_int,) * len(launch.args) + (ctypes.c_void_p,) * len(outputs)
    return tuple(int(v) for v in values), types


# cases ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    """One plugin on one set of inputs: what to run, how close to the reference, what to time against."""

    name: str
    plugin: str
    inputs: list[np.ndarray]
    attributes: dict[str, Any]
    tolerance: float = 0.0                 # max |kernel - reference| / (1 + |reference|)
    torchvision: str | None = None         # "roi_pool", "roi_align" or "nms"
    memory_bound: bool = True              # report bandwidth

    @property
    def dtype(self) -> str:
        return str(self.inputs[0].dtype)


def _feature_map_and_rois(rng, batch, channels, size, num_rois, scale, dtype):
    """A feature map and RoIs ``(x1, y1, x2, y2)`` in image coordinates (image = size / scale)."""
    x = rng.standard_normal((batch, channels, size, size)).astype(dtype)
    image = size / scale
    corner = rng.uniform(-0.05 * image, 0.9 * image, (num_rois, 2))
    extent = rng.uniform(0.02 * image, 0.5 * image, (num_rois, 2))
    boxes = np.concatenate([corner, corner + extent], axis=1)
    boxes[:3] = [[0.3 * image, 0.3 * image] * 2,                       # zero size
                 [0.6 * image, 0.5 * image, 0.2 * image, 0.1 * image],  # reversed corners
                 [1.2 * image, 1.1 * image, 1.5 * image, 1.4 * image]]  # wholly outside
    return x, boxes.astype(dtype), rng.integers(0, batch, num_rois)


def _detections(rng, batch, num_boxes, num_classes, dtype, ties=False):
    """Boxes in a 640-pixel image and sigmoid scores, most of them low (as a detector's are);
    ``ties``: scores in steps of 0.1 instead, so that many are equal."""
    centre = rng.uniform(0, 640, (batch, num_boxes, 2))
    size = rng.uniform(8, 200, (batch, num_boxes, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=-1).astype(dtype)
    shape = (batch, num_boxes, num_classes)
    scores = rng.integers(0, 10, shape) / 10 if ties else 1 / (1 + np.exp(-rng.normal(-6.0, 2.0, shape)))
    return boxes, scores.astype(dtype)


def cases(quick: bool, seed: int = 0) -> list[Case]:
    """The checked and timed cases: realistic sizes, or small ones with ``quick``."""
    rng = np.random.default_rng(seed)
    rois, channels, size, batch = (64, 16, 32, 2) if quick else (512, 256, 64, 2)
    # (images, boxes, classes, pre_nms_top_k, tied scores)
    nms_sizes = ([(3, 200, 8, 48, False), (2, 100, 4, 100, True)] if quick else
                 [(1, 1000, 80, 4096, False), (1, 5000, 80, 4096, False), (4, 1000, 80, 1000, True)])
    out = []
    for dtype in ("float32", "float16"):
        tol = 1e-5 if dtype == "float32" else 2e-3
        x, boxes, index = _feature_map_and_rois(rng, batch, channels, size, rois, 1 / 16, dtype)
        rois5 = np.concatenate([index[:, None].astype(dtype), boxes], axis=1)
        out.append(Case(f"RoiPool2d {rois} RoIs x {channels} ch 7x7 from {size}x{size} {dtype}", "RoiPool2d",
                        [x, rois5], dict(pooled_height=7, pooled_width=7, spatial_scale=1 / 16),
                        torchvision="roi_pool"))
        for mode_max, half_pixel in ((0, 1), (0, 0), (1, 1)):
            attrs = dict(output_height=7, output_width=7, sampling_ratio=2, spatial_scale=1 / 16,
                         mode_max=mode_max, half_pixel=half_pixel)
            mode = f"{'max' if mode_max else 'avg'} {'half_pixel' if half_pixel else 'output_half_pixel'}"
            out.append(Case(f"RoiAlign2d {mode} {rois} RoIs x {channels} ch 7x7 from {size}x{size} {dtype}",
                            "RoiAlign2d", [x, boxes, index.astype(np.int64)], attrs, tol,
                            torchvision=None if mode_max else "roi_align"))
        for batch_size, num_boxes, num_classes, top_k, ties in nms_sizes:
            det_boxes, scores = _detections(rng, batch_size, num_boxes, num_classes, dtype, ties)
            for agnostic in (0, 1):
                compare_tv = dtype == "float32" and batch_size == 1 and not agnostic and not ties
                out.append(Case(f"EfficientNms {batch_size}x{num_boxes} boxes x {num_classes} classes, top {top_k}"
                                f"{', ties' if ties else ''}{', agnostic' if agnostic else ''} {dtype}",
                                "EfficientNms", [det_boxes, scores],
                                dict(score_threshold=0.05, iou_threshold=0.5, max_output_boxes=min(100, top_k),
                                     pre_nms_top_k=top_k, class_agnostic=agnostic),
                                torchvision="nms" if compare_tv else None, memory_bound=False))
        plane = (2, 16, 33, 45) if quick else (8, 64, 128, 128)
        image = rng.standard_normal(plane).astype(dtype)
        for geometry in (dict(kernel_h=2, kernel_w=2, stride_h=2, stride_w=2),
                         dict(kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, pad_top=1, pad_left=1, pad_bottom=1,
                              pad_right=1)):
            shape = f"{geometry['kernel_h']}x{geometry['kernel_w']}/{geometry['stride_h']}"
            out.append(Case(f"MaxPool2dWithIndices {shape} {plane} {dtype}", "MaxPool2dWithIndices", [image], geometry))
            y, indices = registry.get("MaxPool2dWithIndices").run(image, **geometry)
            out.append(Case(f"MaxUnpool2d {shape} {plane} {dtype}", "MaxUnpool2d", [y, indices],
                            dict(geometry, output_height=plane[2], output_width=plane[3])))
    return out


# checks --------------------------------------------------------------------------------------
def compare(outputs: Sequence[np.ndarray], expected: Sequence[np.ndarray], tolerance: float) -> dict[str, Any]:
    """Largest relative difference over all outputs, and whether it is within ``tolerance``."""
    worst = 0.0
    for got, want in zip(outputs, expected):
        if got.shape != want.shape:
            return {"ok": False, "error": f"shape {got.shape} != {want.shape}"}
        got, want = got.astype(np.float64), want.astype(np.float64)
        if got.size:
            worst = max(worst, float(np.max(np.abs(got - want) / (1 + np.abs(want)))))
    return {"ok": bool(worst <= tolerance), "max_rel_diff": worst}


def median_p90(samples_ms: Sequence[float]) -> dict[str, float]:
    return {"median_ms": float(np.median(samples_ms)), "p90_ms": float(np.percentile(samples_ms, 90))}


def peak_bandwidth(memory_clock_khz: int, bus_width_bits: int) -> float | None:
    """Bytes per second of DDR memory (two transfers per clock); None if a driver reports 0."""
    return 2 * memory_clock_khz * 1e3 * bus_width_bits / 8 if memory_clock_khz and bus_width_bits else None


def moved_bytes(arrays: Sequence[np.ndarray]) -> int:
    return int(sum(a.nbytes for a in arrays))


# the GPU -------------------------------------------------------------------------------------
class Gpu:
    """One CUDA device through the driver API (cuda-python), on its primary context; kernels
    compiled as ``output`` (``"ptx"``, as TensorRT embeds them, or ``"cubin"``)."""

    def __init__(self, ordinal: int = 0, output: nvrtc.Output = "ptx"):
        try:
            from cuda.bindings import driver
        except ImportError as err:
            raise BackendUnavailable(f"cuda-python is not installed: {err}", fix="pip install 'visionrt[cuda]'") from err
        self.driver = driver
        try:
            self._call(driver.cuInit(0))
        except Exception as err:  # no driver library: the bindings raise their own error type
            raise BackendUnavailable(f"no usable NVIDIA driver: {err}", fix="run on a machine with a CUDA GPU") from err
        self.ordinal = ordinal
        self.device = self._call(driver.cuDeviceGet(ordinal))
        self.context = self._call(driver.cuDevicePrimaryCtxRetain(self.device))
        self._call(driver.cuCtxSetCurrent(self.context))
        attr = driver.CUdevice_attribute
        major = self._attribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        minor = self._attribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        self.arch = major * 10 + minor
        self.name = self._call(driver.cuDeviceGetName(64, self.device)).split(b"\0")[0].decode()
        clock_khz = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, self.device)[1]
        bus_bits = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, self.device)[1]
        self.peak_bytes_per_s = peak_bandwidth(clock_khz, bus_bits)
        self.driver_version = self._call(driver.cuDriverGetVersion())
        if output == "ptx":  # PluginError, as at engine build, when the driver cannot JIT this NVRTC's PTX
            tensorrt_registration.kernel_format(self.driver_version, nvrtc.nvrtc_version())
        self.output = output
        self._modules: dict[tuple, Any] = {}

    def _call(self, result):
        err, *values = result
        if err != self.driver.CUresult.CUDA_SUCCESS:
            _, text = self.driver.cuGetErrorString(err)
            raise RuntimeError(f"CUDA driver call failed: {err.name}: {text.decode() if text else ''}")
        return values[0] if len(values) == 1 else tuple(values) if values else None

    def _attribute(self, attribute) -> int:
        return self._call(self.driver.cuDeviceGetAttribute(attribute, self.device))

    def function(self, kernel: Path, defines: Mapping[str, str], name: str):
        """The compiled entry point ``name`` of ``kernel`` (PTX or CUBIN for this GPU), loaded once."""
        key = (kernel, tuple(sorted(defines.items())))
        if key not in self._modules:
            code = nvrtc.compile_file(kernel, self.arch, defines, self.output).code
            self._modules[key] = self._call(self.driver.cuModuleLoadData(code))
        return self._call(self.driver.cuModuleGetFunction(self._modules[key], name.encode()))

    def upload(self, array: np.ndarray) -> int:
        pointer = self.alloc(array.nbytes)
        if array.nbytes:
            self._call(self.driver.cuMemcpyHtoD(pointer, np.ascontiguousarray(array), array.nbytes))
        return pointer

    def alloc(self, nbytes: int) -> int:
        return int(self._call(self.driver.cuMemAlloc(max(nbytes, 1))))

    def download(self, pointer: int, shape, dtype) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        if out.nbytes:
            self._call(self.driver.cuMemcpyDtoH(out, pointer, out.nbytes))
        return out

    def free(self, *pointers: int) -> None:
        for pointer in pointers:
            self._call(self.driver.cuMemFree(pointer))

    def launch(self, function, launch: KernelLaunch, inputs: Sequence[int], outputs: Sequence[int]) -> None:
        self._call(self.driver.cuLaunchKernel(function, *launch.grid, *launch.block, launch.shared_mem, 0,
                                              kernel_arguments(inputs, launch, outputs), 0))

    def time_ms(self, fn: Callable[[], None], runs: int, warmup: int) -> list[float]:
        """Each of ``runs`` calls of ``fn`` timed alone with CUDA events, after ``warmup`` calls."""
        d = self.driver
        for _ in range(warmup):
            fn()
        start, end = self._call(d.cuEventCreate(0)), self._call(d.cuEventCreate(0))
        samples = []
        try:
            for _ in range(runs):
                self._call(d.cuEventRecord(start, 0))
                fn()
                self._call(d.cuEventRecord(end, 0))
                self._call(d.cuEventSynchronize(end))
                samples.append(self._call(d.cuEventElapsedTime(start, end)))
        finally:
            d.cuEventDestroy(start)
            d.cuEventDestroy(end)
        return samples

    def run(self, case: Case, like: Sequence[np.ndarray], runs: int = 0, warmup: int = 0
            ) -> tuple[list[np.ndarray], list[float]]:
        """The kernel's outputs for ``case`` (shaped and typed ``like`` the reference's) and,
        with ``runs``, its timings in ms."""
        kernel, launch, defines = plan(case.plugin, case.dtype, [a.shape for a in case.inputs], case.attributes)
        function = self.function(kernel, defines, launch.kernel)
        inputs = [self.upload(a) for a in case.inputs]
        outputs = [self.alloc(e.nbytes) for e in like]
        try:
            self.launch(function, launch, inputs, outputs)
            self._call(self.driver.cuCtxSynchronize())
            results = [self.download(p, e.shape, e.dtype) for p, e in zip(outputs, like)]
            samples = self.time_ms(lambda: self.launch(function, launch, inputs, outputs), runs, warmup) if runs else []
        finally:
            self.free(*inputs, *outputs)
        return results, samples


# torchvision -----------------------------------------------------------------------------------
def import_torchvision():
    """``(torch, torchvision)`` with CUDA, or None."""
    try:
        import torch
        import torchvision
    except Exception:  # ImportError, or a CUDA build that fails to load
        return None
    return (torch, torchvision) if torch.cuda.is_available() else None


def torchvision_op(case: Case, torch, torchvision, ordinal: int) -> Callable[[], Any]:
    """A call of torchvision's CUDA op on ``case``'s inputs, on CUDA device ``ordinal``; returns outputs
    comparable to the plugin's."""
    dev = [torch.from_numpy(np.ascontiguousarray(a)).to(f"cuda:{ordinal}") for a in case.inputs]
    a = registry.get(case.plugin).resolve(case.attributes)
    ops = torchvision.ops
    if case.torchvision == "roi_pool":
        return lambda: (ops.roi_pool(dev[0], dev[1], (a["pooled_height"], a["pooled_width"]), a["spatial_scale"]),)
    if case.torchvision == "roi_align":
        rois = torch.cat([dev[2][:, None].to(dev[1].dtype), dev[1]], dim=1)
        return lambda: (ops.roi_align(dev[0], rois, (a["output_height"], a["output_width"]), a["spatial_scale"],
                                      a["sampling_ratio"], aligned=bool(a["half_pixel"])),)
    boxes, scores = dev[0][0], dev[1][0]  # one image: [N, 4], [N, C]
    num_classes, k = scores.shape[1], a["max_output_boxes"]

    def detect():
        flat = scores.reshape(-1)
        candidates = torch.nonzero(flat > a["score_threshold"]).squeeze(1)
        top = flat[candidates].topk(min(a["pre_nms_top_k"], candidates.numel())).indices
        chosen = candidates[top]
        keep = ops.batched_nms(boxes[chosen // num_classes].float(), flat[chosen].float(), chosen % num_classes,
                               a["iou_threshold"])[:k]
        return (chosen[keep],)  # flat indices box * C + class, best first
    return detect


def torchvision_check(case: Case, outputs: Sequence[np.ndarray], call: Callable[[], Any]) -> dict[str, Any]:
    """The plugin's outputs against torchvision's; NMS: the same (box, class) pairs in the same order."""
    theirs = [t.cpu().numpy() for t in call()]
    if case.torchvision != "nms":
        return compare(outputs[:1], theirs, 1e-4 if case.dtype == "float32" else 5e-3)
    kept, flat, num_classes = int(outputs[0][0, 0]), theirs[0], case.inputs[1].shape[2]
    same = (kept == len(flat) and np.array_equal(outputs[3][0, :kept], flat % num_classes)
            and np.array_equal(outputs[1][0, :kept], case.inputs[0][0][flat // num_classes]))
    return {"ok": bool(same), "kept": kept, "kept_torchvision": int(len(flat))}


def time_torch(torch, call: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return samples


# driver ------------------------------------------------------------------------------------------
def run_case(gpu: Gpu, case: Case, runs: int, warmup: int, tv) -> dict[str, Any]:
    """Check and time one case: a JSON-ready row of the report."""
    expected = registry.get(case.plugin).run(*case.inputs, **case.attributes)
    outputs, samples = gpu.run(case, expected, runs, warmup)
    row: dict[str, Any] = {"case": case.name, "plugin": case.plugin, "dtype": case.dtype,
                           "reference": compare(outputs, expected, case.tolerance), "kernel": median_p90(samples)}
    if case.memory_bound:
        nbytes = moved_bytes([*case.inputs, *expected])
        row["bytes"] = nbytes
        row["bandwidth_gb_s"] = nbytes / (row["kernel"]["median_ms"] * 1e-3) / 1e9
        if gpu.peak_bytes_per_s:
            row["bandwidth_of_peak"] = row["bandwidth_gb_s"] * 1e9 / gpu.peak_bytes_per_s
    if tv is not None and case.torchvision:
        torch, torchvision = tv
        call = torchvision_op(case, torch, torchvision, gpu.ordinal)
        row["torchvision_check"] = torchvision_check(case, outputs, call)
        row["torchvision"] = median_p90(time_torch(torch, call, runs, warmup))
        row["speedup"] = row["torchvision"]["median_ms"] / row["kernel"]["median_ms"]
    return row


def markdown(report: Mapping[str, Any]) -> str:
    device = report["device"]
    peak = f", peak {device['peak_gb_s']:.0f} GB/s" if device["peak_gb_s"] else ""
    lines = ["# visionrt plugin kernels on a GPU", "",
             f"{device['name']} (sm_{device['arch']}{peak}); NVRTC {report['nvrtc']}, "
             f"{report.get('kernel_format', 'cubin').upper()} kernels; "
             f"median of {report['runs']} launches after {report['warmup']} warm-up, CUDA events.", "",
             "| case | reference | kernel ms (p90) | torchvision ms | speed-up | GB/s | of peak |",
             "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        check = "ok" if row["reference"]["ok"] else f"**FAIL** {row['reference']}"
        if "torchvision_check" in row:
            check += ", torchvision " + ("ok" if row["torchvision_check"]["ok"] else "**differs**")
        tv = row.get("torchvision", {}).get("median_ms")
        cells = [row["case"], check, f"{row['kernel']['median_ms']:.4f} ({row['kernel']['p90_ms']:.4f})",
                 f"{tv:.4f}" if tv else "-", f"{row['speedup']:.2f}x" if "speedup" in row else "-",
                 f"{row['bandwidth_gb_s']:.0f}" if "bandwidth_gb_s" in row else "-",
                 f"{row['bandwidth_of_peak']:.0%}" if "bandwidth_of_peak" in row else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if not report["torchvision"]:
        lines += ["", "torchvision (with CUDA) was not importable: no comparison."]
    return "\n".join(lines) + "\n"


def write_gpu_plugin_report(report: Mapping[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "gpu_plugins.json", out / "gpu_plugins.md"
    atomic.write_text(json_path, json.dumps(report, indent=2) + "\n")
    atomic.write_text(md_path, markdown(report))
    return json_path, md_path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m visionrt.benchmarks.gpu_plugins", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_plugins.json and gpu_plugins.md")
    parser.add_argument("--runs", type=int, default=200, help="timed launches per case (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed launches first (default 20)")
    parser.add_argument("--device", type=int, default=0, help="CUDA device ordinal")
    parser.add_argument("--quick", action="store_true", help="small sizes: a correctness run")
    parser.add_argument("--no-torchvision", action="store_true", help="skip the torchvision comparison")
    parser.add_argument("--kernel-format", choices=("ptx", "cubin"), default="ptx",
                        help="ptx (default: what TensorRT embeds in the engine) or cubin")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every case; exit status 1 if any kernel disagrees with its reference."""
    args = parse_args(argv)
    gpu = Gpu(args.device, args.kernel_format)
    tv = None if args.no_torchvision else import_torchvision()
    if tv is not None:
        tv[0].cuda.set_device(args.device)  # torch's events and streams then time the same device
    rows = []
    for case in cases(args.quick):
        rows.append(run_case(gpu, case, args.runs, args.warmup, tv))
        print(f"{case.name}: {'ok' if rows[-1]['reference']['ok'] else 'FAIL'} "
              f"{rows[-1]['kernel']['median_ms']:.4f} ms", file=sys.stderr)
    report = {"device": {"name": gpu.name, "arch": gpu.arch, "driver": gpu.driver_version,
                         "peak_gb_s": gpu.peak_bytes_per_s / 1e9 if gpu.peak_bytes_per_s else None},
              "kernel_format": gpu.output,
              "nvrtc": ".".join(map(str, nvrtc.nvrtc_version())), "runs": args.runs, "warmup": args.warmup,
              "torchvision": tv is not None, "machine": describe_machine(), "rows": rows}
    for path in write_gpu_plugin_report(report, args.out):
        print(path)
    return 0 if all(row["reference"]["ok"] for row in rows) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VisionRTError as err:  # no GPU, no NVRTC, a driver too old for the PTX: one line with its fix
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
