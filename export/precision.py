"""Precision variants of a model directory's ONNX: fp16 and int8 files beside the fp32 one.

    export_precisions(model_dir, data_dir, ["fp16", "int8"])

* **fp16**: ``onnxruntime.transformers.float16`` with float32 inputs and outputs; the ops in
  :data:`FP16_KEEP_FLOAT` (NMS and its score logic, RoI pooling, plugin ops) stay float32.
* **int8**: static Q/DQ on Conv/ConvTranspose/Gemm/MatMul, calibrated once on the task's own
  training images (``calibration.py``), written in two layouts from the same ranges:
  onnxruntime's fast CPU layout (u8 activations, s8 per-channel weights) and TensorRT's
  (symmetric s8, zero points 0, bias left float). The output heads (the last quantisable node
  on each path to an output) stay float, and so does anything after them (NMS, decoding).
* Each file's task metric on the held-out test split is measured in onnxruntime against
  PyTorch fp32 (``stage.py``) and judged against the task spec's ``precision_tolerance``; an int8 file outside it
  gets a per-layer sensitivity search (one node kept float at a time) that keeps the culprit
  float and records it.

Files and keys follow :mod:`visionrt.runtime.precision`; the record (ops kept float, layouts,
calibration, accuracy and verdict per file) is ``manifest.precisions``.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import onnx
import onnx.numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from ..runtime.backends.onnxruntime import OnnxRuntimeRunner
from ..runtime.errors import InputError
from ..runtime.manifest import ModelDir
from ..runtime.plugins.op import DOMAIN as PLUGIN_DOMAIN
from ..runtime.precision import check_precision, onnx_key
from ..runtime.tasks import runtime_task
from . import calibration, fp32_reference
from .onnx_export import write_onnx
from .parity import concat_outputs
from .stage import heldout_batches, verify

log = logging.getLogger(__name__)

#: Op types an fp16 file keeps float32 (beside onnxruntime's defaults, and every plugin op).
FP16_KEEP_FLOAT = ("NonMaxSuppression", "TopK", "RoiAlign", "MaxRoiPool", "MaxUnpool", "Softmax", "EfficientNms")
#: The two int8 layouts: quantize_static arguments per target.
INT8_LAYOUTS = {
    "portable": dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, extra_options={}),
    "tensorrt": dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                     extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}),
}
#: Held-out images the per-layer sensitivity search scores each candidate on.
SENSITIVITY_SAMPLES = 128


def file_name(key: str) -> str:
    """``onnx_fp16`` -> ``model.fp16.onnx``, ``onnx_trt_int8`` -> ``model.trt.int8.onnx``."""
    return ".".join(["model", *key.split("_")[1:], "onnx"])


def export_precisions(model_dir: ModelDir, data_dir: str | Path | None = None,
                      precisions: Iterable[str] = ("fp16", "int8"), samples: int | None = None,
                      calibration_count: int = calibration.DEFAULT_COUNT, seed: int = 0) -> dict[str, Any]:
    """Write the fp16/int8 files of ``model_dir`` (fp32 is the exported ONNX, nothing to write),
    measure each on the held-out test split (first ``samples`` images, or all) and record it all
    in ``manifest.precisions``; returns that record."""
    precisions = [check_precision(p) for p in precisions]
    imported = fp32_reference.is_imported(model_dir)
    if imported:
        fp32_reference.check_judged(model_dir)
    if data_dir is None and "dataset" not in model_dir.manifest.model:
        raise InputError(f"{model_dir.root} records no dataset (an imported model): calibration and the accuracy "
                         "check need your images", fix="pass --data DIR, a folder of your photos")
    data_dir = Path(data_dir or model_dir.manifest.model["dataset"])
    model_dir.path("onnx")  # exported, intact
    targets = ["portable", *(["tensorrt"] if model_dir.has(onnx_key("fp32", "tensorrt")) else [])]
    for precision in precisions:
        if precision == "fp16":
            for target in targets:
                _write_fp16(model_dir, target)
        elif precision == "int8":
            cache, _ = calibration.calibrate(model_dir, data_dir, calibration_count, seed)
            for target in ("portable", "tensorrt"):
                _write_int8(model_dir, target, cache, keep_float=[])
    model_dir.save()
    measure_precisions(model_dir, data_dir, [p for p in precisions if p != "fp32"], samples)
    for precision in precisions:
        if precision == "int8" and not model_dir.manifest.precisions["int8"]["passed"]:
            if imported:  # the search scores nodes on labelled held-out data, which an import has not
                log.warning("int8 is outside its tolerance against fp32; the per-layer search needs labelled data")
            else:
                _keep_sensitive_float(model_dir, data_dir, samples)
    model_dir.record("export", precisions=precisions)
    model_dir.save()
    return model_dir.manifest.precisions


# fp16 ----------------------------------------------------------------------------------

def _write_fp16(model_dir: ModelDir, target: str) -> Path:
    source = onnx.load(model_dir.path(onnx_key("fp32", target)))
    keep = sorted({*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FLOAT,
                   *(n.op_type for n in source.graph.node if n.domain == PLUGIN_DOMAIN)})
    present = sorted({n.op_type for n in source.graph.node} & set(keep))
    converted = convert_float_to_float16(source, keep_io_types=True, op_block_list=keep)
    key = onnx_key("fp16", target)
    path = _save(model_dir, key, converted, f"fp16 ONNX for {target} (float32 I/O; kept float32: "
                                            f"{', '.join(present) or 'none'})")
    model_dir.manifest.precisions.setdefault("fp16", {}).setdefault("files", {})[key] = {
        "target": target, "kept_float_op_types": present}
    return path


# int8 ----------------------------------------------------------------------------------

def head_nodes(model: onnx.ModelProto, op_types: Sequence[str] = calibration.OP_TYPES) -> list[str]:
    """Names of the quantisable nodes nearest each graph output: walking back from every output,
    the first node of ``op_types`` on each path (e.g. the classifier's Gemm, a detector's
    prediction convs), where the walk stops."""
    producer = {out: node for node in model.graph.node for out in node.output}
    heads, seen = [], set()
    pending = [o.name for o in model.graph.output]
    while pending:
        node = producer.get(pending.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type in op_types:
            heads.append(node.name)
        else:
            pending.extend(node.input)
    return sorted(heads)


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every node named (the quantiser excludes nodes by name)."""
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{index}"
    return model


