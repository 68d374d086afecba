"""The model directory and its ``manifest.json``: how the stages talk to each other.

A model directory holds the weights, ONNX files and engines of one trained model beside a
manifest that says what they are: task, classes, input spec and normalisation, outputs,
post-processing parameters, every file with its sha256, metrics, parity results, engine
build facts and benchmark results. Every stage reads the manifest, adds its part, and
writes it back atomically.

Format version 2 (version 1 manifests are migrated on load, :func:`migrate_v1`): the primary
metric's name is ``primary_metric`` (v1: ``metrics["metric"]``) and the engine's default
optimisation profile is ``build_profile`` (v1: ``postprocess["build"]``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from . import atomic
from .errors import ArtifactError
from .file_kind import file_problem
from .tasks import TASKS, prediction_options

MANIFEST_NAME = "manifest.json"
FORMAT = "visionrt-model"
FORMAT_VERSION = 2
#: A manifest larger than this is refused unread (bytes).
MAX_MANIFEST_BYTES = 64 * 1024 ** 2


#: The values an input convention may take (:class:`InputSpec`), the default first.
COLORS = ("RGB", "BGR")
DTYPES = ("float32", "uint8")
INPUT_LAYOUTS = ("NCHW", "NHWC")
SCALES = ("0-1", "0-255")


def _one_of(values: tuple[str, ...]) -> tuple[Any, str]:
    """A schema check that a value is one of ``values``, and its wording."""
    return (lambda v: v in values), " or ".join(f'"{v}"' for v in values)


@dataclasses.dataclass
class InputSpec:
    """One image input, ``[N, C, H, W]`` float32 after preprocessing.

    Pixels are scaled to [0, 1] (``value / 255``), then normalised per channel as
    ``(x - mean) / std``. ``height``/``width`` of ``None`` mean any size (fully convolutional).
    Models imported from other exporters may differ (``visionrt.runtime.preprocess.normalise``):
    ``color`` ``BGR`` (channels reversed; mean/std in the model's channel order), ``scale``
    ``"0-255"`` (pixels not divided by 255), ``layout`` ``NHWC``, ``dtype`` ``uint8`` (pixels as they are),
    ``size_range`` ``(min, max)`` px per side with ``height``/``width`` ``None`` (each image fed at its
    own size, fitted into the range and rounded to a multiple of ``stride``: ``preprocess.fit``).
    """

    name: str = "images"
    channels: int = 3
    height: int | None = None
    width: int | None = None
    color: str = "RGB"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    resize: str = "bilinear"      # stretch with this interpolation, or "letterbox" (see visionrt.runtime.preprocess)
    pad_value: int = 114          # letterbox only: the grey level (0..255) of the padding
    dtype: str = "float32"
    layout: str = "NCHW"          # or "NHWC"
    scale: str = "0-1"            # pixel values before mean/std: "0-1" (value / 255) or "0-255" (value)
    size_range: tuple[int, int] | None = None  # height/width None: sides fed within [min, max] px
    stride: int = 1               # with size_range: fed sides are multiples of it

    @property
    def shape(self) -> list[Any]:
        sides = [self.height or "height", self.width or "width"]
        return ["batch", *sides, self.channels] if self.layout == "NHWC" else ["batch", self.channels, *sides]


@dataclasses.dataclass
class OutputSpec:
    """One model output: its name, symbolic shape and what its values mean."""

    name: str
    shape: list[Any]
    meaning: str
    dtype: str = "float32"


@dataclasses.dataclass
class FileEntry:
    """A file of the model directory, relative to it, with its sha256."""

    path: str
    sha256: str
    bytes: int
    role: str = ""


@dataclasses.dataclass
class Manifest:
    task: str
    model: dict[str, Any]
    classes: list[str]
    input: InputSpec
    outputs: list[OutputSpec]
    postprocess: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Name of the task's primary metric (a key of each backend's ``metrics[backend]["test"]``).
    primary_metric: str = ""
    #: The engine's default optimisation profile: ``min_batch``/``opt_batch``/``max_batch`` and
    #: ``height``/``width`` as ``[min, opt, max]`` (empty: the builder's defaults).
    build_profile: dict[str, Any] = dataclasses.field(default_factory=dict)
    files: dict[str, FileEntry] = dataclasses.field(default_factory=dict)
    #: Task metrics per backend (``"pytorch"``, ``"onnxruntime-cpu"``, ...): ``{"test": {...}, ...}``.
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    parity: dict[str, Any] = dataclasses.field(default_factory=dict)
    engines: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    benchmarks: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Reduced-precision variants (``export/precision.py``): calibration record, per precision
    #: its files, ops kept in float and accuracy against PyTorch fp32 with the verdict.
    precisions: dict[str, Any] = dataclasses.field(default_factory=dict)
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **body}

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> "Manifest":
        """The manifest of the JSON value ``data``, checked against the schema (:func:`check_schema`):
        any problem is one :class:`ArtifactError` naming the key."""
        if not isinstance(data, dict):
            raise ArtifactError(f"{source} is a JSON {_json_type(data)}, expected an object",
                                fix=_SCHEMA_FIX)
        if data.get("format") != FORMAT:
            raise ArtifactError(f"{source} is not a visionrt manifest (format={str(data.get('format'))[:80]!r})")
        version = data.get("format_version", 1)
        if not _is_int(version) or version < 1:
            raise ArtifactError(f"{source}: format_version must be a positive integer, got {version!r}"[:300],
                                fix=_SCHEMA_FIX)
        if version > FORMAT_VERSION:
            raise ArtifactError(
                f"{source} has format version {version}, this visionrt reads "
                f"up to {FORMAT_VERSION}",
                fix="upgrade visionrt",
            )
        check_schema(data, source)
        if version < 2:
            data = migrate_v1(data)
        fields = {f.name for f in dataclasses.fields(cls)}
        body = {k: v for k, v in data.items() if k in fields}
        body["input"] = InputSpec(**{**body["input"], "mean": tuple(body["input"]["mean"]),
                                     "std": tuple(body["input"]["std"]),
                                     "size_range": tuple(body["input"]["size_range"])
                                     if body["input"].get("size_range") else None})
        body["outputs"] = [OutputSpec(**o) for o in body["outputs"]]
        body["files"] = {k: FileEntry(**{**v, "path": normal_relative_path(v["path"])})
                         for k, v in body.get("files", {}).items()}
        return cls(**body)


# schema -----------------------------------------------------------------------------------
_SCHEMA_FIX = "re-run the stage that wrote the model directory, or repair that key"
_ANY_NUMBER = (int, float)


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, _ANY_NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(v: Any) -> bool:
    return _is_int(v) and v >= 1


def _fraction(v: Any) -> bool:
    return _is_number(v) and 0 <= v <= 1


#: Manifest keys: key -> (JSON type, required). Nested objects have tables of their own below.
_TOP: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "task": (str, True), "model": (dict, True), "classes": (list, True), "input": (dict, True),
    "outputs": (list, True), "postprocess": (dict, False), "primary_metric": (str, False),
    "build_profile": (dict, False), "files": (dict, False), "metrics": (dict, False), "parity": (dict, False),
    "engines": (dict, False), "benchmarks": (dict, False), "precisions": (dict, False),
    "versions": (dict, False), "history": (list, False),
}
#: Checks of single values: key -> (test, what it must be).
_INPUT: dict[str, tuple[Any, str]] = {
    "name": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "channels": (lambda v: _is_int(v) and v in (1, 3), "1 or 3"),
    "height": (lambda v: v is None or _positive_int(v), "a positive integer or null"),
    "width": (lambda v: v is None or _positive_int(v), "a positive integer or null"),
    "color": _one_of(COLORS),
    "mean": (lambda v: isinstance(v, list) and len(v) > 0 and all(_is_number(x) for x in v),
             "a non-empty list of finite numbers"),
    "std": (lambda v: isinstance(v, list) and len(v) > 0 and all(_is_number(x) and x > 0 for x in v),
            "a non-empty list of finite numbers > 0"),
    "resize": (lambda v: isinstance(v, str), "a string"),
    "pad_value": (lambda v: _is_int(v) and 0 <= v <= 255, "an integer 0..255"),
    "dtype": _one_of(DTYPES),
    "layout": _one_of(INPUT_LAYOUTS),
    "scale": _one_of(SCALES),
    "size_range": (lambda v: v is None or (isinstance(v, list) and len(v) == 2 and all(_positive_int(x) for x in v)
                                           and v[0] <= v[1]), "null or [min, max] positive integers, min <= max"),
    "stride": (_positive_int, "a positive integer"),
}
_OUTPUT: dict[str, tuple[Any, str]] = {
    "name": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "shape": (lambda v: isinstance(v, list), "a list"),
    "meaning": (lambda v: isinstance(v, str), "a string"),
    "dtype": (lambda v: isinstance(v, str), "a string"),
}
_FILE: dict[str, tuple[Any, str]] = {
    "path": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "sha256": (lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
               "64 lowercase hex digits"),
    "bytes": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "role": (lambda v: isinstance(v, str), "a string"),
}
#: Post-processing parameters whose range the runtime relies on beside the tasks' prediction
#: options (whose defaults the manifest holds, checked by their specs; others are the task's own).
_POSTPROCESS: dict[str, tuple[Any, str]] = {
    "nms_score_threshold": (_fraction, "a number in [0, 1]"),
}
_BUILD_PROFILE: dict[str, tuple[Any, str]] = {
    key: (_positive_int, "a positive integer") for key in ("min_batch", "opt_batch", "max_batch")}


def check_schema(data: dict[str, Any], source: str = "manifest", fix: str = _SCHEMA_FIX) -> None:
    """Check the manifest dict ``data``: required keys, JSON types, ranges (``std > 0``, finite
    ``mean``, ``channels`` 1 or 3, thresholds in [0, 1], ...), a known task, and every
    ``files.*.path`` relative and inside the directory. Raises :class:`ArtifactError` naming the key."""
    def fail(key: str, problem: str) -> None:
        raise ArtifactError(f"{source}: '{key}' {problem}"[:400], fix=fix)

    for key, (kind, required) in _TOP.items():
        if key not in data:
            if required:
                fail(key, "is missing")
        elif not isinstance(data[key], kind):
            fail(key, f"is a JSON {_json_type(data[key])}, expected {_json_type(kind())}")
    if data["task"] not in TASKS:
        fail("task", f"is {data['task']!r}, not a task this visionrt knows ({', '.join(TASKS)})")
    if not all(isinstance(c, str) for c in data["classes"]):
        fail("classes", "must be a list of strings")
    _check_fields(data["input"], _INPUT, "input", fail, required=("mean", "std"))
    spec = data["input"]
    channels = spec.get("channels", InputSpec.channels)
    for key in ("mean", "std"):
        if len(spec[key]) not in (1, channels):
            fail(f"input.{key}", f"has {len(spec[key])} values for {channels} channel(s)")
    if not data["outputs"]:
        fail("outputs", "is empty: a model has at least one output")
    for i, output in enumerate(data["outputs"]):
        if not isinstance(output, dict):
            fail(f"outputs[{i}]", f"is a JSON {_json_type(output)}, expected an object")
        _check_fields(output, _OUTPUT, f"outputs[{i}]", fail, required=("name", "shape", "meaning"))
    for name, entry in data.get("files", {}).items():
        if not isinstance(entry, dict):
            fail(f"files.{name}", f"is a JSON {_json_type(entry)}, expected an object")
        _check_fields(entry, _FILE, f"files.{name}", fail, required=("path", "sha256", "bytes"))
        try:
            normal_relative_path(entry["path"])
        except ArtifactError as err:
            fail(f"files.{name}.path", str(err))
    options = {name: (option.accepts, option.expected) for name, (option, _) in prediction_options().items()}
    for key, table in (("postprocess", {**_POSTPROCESS, **options}), ("build_profile", _BUILD_PROFILE)):
        values = data.get(key, {})
        _check_fields({k: v for k, v in values.items() if k in table}, table, key, fail, required=())


def _check_fields(obj: dict[str, Any], table: dict[str, tuple[Any, str]], where: str, fail, required) -> None:
    for key in required:
        if key not in obj:
            fail(f"{where}.{key}", "is missing")
    for key, value in obj.items():
        if key not in table:
            fail(f"{where}.{key}", f"is not a known key (known: {', '.join(table)})")
        test, meaning = table[key]
        if not test(value):
            fail(f"{where}.{key}", f"must be {meaning}, got {json.dumps(value)[:60]}")


def normal_relative_path(path: str) -> str:
    """``path`` normalised (POSIX separators, no ``.``), refused when it could lead outside the
    model directory: absolute, with a drive, or with a ``..`` part."""
    text = path.replace("\\", "/")
    parts = PurePosixPath(text).parts
    if PurePosixPath(text).is_absolute() or PureWindowsPath(path).drive or ".." in parts or "\0" in path:
        raise ArtifactError(f"{path[:200]!r} leads outside the model directory (absolute, or with '..')",
                            fix="file paths in a manifest are relative to the model directory and stay inside it")
    normal = PurePosixPath(*[p for p in parts if p != "."]).as_posix() if parts else ""
    if normal in ("", "."):
        raise ArtifactError(f"{path!r} names no file", fix="give the file's path relative to the model directory")
    return normal


def migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A format-version-1 manifest dict as version 2: ``metrics["metric"]`` becomes ``primary_metric``,
    ``postprocess["build"]`` becomes ``build_profile``, and the PyTorch backend, ``"torch-eager"``
    in benchmark keys, is named ``"pytorch"``. The input is not changed."""
    metrics = {k: v for k, v in data.get("metrics", {}).items() if k != "metric"}
    postprocess = {k: v for k, v in data.get("postprocess", {}).items() if k != "build"}
    benchmarks = dict(data.get("benchmarks", {}))
    if "median_ms" in benchmarks:
        benchmarks["median_ms"] = {"/".join("pytorch" if part == "torch-eager" else part for part in key.split("/")): ms
                                   for key, ms in benchmarks["median_ms"].items()}
    return {**data, "format_version": 2, "primary_metric": data.get("metrics", {}).get("metric", ""),
            "metrics": metrics, "postprocess": postprocess, "benchmarks": benchmarks,
            "build_profile": data.get("postprocess", {}).get("build", {})}


class ModelDir:
    """A model directory on disk: ``root/manifest.json`` plus the files it lists."""

    def __init__(self, root: str | os.PathLike, manifest: Manifest):
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def open(cls, root: str | os.PathLike) -> "ModelDir":
        root = Path(root)
        path = root / MANIFEST_NAME
        fix = "pass the directory that `visionrt export` or `pipeline` wrote"
        try:
            if not root.is_dir():
                raise ArtifactError(f"model directory {root} does not exist" if not root.exists()
                                    else f"{root} is not a directory: not a visionrt model directory", fix=fix)
            if not path.is_file():
                raise ArtifactError(f"{root} has no {MANIFEST_NAME}: not a visionrt model directory", fix=fix)
            size = path.stat().st_size
            if size > MAX_MANIFEST_BYTES:
                raise ArtifactError(f"{path} is {size / 1024 ** 2:.0f} MiB, more than a manifest's "
                                    f"{MAX_MANIFEST_BYTES // 1024 ** 2} MiB limit", fix=fix)
            text = path.read_text(encoding="utf-8")
        except (OSError, ValueError) as err:  # name too long, no permission, NUL in the name; undecodable
            raise ArtifactError(f"cannot read the model directory {str(root)[:200]}: {err}", fix=fix) from err
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ArtifactError(f"{path} is not valid JSON: {str(err)[:200]}") from err
        return cls(root, Manifest.from_dict(data, source=str(path)))

    @classmethod
    def create(cls, root: str | os.PathLike, manifest: Manifest) -> "ModelDir":
        model_dir = cls(root, manifest)
        model_dir.root.mkdir(parents=True, exist_ok=True)
        model_dir.save()
        return model_dir

    def save(self) -> None:
        """Write the manifest atomically, checked against the schema first: a stage cannot write
        one that the next stage would refuse (:class:`ArtifactError`, nothing written)."""
        data = self.manifest.to_dict()
        text = json.dumps(data, indent=2) + "\n"
        check_schema(json.loads(text), f"the manifest for {self.root}",
                     fix="nothing was written; check the values given to this stage (e.g. --postprocess)")
        atomic.write_text(self.root / MANIFEST_NAME, text)

    def record(self, stage: str, **facts: Any) -> None:
        """Append what a stage did to the history (saved with the next :meth:`save`)."""
        when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.manifest.history.append({"stage": stage, "at": when, **facts})

    def add_file(self, key: str, path: str | os.PathLike, role: str = "") -> FileEntry:
        """Register a file already written inside the directory under ``key``."""
        path = Path(path)
        try:
            rel = path.resolve().relative_to(self.root.resolve())
        except ValueError as err:
            raise ArtifactError(f"{path} is outside the model directory {self.root}",
                                fix="write the stage's files inside the model directory") from err
        entry = FileEntry(path=rel.as_posix(), sha256=atomic.sha256(path), bytes=path.stat().st_size, role=role)
        self.manifest.files[key] = entry
        return entry

    def has(self, key: str) -> bool:
        return key in self.manifest.files

    def path(self, key: str, verify: bool = True) -> Path:
        """Absolute path of file ``key``; with ``verify``, check it exists and matches its sha256."""
        entry = self.manifest.files.get(key)
        if entry is None:
            known = ", ".join(sorted(self.manifest.files)) or "none"
            raise ArtifactError(f"{self.root} has no file '{key}' (it has: {known})",
                                fix="run the stage that writes it (export / build)")
        path = self.root / normal_relative_path(entry.path)
        problem = file_problem(path)  # before resolving: a symbolic-link loop cannot be resolved
        if problem:
            raise ArtifactError(f"{path} is listed in the manifest but {problem}",
                                fix="re-run the stage that wrote it, or put the file back")
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ArtifactError(f"{path} leads outside the model directory (a symbolic link to "
                                f"{path.resolve()})", fix="copy the file into the model directory instead of linking it")
        if verify and atomic.sha256(path) != entry.sha256:
            raise ArtifactError(f"{path} does not match the sha256 in the manifest: corrupt or replaced",
                                fix="re-run the stage that wrote it")
        return path
