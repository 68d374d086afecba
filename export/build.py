"""Build a TensorRT or TensorRT-RTX engine from the ONNX of a model directory.

    result = build("runs/resnet18", flavour="tensorrt_rtx", max_batch=8)
    result.path    # runs/resnet18/model.rtx.engine
    result.facts   # also in manifest.engines["rtx"]

Steps: scan the ONNX (plugin ops, precision) -> parse it -> one optimisation profile over
the dynamic batch (and H/W) axes -> build the serialized network -> write the engine
atomically beside the ONNX -> register it in the manifest with its build facts, which the
TensorRT runner checks before it loads the engine. A failed build leaves the model directory
as it was, apart from a build log (``model.<rtx|trt>.build.json``) that holds TensorRT's
messages.

Networks are strongly typed: precision comes from the ONNX (fp16 tensors, QDQ nodes), as
TensorRT 11 requires. This module never imports torch: engines are built on target machines.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from visionrt.runtime import atomic, tensorrt_env
from visionrt.runtime.errors import ArtifactError, BackendUnavailable, InputError, VisionRTError
from visionrt.runtime.file_kind import require_file
from visionrt.runtime.manifest import ModelDir
from visionrt.runtime.model_check import check_model_dir
from visionrt.runtime.plugins.op import DOMAIN as PLUGIN_DOMAIN
from visionrt.runtime.precision import resolve_onnx_key

#: Manifest key of the TensorRT-flavoured ONNX (``export/trt_flavour.py``), which the build prefers.
TRT_ONNX_KEY = "onnx_trt"
#: (min, opt, max) batch when neither the arguments nor ``manifest.build_profile`` say.
DEFAULT_BATCH = (1, 8, 32)

#: A size for a dynamic axis: fixed, or (min, opt, max).
Size = int | tuple[int, int, int]


class BuildError(VisionRTError):
    """TensorRT cannot parse or build the network, or the build request does not fit the ONNX."""


@dataclasses.dataclass(frozen=True)
class BuildResult:
    key: str          # of the engine in manifest.files and manifest.engines
    path: Path        # the engine file
    facts: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class OnnxFacts:
    plugin_ops: list[str]      # op types in the visionrt domain
    precision: str             # "fp32", "fp16", "bf16" or "int8" (QDQ)
    external_data: list[str]   # files holding weights, relative to the ONNX file


def build(model_dir: str | os.PathLike | ModelDir, *, flavour: str = "auto", onnx_key: str | None = None,
          key: str | None = None, min_batch: int | None = None, opt_batch: int | None = None,
          max_batch: int | None = None, height: Size | None = None, width: Size | None = None,
          compute_capabilities: Sequence[str] | None = None, workspace_mib: int | None = None,
          precision: str = "fp32") -> BuildResult:
    """Build an engine from ``model_dir``'s file ``onnx_key`` and record it in the manifest.

    ``onnx_key`` defaults to ``precision``'s file for TensorRT (``visionrt.runtime.precision``): the
    TensorRT-flavoured ONNX (``onnx_trt``, ``onnx_trt_fp16``: plugin nodes for the ops TensorRT
    lacks) where the export stage wrote one, else the portable one; int8 always ``onnx_trt_int8``
    (symmetric Q/DQ).
    ``flavour``: ``auto`` (full TensorRT if importable, else TensorRT-RTX), ``tensorrt`` or
    ``tensorrt_rtx``. ``key`` (default ``rtx``/``trt``, plus the ONNX key's suffix, e.g.
    ``rtx_fp16`` for ``onnx_fp16``) names the engine in ``manifest.files`` and
    ``manifest.engines``. Batch range: the arguments, else ``manifest.build_profile``
    (``min_batch``/``opt_batch``/``max_batch``), else :data:`DEFAULT_BATCH`. ``height``/``width``
    fix or span (min, opt, max) dynamic H/W axes of ``[N, C, H, W]`` inputs (default:
    ``manifest.build_profile``'s ``height``/``width``, else the manifest's input size).
    ``compute_capabilities`` (TensorRT-RTX only, e.g. ``["8.6"]``; default every target from
    Ampere on) and ``workspace_mib`` (default: TensorRT's) tune the build.
    """
    model_dir = model_dir if isinstance(model_dir, ModelDir) else ModelDir.open(model_dir)
    check_model_dir(model_dir)  # before any engine is built
    spec = tensorrt_env.resolve(flavour)
    trt = tensorrt_env.import_tensorrt(spec.name)
    onnx_key = onnx_key or resolve_onnx_key(model_dir, precision, "tensorrt")
    onnx_path = model_dir.path(onnx_key)
    batch, batch_given = _batch_range(model_dir.manifest.build_profile, min_batch, opt_batch, max_batch)
    ranges = model_dir.manifest.build_profile
    sizes = {2: height or ranges.get("height") or model_dir.manifest.input.height,
             3: width or ranges.get("width") or model_dir.manifest.input.width}

    key = key or engine_key(onnx_key, spec)
    engine_path = model_dir.root / f"{onnx_path.stem}.{spec.short}.engine"
    facts = _build_file(trt, spec, onnx_path, engine_path, batch, batch_given, sizes, {}, compute_capabilities,
                        workspace_mib, {"onnx": onnx_key, "onnx_sha256": model_dir.manifest.files[onnx_key].sha256})
    model_dir.add_file(key, engine_path, role=f"{spec.title} engine")
    model_dir.manifest.engines[key] = facts
    model_dir.record("build", key=key, flavour=spec.name, seconds=facts["build_seconds"])
    model_dir.save()
    return BuildResult(key, engine_path, facts)


def build_onnx_file(onnx_path: str | os.PathLike, *, out: str | os.PathLike | None = None,
                    shapes: Mapping[str, Sequence[int]] | None = None, flavour: str = "auto",
                    min_batch: int | None = None, opt_batch: int | None = None, max_batch: int | None = None,
                    height: Size | None = None, width: Size | None = None,
                    compute_capabilities: Sequence[str] | None = None,
                    workspace_mib: int | None = None) -> BuildResult:
    """Build an engine from a bare ONNX file, like trtexec: the engine goes to ``out`` (default:
    beside the file, ``<stem>.<rtx|trt>.engine``), its build facts and TensorRT's messages to
    ``<engine stem>.build.json`` beside it. ``shapes`` (``{input: shape}``, trtexec's ``--shapes``)
    fixes an input's dynamic axes; the batch flags span a dynamic axis 0 instead (default: the
    given shape's batch, else :data:`DEFAULT_BATCH`); ``height``/``width`` span the dynamic H/W of
    ``[N, C, H, W]`` inputs given no shape, as in :func:`build`."""
    onnx_path = Path(onnx_path)
    require_file(onnx_path, "ONNX file", ArtifactError, fix="pass the path of an .onnx file")
    spec = tensorrt_env.resolve(flavour)
    trt = tensorrt_env.import_tensorrt(spec.name)
    batch, batch_given = _batch_range({}, min_batch, opt_batch, max_batch)
    engine_path = Path(out) if out else onnx_path.with_suffix(f".{spec.short}.engine")
    facts = _build_file(trt, spec, onnx_path, engine_path, batch, batch_given, {2: height, 3: width}, dict(shapes or {}),
                        compute_capabilities, workspace_mib,
                        {"onnx": str(onnx_path.resolve()), "onnx_sha256": atomic.sha256(onnx_path)})
    return BuildResult(spec.short, engine_path, facts)


def parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """trtexec's ``--shapes`` (``build`` and ``bench`` of an ONNX file): ``name:AxBxC[,name:...]`` -> ``{name: (A, B, C)}``; :class:`InputError`
    naming the part that does not parse."""
    shapes = {}
    for part in filter(None, text.split(",")):
        name, sep, dims = part.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise InputError(f"--shapes part {part!r} is not NAME:AxBxC with positive sizes",
                             fix="e.g. --shapes images:8x3x224x224")
        shapes[name.strip("'\"")] = shape
    return shapes


def _build_file(trt: ModuleType, spec: tensorrt_env.Flavour, onnx_path: Path, engine_path: Path,
                batch: tuple[int, int, int], batch_given: bool, sizes: dict[int, Size | None],
                shapes: Mapping[str, Sequence[int]], compute_capabilities: Sequence[str] | None,
                workspace_mib: int | None, source: dict[str, str]) -> dict[str, Any]:
    """Check and build ``onnx_path`` into ``engine_path``; the build facts (with ``source``: which
    ONNX), also written with TensorRT's messages to the build log, on failure too."""
    onnx_facts = scan_onnx(onnx_path)
    missing = [name for name in onnx_facts.external_data if not (onnx_path.parent / name).is_file()]
    if missing:
        raise ArtifactError(f"{onnx_path.name} keeps its weights in {', '.join(missing)}, which is missing",
                            fix="copy the ONNX file together with its external data, or re-run `visionrt export`")
    check_plugins(onnx_facts.plugin_ops, trt)
    gpus, no_gpu = tensorrt_env.find_gpus()
    targets = _targets(trt, spec, compute_capabilities, gpus, no_gpu)
    log_path = _log_path(engine_path)
    logger = tensorrt_env.make_logger(trt)
    try:
        with _plugin_callback_failures(onnx_facts.plugin_ops):
            built = _build_engine(trt, spec, onnx_path, engine_path, logger, batch, batch_given, sizes, shapes,
                                  targets, workspace_mib)
    except VisionRTError as err:
        _write_log(log_path, logger, {"error": str(err)})
        raise
    facts = {
        "flavour": spec.name,
        "tensorrt_version": tensorrt_env.version(trt),
        "compute_capabilities": targets,
        "precision": onnx_facts.precision,
        **built,
        "workspace_mib": workspace_mib,
        "engine_bytes": engine_path.stat().st_size,
        **source,
        "host": _host(gpus),
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "build_log": log_path.name,
    }
    _write_log(log_path, logger, {"facts": facts})
    return facts


def engine_key(onnx_key: str, spec: tensorrt_env.Flavour) -> str:
    """``onnx`` and its TensorRT flavour ``onnx_trt`` -> ``rtx``, ``onnx_fp16`` and ``onnx_trt_fp16``
    -> ``rtx_fp16``, ``onnx_trt_int8`` -> ``rtx_int8``, ``portable`` -> ``rtx_portable``."""
    if onnx_key.startswith(TRT_ONNX_KEY):  # onnx_trt_int8 -> rtx_int8
        return spec.short + onnx_key.removeprefix(TRT_ONNX_KEY)
    suffix = onnx_key.removeprefix("onnx") if onnx_key.startswith("onnx") else f"_{onnx_key}"
    return spec.short + suffix


def _build_engine(trt: ModuleType, spec: tensorrt_env.Flavour, onnx_path: Path, engine_path: Path, logger: Any,
                  batch: tuple[int, int, int], batch_given: bool, sizes: dict[int, Size | None],
                  shapes: Mapping[str, Sequence[int]], targets: list[str], workspace_mib: int | None) -> dict[str, Any]:
    """Parse, build and write the engine; its profile, I/O tensors and build time as build facts."""
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # TensorRT 11: always
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = _parse(trt, network, onnx_path, logger, spec)
    built = {
        "profile": _profile_shapes(network, batch, batch_given, sizes, shapes),
        "inputs": _tensors(trt, [network.get_input(i) for i in range(network.num_inputs)]),
        "outputs": _tensors(trt, [network.get_output(i) for i in range(network.num_outputs)]),
    }
    dynamic = any(dim < 0 for tensor in built["inputs"] for dim in tensor["shape"])
    config = _config(trt, builder, spec, built["profile"] if dynamic else {}, targets, workspace_mib)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    built["build_seconds"] = round(time.perf_counter() - start, 3)
    del parser  # it owns the network's weights: only now may it go
    if serialized is None:
        raise BuildError(f"{spec.title} failed to build {onnx_path.name}: "
                         + ("; ".join(logger.errors()) or "no error message"),
                         fix=f"TensorRT's messages are in {_log_path(engine_path).name}")
    atomic.write_bytes(engine_path, memoryview(serialized))
    return built


# the ONNX ----------------------------------------------------------------------------------
def scan_onnx(path: str | os.PathLike) -> OnnxFacts:
    """Plugin ops, precision and external weight files of an ONNX file, read without its weights."""
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable("the engine builder needs the onnx package",
                                 fix="pip install onnx (included in visionrt[rtx] and visionrt[trt])") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError, onnx's own errors: not an ONNX file
        raise ArtifactError(f"{path} is not an ONNX model ({type(err).__name__}: {str(err)[:200]})",
                            fix="pass an .onnx file (visionrt export or import writes one)") from err
    if not model.graph.output:  # an empty file parses as an empty model
        raise ArtifactError(f"{path} is not an ONNX model (no graph outputs)",
                            fix="pass an .onnx file (visionrt export or import writes one)")
    nodes = [*_nodes(model.graph), *(n for f in model.functions for n in f.node)]
    plugin_ops = sorted({n.op_type for n in nodes if n.domain == PLUGIN_DOMAIN})
    external = sorted({entry.value for t in model.graph.initializer for entry in t.external_data
                       if entry.key == "location"})
    return OnnxFacts(plugin_ops, _precision(onnx, model, nodes), external)


def _precision(onnx: ModuleType, model: Any, nodes: list[Any]) -> str:
    """``int8`` with QDQ nodes, else ``fp16``/``bf16`` when such tensors occur, else ``fp32``."""
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.domain in ("", "ai.onnx") for n in nodes):
        return "int8"
    types = {t.data_type for t in model.graph.initializer}
    types |= {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    for node in nodes:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to":
                types.add(attr.i)
            elif node.op_type == "Constant" and attr.name == "value":
                types.add(attr.t.data_type)
    for onnx_type, precision in ((onnx.TensorProto.FLOAT16, "fp16"), (onnx.TensorProto.BFLOAT16, "bf16")):
        if onnx_type in types:
            return precision
    return "fp32"


def _nodes(graph) -> Iterator[Any]:
    """Every node of ``graph``, including those of subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                yield from _nodes(sub)


def check_plugins(plugin_ops: list[str], trt: ModuleType) -> None:
    """Refuse, before parsing, plugin ops the chosen TensorRT cannot take; where it can, find the
    build GPU, check its driver loads the kernels and compile each op's kernel (the pre-flight:
    these failures inside TensorRT's plugin callbacks would reach the user as a generic build
    error), then register the plugins."""
    if not plugin_ops:
        return
    from ..runtime.plugins import tensorrt_registration

    tensorrt_registration.check_tensorrt_takes_plugins(trt, plugin_ops)
    arch, output = tensorrt_registration.preflight(plugin_ops)
    tensorrt_registration.register_plugins(trt, arch=arch, output=output)


def _plugin_callback_failures(plugin_ops: list[str]) -> Any:
    """Around the parse and build of a network with plugin ops: an exception a plugin callback
    raised (which TensorRT swallows) is raised in place of TensorRT's generic error."""
    if not plugin_ops:
        return contextlib.nullcontext()
    from ..runtime.plugins import tensorrt_registration

    return tensorrt_registration.callback_failures()


# the network -------------------------------------------------------------------------------
def _parse(trt: ModuleType, network: Any, onnx_path: Path, logger: Any, spec: tensorrt_env.Flavour) -> Any:
    """Parse ``onnx_path`` into ``network``; :class:`BuildError` listing every node that failed."""
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return parser
    failures, ops = [], []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        ops.append(error.node_operator())
        # Some op checkers report only the failed condition, the literal "false".
        detail = "" if error.desc() in ("", "false") else f": {error.desc()}"
        where = f"node {error.node()} '{error.node_name()}' ({error.node_operator()})" if error.node() >= 0 else "model"
        failures.append(f"{where}: {error.code().name}{detail}")
    ops = ", ".join(sorted({op for op in ops if op}))
    raise BuildError(f"{spec.title} cannot parse {onnx_path.name}: " + "; ".join(failures or logger.errors()),
                     fix=_parse_fix(spec, ops) if ops else None)


def _parse_fix(spec: tensorrt_env.Flavour, ops: str) -> str:
    """What to do about ops ``spec``'s parser refused: TensorRT-RTX lacks ops that full TensorRT
    takes as plugins; full TensorRT (>= 10.9 takes the plugins) needs them as plugin nodes."""
    if spec.name == "tensorrt_rtx":
        return (f"for ops TensorRT-RTX lacks ({ops}): build the TensorRT-flavour ONNX (plugin ops) with full "
                "TensorRT >= 10.9, or run the onnxruntime backend")
    from ..runtime.plugins import tensorrt_registration

    if set(ops.split(", ")) <= set(tensorrt_registration.plugin_names()):
        return "TensorRT's messages are in the build log; `visionrt doctor` checks the plugins on this machine"
    return (f"for ops TensorRT cannot import ({ops}): build the TensorRT-flavour ONNX that `visionrt export` "
            "writes (those ops as visionrt plugin nodes), or run the onnxruntime backend")


def _profile_shapes(network: Any, batch: tuple[int, int, int], batch_given: bool,
                    sizes: dict[int, Size | None],
                    shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, dict[str, list[int]]]:
    """``{input: {"min": shape, "opt": shape, "max": shape}}`` for every network input.

    Axis 0 of a dynamic input spans ``batch`` (when asked for, or no shape is given); an input
    given in ``shapes`` takes that shape on its other dynamic axes; dynamic axes 2 and 3 of a
    rank-4 input (H, W) take ``sizes``; every other axis must be fixed in the ONNX.
    """
    shapes = shapes or {}
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if set(shapes) - set(names):
        raise BuildError(f"shapes given for {', '.join(sorted(set(shapes) - set(names)))}, which the network "
                         "has not as input", fix=f"its inputs are: {', '.join(names)}")
    profile = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        given = shapes.get(tensor.name)
        if given is not None and (len(given) != len(dims) or any(d >= 0 and g != d for d, g in zip(dims, given))):
            raise BuildError(f"shape {list(given)} given for input '{tensor.name}' does not fit its {dims} "
                             "(-1: dynamic)", fix="keep the fixed sizes and give one size per axis")
        ranges = []
        for axis, dim in enumerate(dims):
            if dim >= 0:
                if axis == 0 and batch_given and batch != (dim, dim, dim):
                    raise BuildError(f"input '{tensor.name}' has a fixed batch of {dim} in the ONNX, "
                                     f"batch {batch[0]}..{batch[2]} was asked for",
                                     fix="re-export the ONNX with a dynamic batch axis")
                ranges.append((dim, dim, dim))
            elif axis == 0 and (batch_given or given is None):
                ranges.append(batch)
            elif given is not None:
                ranges.append((given[axis],) * 3)
            elif len(dims) == 4 and axis in sizes and sizes[axis] is not None:
                ranges.append(_size_range(sizes[axis], tensor.name, axis))
            else:
                what = {2: "height", 3: "width"}.get(axis) if len(dims) == 4 else None
                raise BuildError(f"input '{tensor.name}' {dims} has a dynamic axis {axis}"
                                 + (f" ({what})" if what else ""),
                                 fix=f"pass {what}= (--{what}), or its shape (--shapes)" if what
                                 else "give the input's shape (--shapes NAME:AxBxC), or fix that axis in the ONNX")
        profile[tensor.name] = {name: [r[j] for r in ranges] for j, name in enumerate(("min", "opt", "max"))}
    return profile


def _size_range(size: Size, name: str, axis: int) -> tuple[int, int, int]:
    low, opt, high = (size, size, size) if isinstance(size, int) else tuple(size)
    if not 1 <= low <= opt <= high:
        raise BuildError(f"input '{name}' axis {axis}: size range {low}, {opt}, {high} is not 1 <= min <= opt <= max")
    return low, opt, high


def _batch_range(build_profile: Mapping[str, Any], min_batch: int | None, opt_batch: int | None,
                 max_batch: int | None) -> tuple[tuple[int, int, int], bool]:
    """(min, opt, max) batch and whether the caller asked for it; defaults from ``build_profile``
    (a manifest's), else :data:`DEFAULT_BATCH`; see :func:`build`."""
    defaults = {**dict(zip(("min_batch", "opt_batch", "max_batch"), DEFAULT_BATCH)), **build_profile}
    low = defaults["min_batch"] if min_batch is None else min_batch
    high = defaults["max_batch"] if max_batch is None else max_batch
    opt = min(max(defaults["opt_batch"], low), high) if opt_batch is None else opt_batch
    if not 1 <= low <= opt <= high:
        raise BuildError(f"batch range min={low}, opt={opt}, max={high} is not 1 <= min <= opt <= max")
    return (low, opt, high), (min_batch, opt_batch, max_batch) != (None, None, None)


def _targets(trt: ModuleType, spec: tensorrt_env.Flavour, requested: Sequence[str] | None,
             gpus: list[tensorrt_env.Gpu], no_gpu: str | None) -> list[str]:
    """Compute capabilities the engine will run on, e.g. ``["8.0", "8.6", "8.9", "12.0"]``."""
    if spec.name == "tensorrt":
        if not gpus:
            raise BackendUnavailable(f"full TensorRT builds only on the GPU it targets, and this machine has none "
                                     f"({no_gpu})",
                                     fix="build on the target machine, or use --flavour tensorrt_rtx, which builds "
                                         "ahead of time without a GPU")
        here = gpus[0].compute_capability
        if requested and list(requested) != [here]:
            raise BuildError(f"full TensorRT builds for the GPU it runs on (compute capability {here}), "
                             f"not for {', '.join(requested)}", fix="use --flavour tensorrt_rtx to build for other GPUs")
        return [here]
    supported = tensorrt_env.rtx_targets(trt)
    if requested is None:  # TensorRT-RTX's own default: Ampere and later; Turing only when asked for
        return [cc for cc in supported if float(cc) >= 8.0]
    unknown = [cc for cc in requested if cc not in supported]
    if unknown or not requested:
        raise BuildError(f"TensorRT-RTX {tensorrt_env.version(trt)} cannot build for compute capability "
                         f"{', '.join(unknown) or '(none given)'}", fix=f"choose from {', '.join(supported)}")
    return list(requested)


def _config(trt: ModuleType, builder: Any, spec: tensorrt_env.Flavour, profile: dict[str, dict[str, list[int]]],
            targets: list[str], workspace_mib: int | None) -> Any:
    config = builder.create_builder_config()
    if workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if spec.name == "tensorrt_rtx":
        config.num_compute_capabilities = len(targets)
        for index, cc in enumerate(targets):
            config.set_compute_capability(trt.ComputeCapability.__members__["SM" + cc.replace(".", "")], index)
    if profile:  # a network with dynamic inputs needs one, even where min = max
        optimisation = builder.create_optimization_profile()
        for name, shapes in profile.items():
            optimisation.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(optimisation)
    return config


# facts -------------------------------------------------------------------------------------
def _tensors(trt: ModuleType, tensors: list[Any]) -> list[dict[str, Any]]:
    """Name, shape (-1 for a dynamic axis) and numpy dtype name of network inputs or outputs."""
    return [{"name": t.name, "shape": list(t.shape), "dtype": _dtype_name(trt, t.dtype)} for t in tensors]


def _dtype_name(trt: ModuleType, dtype: Any) -> str:
    try:
        return np.dtype(trt.nptype(dtype)).name
    except TypeError:  # bf16, fp8, fp4: no numpy type
        return dtype.name.lower()


def _host(gpus: list[tensorrt_env.Gpu]) -> dict[str, Any]:
    return {"hostname": platform.node(), "platform": f"{platform.system()}-{platform.machine()}",
            "gpu": f"{gpus[0].name} (compute capability {gpus[0].compute_capability})" if gpus else None}


def _log_path(engine_path: Path) -> Path:
    """``model.rtx.engine`` -> ``model.rtx.build.json``."""
    return engine_path.with_suffix(".build.json")


def _write_log(path: Path, logger: Any, body: dict[str, Any]) -> None:
    """JSON build log beside the engine: the outcome plus TensorRT's messages (info and worse)."""
    messages = [{"severity": severity, "message": message} for severity, message in logger.messages]
    atomic.write_text(path, json.dumps({**body, "messages": messages}, indent=2) + "\n")