def _write_int8(model_dir: ModelDir, target: str, cache: Path, keep_float: Sequence[str]) -> Path | None:
    """The int8 file for ``target`` from the cached ranges; ``keep_float``: further node names
    left float (found by the sensitivity search). For ``tensorrt`` the graph is the TensorRT
    flavour where export wrote one. A layout the quantiser cannot produce is logged, not raised."""
    source_key = onnx_key("fp32", target) if model_dir.has(onnx_key("fp32", target)) else "onnx"
    model = _named(onnx.load(model_dir.path(source_key)))
    heads = head_nodes(model)
    exclude = sorted({*heads, *keep_float} & {n.name for n in model.graph.node})
    key = onnx_key("int8", target)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "int8.onnx"
        try:
            quantize(model, out, target, cache, exclude)
        except Exception as err:  # the quantiser raises bare ValueError/KeyError/onnx errors
            log.warning("int8 for %s not written: %s", target, err)
            model_dir.manifest.precisions.setdefault("int8", {}).setdefault("skipped", {})[target] = str(err)
            return None
        quantised = onnx.load(out)
    form = ("symmetric s8 activations and weights, zero points 0, bias float" if target == "tensorrt"
            else "u8 activations, s8 per-channel weights")
    path = _save(model_dir, key, quantised, f"int8 Q/DQ ONNX for {target} ({form})")
    model_dir.manifest.precisions.setdefault("int8", {}).setdefault("files", {})[key] = {
        "target": target, "layout": form, "quantised_op_types": list(calibration.OP_TYPES),
        "kept_float_heads": heads, "kept_float_sensitive": sorted(keep_float),
        "calibration": calibration.CACHE_KEY}
    return path


