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
import os
from pathlib import Path
from typing import Any

from . import atomic
from .errors import ArtifactError

MANIFEST_NAME = "manifest.json"
FORMAT = "visionrt-model"
FORMAT_VERSION = 2


@dataclasses.dataclass
class InputSpec:
    """One image input, ``[N, C, H, W]`` float32 after preprocessing.

    Pixels are scaled to [0, 1] (``value / 255``), then normalised per channel as
    ``(x - mean) / std``. ``height``/``width`` of ``None`` mean any size (fully convolutional).
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

    @property
    def shape(self) -> list[Any]:
        return ["batch", self.channels, self.height or "height", self.width or "width"]


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
    def from_dict(cls, data: dict[str, Any], source: str = "manifest") -> "Manifest":
        if data.get("format") != FORMAT:
            raise ArtifactError(f"{source} is not a visionrt manifest (format={data.get('format')!r})")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise ArtifactError(
                f"{source} has format version {data['format_version']}, this visionrt reads "
                f"up to {FORMAT_VERSION}",
                fix="upgrade visionrt",
            )
        if data.get("format_version", 0) < 2:
            data = migrate_v1(data)
        try:
            fields = {f.name for f in dataclasses.fields(cls)}
            body = {k: v for k, v in data.items() if k in fields}
            body["input"] = InputSpec(**{**body["input"], "mean": tuple(body["input"]["mean"]),
                                         "std": tuple(body["input"]["std"])})
            body["outputs"] = [OutputSpec(**o) for o in body["outputs"]]
            body["files"] = {k: FileEntry(**v) for k, v in body.get("files", {}).items()}
            return cls(**body)
        except (KeyError, TypeError) as err:
            raise ArtifactError(f"{source} is incomplete or malformed: {err}") from err


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
        if not root.is_dir():
            raise ArtifactError(f"model directory {root} does not exist",
                                fix="pass the directory that `visionrt export` or `pipeline` wrote")
        if not path.is_file():
            raise ArtifactError(f"{root} has no {MANIFEST_NAME}: not a visionrt model directory",
                                fix="pass the directory that `visionrt export` or `pipeline` wrote")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ArtifactError(f"{path} is not valid JSON: {err}") from err
        return cls(root, Manifest.from_dict(data, source=str(path)))

    @classmethod
    def create(cls, root: str | os.PathLike, manifest: Manifest) -> "ModelDir":
        model_dir = cls(root, manifest)
        model_dir.root.mkdir(parents=True, exist_ok=True)
        model_dir.save()
        return model_dir

    def save(self) -> None:
        atomic.write_text(self.root / MANIFEST_NAME, json.dumps(self.manifest.to_dict(), indent=2) + "\n")

    def record(self, stage: str, **facts: Any) -> None:
        """Append what a stage did to the history (saved with the next :meth:`save`)."""
        when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.manifest.history.append({"stage": stage, "at": when, **facts})

    def add_file(self, key: str, path: str | os.PathLike, role: str = "") -> FileEntry:
        """Register a file already written inside the directory under ``key``."""
        path = Path(path)
        rel = path.resolve().relative_to(self.root.resolve())
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
        path = self.root / entry.path
        if not path.is_file():
            raise ArtifactError(f"{path} is listed in the manifest but missing")
        if verify and atomic.sha256(path) != entry.sha256:
            raise ArtifactError(f"{path} does not match the sha256 in the manifest: corrupt or replaced",
                                fix="re-run the stage that wrote it")
        return path
