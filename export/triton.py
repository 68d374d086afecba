"""``visionrt export-triton``: model directories -> a Triton Inference Server model repository.

For a model directory named ``NAME`` (or given as ``NAME=DIR``) the repository gets:

- ``NAME_onnx``: the portable ONNX on Triton's ``onnxruntime`` backend (``1/model.onnx``);
- ``NAME_<engine key>`` (e.g. ``NAME_trt``): each full-TensorRT engine of the manifest on the
  ``tensorrt`` backend (``1/model.plan``). visionrt's plugins are compiled into the engine, so
  Triton preloads no plugin library; TensorRT-RTX engines are skipped (Triton runs TensorRT);
- ``NAME``: a ``python``-backend model wrapping visionrt's own decode, pre- and post-processing
  around the ONNX (a :class:`~visionrt.runtime.predictor.Predictor`): encoded image bytes in,
  the task's results out as JSON, equal to ``visionrt predict``;
- ``NAME_preprocess`` -> ``NAME_onnx`` -> ``NAME_postprocess``, tied by the ensemble
  ``NAME_ensemble``: the same bytes-in, JSON-out contract with inference on the onnxruntime backend.

``NAME_onnx`` serves the ONNX file's own outputs. Those of an imported model whose manifest
records an output layout (a YOLOv5/YOLOv8/SSD detector, a one-channel segmenter:
:mod:`visionrt.runtime.output_adapters`) are not the manifest's: ``NAME_postprocess`` maps them
onto the task's contract as every visionrt runner does, so the results still equal ``predict``.

Every model has ``max_batch_size`` (``dims`` omit the batch axis), ``dynamic_batching`` (except
the ensemble, which its steps batch) and an ``instance_group``. Python models carry
``export/triton_model.py`` as ``model.py`` and a copy of the model directory's manifest (and
ONNX) in ``1/visionrt_model/``, so the repository is self-contained; Triton's python environment
needs the visionrt runtime (``pip install visionrt``). Each model folder is written beside its
final place and renamed into it, so a failed export leaves no half-written model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..runtime.argtypes import non_negative_int, output_dir, positive_int
from ..runtime.errors import ArtifactError, InputError
from ..runtime.manifest import MANIFEST_NAME, ModelDir, OutputSpec
from ..runtime.model_check import check_model_dir
from .build import DEFAULT_BATCH, scan_onnx
from . import triton_model

log = logging.getLogger(__name__)

#: numpy dtype name -> Triton data type.
DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
              "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
              "bool": "TYPE_BOOL"}
#: Tensor names of the python models' encoded-image input, JSON output and original image size.
IMAGE, RESULT, ORIGINAL_SIZE = "IMAGE", "RESULT", "ORIGINAL_SIZE"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class Enum(str):
    """A protobuf enum value: written bare in ``config.pbtxt`` (``TYPE_FP32``, not ``"TYPE_FP32"``)."""


@dataclasses.dataclass(frozen=True)
class TritonOptions:
    """Scheduling of every exported model.

    ``max_batch_size``: None takes the manifest's build ``max_batch`` (else 32), capped for an
    engine by its optimisation profile. ``max_queue_delay_us``: how long Triton's dynamic batcher
    waits to fill a batch (microseconds). ``instances``: model instances per device.
    ``onnx_kind``: where the onnxruntime and python models run, ``KIND_CPU`` or ``KIND_GPU``.
    ``threads``: onnxruntime threads of the python models (0: onnxruntime's default).
    ``onnx_backend``: ``python`` serves ``NAME_onnx`` with the python backend (onnxruntime
    inside it) for a Triton without the onnxruntime backend (e.g. the one PyTriton bundles).
    """

    max_batch_size: int | None = None
    max_queue_delay_us: int = 500
    instances: int = 1
    onnx_kind: str = "KIND_CPU"
    threads: int = 0
    onnx_backend: str = "onnxruntime"


@dataclasses.dataclass
class TritonModel:
    """One model of the repository: its ``config.pbtxt`` fields and files (``1/<path>`` -> source)."""

    name: str
    config: dict[str, Any]
    files: dict[str, Path]


def export_repository(model_dirs: Mapping[str, str | os.PathLike], repo: str | os.PathLike,
                      options: TritonOptions = TritonOptions(), force: bool = False) -> list[str]:
    """Write the Triton models of every ``{name: model_dir}`` into ``repo``; their names, in order.

    An existing model folder of the same name is an :class:`InputError` unless ``force``.
    """
    repo = Path(repo)
    models = [model for name, path in model_dirs.items() for model in triton_models(name, ModelDir.open(path), options)]
    clashes = [m.name for m in models if (repo / m.name).exists()]
    if clashes and not force:
        raise InputError(f"{repo} already has model(s) {', '.join(clashes)}", fix="pass --force to replace them")
    repo.mkdir(parents=True, exist_ok=True)
    for model in models:
        _write_model(repo, model)
        log.info("wrote %s", repo / model.name)
    return [m.name for m in models]


def triton_models(name: str, model_dir: ModelDir, options: TritonOptions) -> list[TritonModel]:
    """The Triton models for one visionrt model directory (see the module docstring)."""
    if not _NAME.match(name):
        raise InputError(f"'{name}' cannot name a Triton model", fix="use letters, digits, '_', '.', '-' (NAME=DIR)")
    manifest = model_dir.manifest
    check_model_dir(model_dir)  # before any file is written
    build = manifest.build_profile
    max_batch = options.max_batch_size or build.get("max_batch", DEFAULT_BATCH[2])
    spec = manifest.input
    model_input = _tensor(spec.name, spec.dtype, [d if isinstance(d, int) else -1 for d in spec.shape[1:]])
    model_outputs = [_tensor(o.name, o.dtype, _dims(o.shape, o.name)) for o in _served_outputs(model_dir)]
    image, result = _tensor(IMAGE, "TYPE_STRING", [1]), _tensor(RESULT, "TYPE_STRING", [1])
    original_size = _tensor(ORIGINAL_SIZE, "int32", [2])
    onnx_path, weights = model_dir.path("onnx"), _external_data(model_dir)
    onnx_entry = Path(manifest.files["onnx"].path)
    packed = {f"{triton_model.MODEL_DIR}/{(onnx_entry.parent / rel).as_posix()}": path
              for rel, path in {onnx_entry.name: onnx_path, **weights}.items()}
    manifest_file = {f"{triton_model.MODEL_DIR}/{MANIFEST_NAME}": model_dir.root / MANIFEST_NAME}

    def config(model_name: str, backend: str, inputs: list, outputs: list, **extra: Any) -> dict[str, Any]:
        return {"name": model_name, "backend": backend, "max_batch_size": max_batch, "input": inputs,
                "output": outputs, "dynamic_batching": {"max_queue_delay_microseconds": options.max_queue_delay_us},
                "instance_group": [{"kind": Enum(options.onnx_kind), "count": options.instances}], **extra}

    def python(model_name: str, mode: str, inputs: list, outputs: list, files: Mapping[str, Path]) -> TritonModel:
        parameters = [{"key": "mode", "value": {"string_value": mode}},
                      {"key": "threads", "value": {"string_value": str(options.threads)}}]
        return TritonModel(model_name, config(model_name, "python", inputs, outputs, parameters=parameters),
                           {"model.py": Path(triton_model.__file__), **manifest_file, **files})

    onnx_name = f"{name}_onnx"
    if options.onnx_backend == "python":
        onnx_model = python(onnx_name, "infer", [model_input], model_outputs, packed)
    else:
        onnx_model = TritonModel(onnx_name, config(onnx_name, "onnxruntime", [model_input], model_outputs),
                                 {"model.onnx": onnx_path, **weights})
    models = [
        onnx_model,
        *_engine_models(name, model_dir, options, max_batch),
        python(name, "predict", [image], [result], packed),
        python(f"{name}_preprocess", "preprocess", [image], [model_input, original_size], {}),
        python(f"{name}_postprocess", "postprocess", [*model_outputs, original_size], [result], {}),
    ]
    models.append(_ensemble(name, max_batch, spec.name, [o["name"] for o in model_outputs]))
    return models


def _served_outputs(model_dir: ModelDir) -> list[OutputSpec]:
    """The outputs of the portable ONNX as an onnxruntime backend serves them: the manifest's, or
    where the manifest records an output layout, the file's own (dynamic axes ``"batch"`` first,
    then by name or ``"?"``)."""
    if not model_dir.manifest.postprocess.get("output_layout"):
        return model_dir.manifest.outputs
    from .import_onnx import onnx_io

    _, outputs = onnx_io(model_dir.path("onnx"))
    return [OutputSpec(o.name, ["batch", *(d if isinstance(d, int) and d > 0 else d or "?" for d in o.shape[1:])],
                       "the model's own output (the postprocess model adapts it)", o.dtype) for o in outputs]


def _engine_models(name: str, model_dir: ModelDir, options: TritonOptions, max_batch: int) -> Iterable[TritonModel]:
    """A ``tensorrt``-backend model per full-TensorRT engine in the manifest."""
    for key, facts in model_dir.manifest.engines.items():
        if facts.get("flavour") != "tensorrt":
            log.info("engine '%s' is a %s engine, which Triton's tensorrt backend cannot run: not exported",
                     key, facts.get("flavour"))
            continue
        profile_max = min(shapes["max"][0] for shapes in facts["profile"].values())
        if max_batch > profile_max:
            log.info("engine '%s': max_batch_size %d lowered to its profile's maximum batch %d", key, max_batch,
                     profile_max)
        model_name = f"{name}_{key}"
        config = {"name": model_name, "backend": "tensorrt", "max_batch_size": min(max_batch, profile_max),
                  "input": [_tensor(t["name"], t["dtype"], t["shape"][1:]) for t in facts["inputs"]],
                  "output": [_tensor(t["name"], t["dtype"], t["shape"][1:]) for t in facts["outputs"]],
                  "dynamic_batching": {"max_queue_delay_microseconds": options.max_queue_delay_us},
                  "instance_group": [{"kind": Enum("KIND_GPU"), "count": options.instances}]}
        yield TritonModel(model_name, config, {"model.plan": model_dir.path(key)})


def _ensemble(name: str, max_batch: int, input_name: str, output_names: list[str]) -> TritonModel:
    """``NAME_ensemble``: IMAGE -> NAME_preprocess -> NAME_onnx -> NAME_postprocess -> RESULT."""
    def step(model: str, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> dict[str, Any]:
        return {"model_name": model, "model_version": -1,
                "input_map": [{"key": k, "value": v} for k, v in inputs.items()],
                "output_map": [{"key": k, "value": v} for k, v in outputs.items()]}

    steps = [step(f"{name}_preprocess", {IMAGE: IMAGE}, {input_name: "preprocessed", ORIGINAL_SIZE: "original_size"}),
             step(f"{name}_onnx", {input_name: "preprocessed"}, {o: f"raw_{o}" for o in output_names}),
             step(f"{name}_postprocess", {**{o: f"raw_{o}" for o in output_names}, ORIGINAL_SIZE: "original_size"},
                  {RESULT: RESULT})]
    config = {"name": f"{name}_ensemble", "platform": "ensemble", "max_batch_size": max_batch,
              "input": [_tensor(IMAGE, "TYPE_STRING", [1])], "output": [_tensor(RESULT, "TYPE_STRING", [1])],
              "ensemble_scheduling": {"step": steps}}
    return TritonModel(f"{name}_ensemble", config, {})


def _tensor(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    data_type = dtype if dtype.startswith("TYPE_") else DATA_TYPES.get(dtype)
    if data_type is None:
        raise ArtifactError(f"tensor '{name}' has dtype {dtype}, which Triton has no type for")
    return {"name": name, "data_type": Enum(data_type), "dims": [int(d) for d in dims]}


def _dims(shape: list[Any], name: str) -> list[int]:
    """A manifest shape ``["batch", K, "H", ...]`` -> Triton dims without the batch axis (-1 where symbolic)."""
    if not shape or shape[0] != "batch":
        raise ArtifactError(f"output '{name}' has shape {shape}, without a leading batch axis",
                            fix="re-export the model with a dynamic batch axis")
    return [d if isinstance(d, int) else -1 for d in shape[1:]]


def _external_data(model_dir: ModelDir) -> dict[str, Path]:
    """The portable ONNX's external weight files: ``{path relative to the ONNX file's folder: path}``."""
    onnx_path = model_dir.path("onnx", verify=False)
    return {name: onnx_path.parent / name for name in scan_onnx(onnx_path).external_data}


def _write_model(repo: Path, model: TritonModel) -> None:
    """``repo/NAME/config.pbtxt`` and ``repo/NAME/1/<files>``, built in a temporary folder and
    renamed into place (replacing an older one)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=repo))
    try:
        (staging / "config.pbtxt").write_text(to_pbtxt(model.config), encoding="utf-8")
        (staging / "1").mkdir()
        for rel, source in model.files.items():
            target = staging / "1" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        final = repo / model.name
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def to_pbtxt(message: Mapping[str, Any], indent: int = 0) -> str:
    """A message as protobuf text format: ``{field: value}``, lists for repeated fields,
    nested mappings for messages, :class:`Enum` for enum values."""
    pad = "  " * indent
    lines = []
    for field, value in message.items():
        if isinstance(value, Mapping):
            lines.append(f"{pad}{field} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            for item in value:
                lines.append(f"{pad}{field} {{\n{to_pbtxt(item, indent + 1)}{pad}}}")
        elif isinstance(value, list):
            lines.append(f"{pad}{field}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{field}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


# command line -------------------------------------------------------------------------------
def named_dirs(specs: Iterable[str]) -> dict[str, Path]:
    """``["runs/a", "b=runs/x"]`` -> ``{"a": Path("runs/a"), "b": Path("runs/x")}``; a name given twice is an error."""
    named: dict[str, Path] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else (Path(spec).resolve().name, "", spec)
        if name in named:
            raise InputError(f"two models are named '{name}'", fix="name them: NAME=DIR")
        named[name] = Path(path)
    return named


def cmd_export_triton(args: argparse.Namespace) -> None:
    from ..runtime.cli import emit

    options = TritonOptions(max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us,
                            instances=args.instances, onnx_kind=f"KIND_{args.kind.upper()}", threads=args.threads,
                            onnx_backend=args.onnx_backend)
    names = export_repository(named_dirs(args.model_dirs), args.repo, options, force=args.force)
    emit(args, {"repo": str(args.repo), "models": names},
         f"Triton model repository {args.repo}: {', '.join(names)}\n"
         f"run: tritonserver --model-repository {args.repo.resolve()}")


def register(command) -> None:
    """Add ``export-triton`` through the root CLI's ``command(name, func, help)``."""
    p = command("export-triton", cmd_export_triton, "write a Triton Inference Server model repository "
                                                    "(onnxruntime, tensorrt, python and ensemble models)")
    p.add_argument("model_dirs", nargs="+", metavar="[NAME=]MODEL_DIR")
    p.add_argument("--repo", type=output_dir, required=True, help="the model repository folder (created if missing)")
    p.add_argument("--max-batch-size", type=positive_int, help="default: the manifest's build max_batch, else 32")
    p.add_argument("--max-queue-delay-us", type=positive_int, default=500,
                   help="how long Triton's dynamic batcher waits to fill a batch (microseconds)")
    p.add_argument("--instances", type=positive_int, default=1, help="model instances per device")
    p.add_argument("--kind", choices=("cpu", "gpu"), default="cpu",
                   help="where the onnxruntime and python models run (engines always run on the GPU)")
    p.add_argument("--threads", type=non_negative_int, default=0, help="onnxruntime threads in the python model (0: all)")
    p.add_argument("--onnx-backend", choices=("onnxruntime", "python"), default="onnxruntime",
                   help="python: run NAME_onnx with onnxruntime inside Triton's python backend (for a Triton "
                        "without the onnxruntime backend)")
    p.add_argument("--force", action="store_true", help="replace models of the same name in the repository")