def quantize(model: onnx.ModelProto, out: Path, target: str, cache: Path, exclude: Sequence[str] = (),
             reader=None) -> None:
    """Static Q/DQ of ``model`` in ``target``'s layout (:data:`INT8_LAYOUTS`) into ``out``, from the
    ranges in ``cache`` (computed there first from ``reader`` when the file does not exist)."""
    with _root_warnings_to_debug():
        quantize_static(model, out, calibration_data_reader=reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(calibration.OP_TYPES), per_channel=True,
                        nodes_to_exclude=list(exclude), calibrate_method=calibration.METHOD,
                        calibration_cache_path=cache, **INT8_LAYOUTS[target])


@contextlib.contextmanager
def _root_warnings_to_debug():
    """onnxruntime's quantiser warns on the root logger ("consider pre-processing": batch norm is
    already folded here), which would also give the root a stderr handler for the rest of the
    process: pass those messages to this module's log at debug level instead."""
    class ToDebug(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log.debug("onnxruntime.quantization: %s", record.getMessage())

    root, handler = logging.getLogger(), ToDebug()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def tensorrt_layout_problems(model: onnx.ModelProto) -> list[str]:
    """Why TensorRT would refuse ``model``'s Q/DQ (empty: it accepts them): every Quantize/
    DequantizeLinear must be int8 with zero points 0, and no bias (int32) may be quantised."""
    constants = {t.name: t for t in model.graph.initializer}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero_point = constants.get(node.input[2]) if len(node.input) > 2 else None
        quantised = constants.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if zero_point is not None:
            values = onnx.numpy_helper.to_array(zero_point)
            if zero_point.data_type != onnx.TensorProto.INT8:
                problems.append(f"{node.name}: zero point of type {onnx.TensorProto.DataType.Name(zero_point.data_type)}")
            elif np.any(values != 0):
                problems.append(f"{node.name}: non-zero zero point")
        if quantised is not None and quantised.data_type == onnx.TensorProto.INT32:
            problems.append(f"{node.name}: int32 (bias) input quantised")
    return problems


def _save(model_dir: ModelDir, key: str, model: onnx.ModelProto, role: str) -> Path:
    path = model_dir.root / file_name(key)
    write_onnx(model, path)
    model_dir.add_file(key, path, role=role)
    log.info("wrote %s (%.1f MB): %s", path.name, path.stat().st_size / 1e6, role)
    return path


# accuracy ------------------------------------------------------------------------------

def runner_name(precision: str, target: str = "portable") -> str:
    """Name of the onnxruntime CPU run of a precision's file in parity reports and metrics."""
    return f"onnxruntime-cpu-{precision}" + ("-tensorrt-layout" if target == "tensorrt" else "")


def measure_precisions(model_dir: ModelDir, data_dir: str | Path, precisions: Sequence[str],
                       samples: int | None = None) -> dict[str, Any]:
    """Each precision's files run in onnxruntime CPU on the held-out test split against PyTorch
    fp32; their task metrics, change and verdict (the task spec's ``precision_tolerance``) go to
    ``manifest.precisions``.
    Files of the TensorRT flavour with plugin ops are not run here (they need the plugins)."""
    tolerance = runtime_task(model_dir.manifest.task).precision_tolerance
    imported = fp32_reference.is_imported(model_dir)  # no PyTorch: judged against the fp32 ONNX
    candidates = [(precision, key, entry["target"]) for precision in precisions
                  for key, entry in model_dir.manifest.precisions.get(precision, {}).get("files", {}).items()
                  if entry["target"] == "portable" or not model_dir.has(onnx_key("fp32", "tensorrt"))]
    if not candidates:
        return model_dir.manifest.precisions
    with contextlib.ExitStack() as stack:
        runners = []
        for precision, key, target in candidates:
            runner = stack.enter_context(
                fp32_reference.precision_runner(model_dir, model_dir.path(key), runner_name(precision, target))
                if imported else OnnxRuntimeRunner(model_dir.path(key)))
            runner.name = runner_name(precision, target)
            runners.append(runner)
        reports = (fp32_reference.judge(model_dir, runners, fp32_reference.photos(data_dir)[:samples], tolerance,
                                        judge_outputs=False) if imported else
                   verify(model_dir, runners, data_dir, samples, metric_tolerance=tolerance, judge_outputs=False))
    for (precision, key, target), report in zip(candidates, reports):
        record = model_dir.manifest.precisions[precision]
        record["files"][key]["accuracy"] = {
            "runner": report.candidate, "samples": report.samples, "passed": report.passed,
            "max_abs_diff": max(float(o.max_abs) for o in report.outputs),  # worst raw output vs PyTorch fp32
            "metrics": {name: {"fp32_onnx" if imported else "fp32_pytorch": t["reference"], "value": t["candidate"],
                               "change": t["candidate"] - t["reference"],
                               **({"tolerance": t["tolerance"]} if name in tolerance else {})}
                        for name, t in report.task.items()}}
        log.info("%s %s: %s", precision, target, report.summary())
    for precision in precisions:
        files = model_dir.manifest.precisions.get(precision, {}).get("files", {}).values()
        measured = [f["accuracy"]["passed"] for f in files if "accuracy" in f]
        model_dir.manifest.precisions[precision]["passed"] = bool(measured) and all(measured)
    model_dir.save()
    return model_dir.manifest.precisions


# sensitivity ---------------------------------------------------------------------------

def layer_sensitivity(model_dir: ModelDir, data_dir: str | Path, target: str = "portable",
                      samples: int = SENSITIVITY_SAMPLES) -> list[tuple[str, float]]:
    """Per quantised node, the task metric's loss vs the fp32 ONNX when only that node is kept
    float (the primary metric, on the first ``samples`` held-out images): ``[(node, loss)]``,
    least loss first (keeping the first one float helps most)."""
    manifest = model_dir.manifest
    task = runtime_task(manifest.task)
    metric = next(iter(task.precision_tolerance))
    batches = list(heldout_batches(model_dir, data_dir, samples))
    targets = np.concatenate([t for _, t in batches])

    def score(path: Path) -> float:
        with OnnxRuntimeRunner(path) as runner:
            outputs = concat_outputs([runner.infer(feed) for feed, _ in batches])
        return task.evaluate(outputs, targets, manifest)[metric]

    cache = model_dir.path(calibration.CACHE_KEY)
    key = onnx_key("int8", target)
    source = _named(onnx.load(model_dir.path(onnx_key("fp32", target) if model_dir.has(onnx_key("fp32", target))
                                             else "onnx")))
    candidates = [n.name for n in source.graph.node if n.op_type in calibration.OP_TYPES
                  and n.name not in head_nodes(source)]
    reference = score(model_dir.path("onnx"))
    losses = []
    try:
        for node in candidates:
            _write_int8(model_dir, target, cache, keep_float=[node])
            losses.append((node, reference - score(model_dir.path(key))))
    finally:
        _write_int8(model_dir, target, cache, keep_float=[])
    return sorted(losses, key=lambda pair: pair[1])


def _keep_sensitive_float(model_dir: ModelDir, data_dir: Path, samples: int | None, rounds: int = 3) -> None:
    """int8 failed its tolerance: keep the most sensitive node float, one more per round, until
    it passes or ``rounds`` are spent; the nodes kept and each round's figures are recorded."""
    record = model_dir.manifest.precisions["int8"]
    kept: list[str] = []
    for _ in range(rounds):
        losses = layer_sensitivity(model_dir, data_dir)
        remaining = [(node, loss) for node, loss in losses if node not in kept]
        if not remaining:
            break
        kept.append(remaining[0][0])
        record.setdefault("sensitivity", []).append({"kept_float": remaining[0][0], "losses": losses[:10]})
        log.info("int8 fails its tolerance: keeping %s float (loss with it alone float %.4f)", *remaining[0])
        cache = model_dir.path(calibration.CACHE_KEY)
        for target in ("portable", "tensorrt"):
            _write_int8(model_dir, target, cache, keep_float=kept)
        model_dir.save()
        measure_precisions(model_dir, data_dir, ["int8"], samples)
        if record["passed"]:
            break
    if not record["passed"]:
        log.warning("int8 stays outside its tolerance after keeping %s float", ", ".join(kept))
