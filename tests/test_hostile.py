"""The hostile-input sweep: malformed files, manifests, arrays and every command's bad flags.

Each CLI case runs in-process (``visionrt.runtime.cli.main``) and asserts: exit code 2, one stderr
line, no traceback, a bounded time, and the model directory byte-identical (sha256 of every file
before and after). Each stage (train, export, build, bench) is also failed at each of its steps:
the model directory must come back byte-identical. Property tests (hypothesis) feed random JSON to
the manifest loader and random strings to every argument type.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visionrt.runtime import argtypes, cli
from visionrt.runtime.errors import ArtifactError, InputError, VisionRTError
from visionrt.runtime.manifest import MANIFEST_NAME, ModelDir
from visionrt.runtime.predictor import Predictor

#: Longest a refused command may take (seconds): bad input is refused before any work.
REFUSAL_SECONDS = 5.0


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``visionrt ARGV`` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(argv: list[str], capsys, code: int = 2) -> str:
    start = time.perf_counter()
    got, _, err = run_main(argv, capsys)
    seconds = time.perf_counter() - start
    assert got == code, f"visionrt {' '.join(argv)} exited {got}: {err}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith("visionrt"), lines[0]
    assert seconds < REFUSAL_SECONDS, f"took {seconds:.1f}s to refuse"
    return lines[0]


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_data):
    """Named paths the cases point at: a plain file, a folder, a missing path, a text file named .png,
    an empty .png, an image, a too-long name; and a TCP port in use."""
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    root = tmp_path_factory.mktemp("places")
    (root / "file.txt").write_text("not a folder")
    (root / "text.png").write_text("hello")
    (root / "empty.png").write_bytes(b"")
    (root / "folder").mkdir()
    (root / "classes.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    yield {"classes": root / "classes.txt", "file": root / "file.txt", "dir": root / "folder", "missing": root / "missing" / "nowhere",
           "text_png": root / "text.png", "empty_png": root / "empty.png",
           "image": tiny_data / "images" / "test" / "000001.png", "data": tiny_data,
           "long": root / ("n" * 300 + ".png"), "busy_port": busy.getsockname()[1]}
    busy.close()


COUNT_BAD = ["-1", "0", "nan", "abc", "1.5", ""]
TIME_BAD = ["-1", "0", "nan", "inf", "-inf", "abc"]
NON_NEGATIVE_BAD = ["-1", "nan", "abc"]
UNIT_BAD = ["-0.1", "1.5", "nan", "inf", "abc"]


def _flag_cases() -> list[tuple[str, str, list[str]]]:
    """``(command, flag, bad values)``: every numeric flag of every command with values it must refuse."""
    table = {
        "predict": {"--top-k": COUNT_BAD, "--max-detections": COUNT_BAD, "--score-threshold": UNIT_BAD,
                    "--iou-threshold": UNIT_BAD, "--mask-threshold": UNIT_BAD, "--backend": ["nosuch"],
                    "--provider": ["nosuch"]},
        "bench": {"--seconds": TIME_BAD, "--threads": NON_NEGATIVE_BAD, "--batch-sizes": ["0", "-1", "abc", ",", "1,-2"],
                  "--backends": ["nosuch", "onnxruntime,nosuch", ","], "--max-slowdown": TIME_BAD},
        "build": {"--min-batch": COUNT_BAD, "--opt-batch": COUNT_BAD, "--max-batch": COUNT_BAD,
                  "--workspace-mib": COUNT_BAD, "--height": ["0", "abc", "1,2"], "--width": ["-1", "8,16"],
                  "--flavour": ["nosuch"], "--precision": ["fp64"]},
        "export": {"--samples": COUNT_BAD},
        "train": {"--epochs": COUNT_BAD, "--batch-size": COUNT_BAD, "--lr": TIME_BAD, "--image-size": COUNT_BAD,
                  "--workers": NON_NEGATIVE_BAD, "--threads": NON_NEGATIVE_BAD, "--seed": NON_NEGATIVE_BAD,
                  "--max-minutes": TIME_BAD, "--nproc": COUNT_BAD, "--optimizer": ["nosuch"], "--task": ["nosuch"],
                  "--preset": ["nosuch"], "--resize": ["nosuch"], "--scale-jitter": ["1", "-0.1", "nan", "abc"],
                  "--schedule": ["nosuch"]},
        "data": {"--seed": NON_NEGATIVE_BAD, "--task": ["nosuch"]},
        "pipeline": {"--seed": NON_NEGATIVE_BAD, "--bench-seconds": TIME_BAD},
        "serve": {"--port": ["-1", "65536", "abc"], "--max-batch-size": COUNT_BAD, "--max-queue": COUNT_BAD,
                  "--instances": COUNT_BAD, "--threads": NON_NEGATIVE_BAD, "--timeout-s": TIME_BAD,
                  "--max-body-mb": TIME_BAD, "--max-queue-delay-ms": ["-1", "nan", "inf"]},
        "import": {"--image-size": ["0", "abc", "1x2x3"], "--mean": ["nan", "abc"], "--task": ["nosuch"],
                   "--resize": ["nosuch"]},
        "loadtest": {"--duration": TIME_BAD, "--warmup": ["-1", "nan"], "--request-rate": TIME_BAD,
                     "--max-requests": COUNT_BAD, "--timeout": TIME_BAD, "--concurrency": ["0", "abc"],
                     "--seed": NON_NEGATIVE_BAD, "--endpoint": ["nosuch"]},
        "export-triton": {"--max-batch-size": COUNT_BAD, "--max-queue-delay-us": COUNT_BAD,
                          "--instances": COUNT_BAD, "--threads": NON_NEGATIVE_BAD, "--kind": ["tpu"]},
    }
    return [(command, flag, value) for command, flags in table.items() for flag, values in flags.items()
            for value in values]


def _base_argv(command: str, model: Path, places: dict[str, Path]) -> list[str]:
    """A command line of ``command`` that is valid but for the flag a case adds."""
    return {
        "predict": ["predict", str(model), str(places["image"])],
        "bench": ["bench", str(model)],
        "build": ["build", str(model)],
        "export": ["export", str(model)],
        "train": ["train", "--data", str(places["data"]), "--out", str(places["dir"] / "run")],
        "data": ["data", "--out", str(places["dir"] / "data")],
        "pipeline": ["pipeline", "classify", "--out", str(places["dir"] / "pipe")],
        "serve": ["serve", str(model)],
        "import": ["import", str(model / "model.onnx"), "--task", "classify", "--out", str(places["dir"] / "imp")],
        "loadtest": ["loadtest", "http://127.0.0.1:9", "--model", "m"],
        "export-triton": ["export-triton", str(model), "--repo", str(places["dir"] / "repo")],
    }[command]


@pytest.mark.parametrize("command, flag, value", _flag_cases())
def test_bad_flag_values_are_refused(command, flag, value, model, places, capsys):
    before = tree_hashes(model)
    line = assert_refused([*_base_argv(command, model, places), f"{flag}={value}"], capsys)
    assert flag in line, f"the error does not name {flag}: {line}"
    assert tree_hashes(model) == before


#: ``(case, argv builder, words the error line must hold)``: paths and arguments of the wrong kind.
PATH_CASES = [
    ("predict: missing model", lambda m, p: ["predict", str(p["missing"]), str(p["image"])], "does not exist"),
    ("predict: model is a file", lambda m, p: ["predict", str(p["file"]), str(p["image"])], "not a directory"),
    ("predict: model dir without manifest", lambda m, p: ["predict", str(p["dir"]), str(p["image"])], "no manifest"),
    ("predict: missing image", lambda m, p: ["predict", str(m), str(p["missing"])], "does not exist"),
    ("predict: folder as image", lambda m, p: ["predict", str(m), str(p["dir"])], "not a file"),
    ("predict: text as image", lambda m, p: ["predict", str(m), str(p["text_png"])], "not an image"),
    ("predict: empty image", lambda m, p: ["predict", str(m), str(p["empty_png"])], "image"),
    ("predict: name too long", lambda m, p: ["predict", str(m), str(p["long"])], "too long"),
    ("predict: model name too long", lambda m, p: ["predict", str(p["long"]), str(p["image"])], "too long"),
    ("predict: save-dir is a file", lambda m, p: ["predict", str(m), str(p["image"]), "--save-dir", str(p["file"])],
     "is a file"),
    ("predict: no engine", lambda m, p: ["predict", str(m), str(p["image"]), "--backend", "tensorrt"], "engine"),
    ("bench: missing model", lambda m, p: ["bench", str(p["missing"])], "does not exist"),
    ("bench: missing data", lambda m, p: ["bench", str(m), "--data", str(p["missing"])], "does not exist"),
    ("bench: out is a file", lambda m, p: ["bench", str(m), "--out", str(p["file"])], "is a file"),
    ("bench: missing compare", lambda m, p: ["bench", str(m), "--compare", str(p["missing"])], "does not exist"),
    ("bench: batch too big", lambda m, p: ["bench", str(m), "--batch-sizes", "100000"], "GiB"),
    ("build: folder without manifest", lambda m, p: ["build", str(p["dir"])], "no manifest"),
    ("build: min above max", lambda m, p: ["build", str(m), "--min-batch", "8", "--max-batch", "2"], "larger"),
    ("build: missing onnx file", lambda m, p: ["build", str(p["dir"] / "x.onnx")], "x.onnx"),
    ("export: missing data", lambda m, p: ["export", str(m), "--data", str(p["missing"])], "does not exist"),
    ("export: unknown precision", lambda m, p: ["export", str(m), "--precision", "fp64"], "fp64"),
    ("export: no model", lambda m, p: ["export"], "MODEL_DIR"),
    ("train: missing data", lambda m, p: ["train", "--data", str(p["missing"]), "--out", str(p["dir"] / "r")],
     "does not exist"),
    ("train: data is a file", lambda m, p: ["train", "--data", str(p["file"]), "--out", str(p["dir"] / "r")],
     "not a directory"),
    ("train: out is a file", lambda m, p: ["train", "--data", str(p["data"]), "--out", str(p["file"])], "is a file"),
    ("train: out holds a trained model", lambda m, p: ["train", "--data", str(p["data"]), "--out", str(m),
                                                       "--epochs", "1"], "--overwrite"),
    ("train: unknown model", lambda m, p: ["train", "--data", str(p["data"]), "--out", str(p["dir"] / "r"),
                                           "--model", "nosuch"], "nosuch"),
    ("train: missing config", lambda m, p: ["train", "--data", str(p["data"]), "--out", str(p["dir"] / "r"),
                                            "--config", str(p["missing"])], "does not exist"),
    ("train: config not a mapping", lambda m, p: ["train", "--data", str(p["data"]), "--out", str(p["dir"] / "r"),
                                                  "--config", str(p["file"])], "not a mapping"),
    ("data: out is a file", lambda m, p: ["data", "--out", str(p["file"])], "is a file"),
    ("data: bad check arguments", lambda m, p: ["data", "verify", "x"], "unknown"),
    ("data: no out", lambda m, p: ["data"], "--out"),
    ("pipeline: out is a file", lambda m, p: ["pipeline", "classify", "--out", str(p["file"])], "is a file"),
    ("pipeline: unknown task", lambda m, p: ["pipeline", "nosuch", "--out", str(p["dir"])], "nosuch"),
    ("serve: missing model", lambda m, p: ["serve", str(p["missing"])], "does not exist"),
    ("serve: port in use", lambda m, p: ["serve", str(m), "--port", str(p["busy_port"])], "cannot listen"),
    ("bench: onnx file batch too big", lambda m, p: ["bench", str(m / "model.onnx"), "--batch-sizes", "100000"],
     "GiB"),
    ("import: missing onnx", lambda m, p: ["import", str(p["missing"]), "--task", "classify", "--out",
                                           str(p["dir"] / "i")], "does not exist"),
    ("import: not an onnx", lambda m, p: ["import", str(p["file"]), "--task", "classify", "--out",
                                          str(p["dir"] / "i")], "file.txt"),
    ("import: out is a file", lambda m, p: ["import", str(m / "model.onnx"), "--task", "classify", "--out",
                                            str(p["file"])], "is a file"),
    ("import: out-of-range postprocess", lambda m, p: ["import", str(m / "model.onnx"), "--task", "classify", "--out",
                                                       str(p["dir"] / "i"), "--classes", str(p["classes"]),
                                                       "--postprocess", "top_k=-3"], "postprocess.top_k"),
    ("import: missing classes", lambda m, p: ["import", str(m / "model.onnx"), "--task", "classify", "--out",
                                              str(p["dir"] / "i"), "--classes", str(p["missing"])], "does not exist"),
    ("loadtest: missing images", lambda m, p: ["loadtest", "http://127.0.0.1:9", "--model", "m", "--images",
                                               str(p["missing"])], "does not exist"),
    ("loadtest: out is a file", lambda m, p: ["loadtest", "http://127.0.0.1:9", "--model", "m", "--out",
                                              str(p["file"])], "is a file"),
    ("export-triton: repo is a file", lambda m, p: ["export-triton", str(m), "--repo", str(p["file"])], "is a file"),
    ("export-triton: missing model", lambda m, p: ["export-triton", str(p["missing"]), "--repo",
                                                   str(p["dir"] / "repo")], "does not exist"),
    ("unknown flag", lambda m, p: ["predict", str(m), str(p["image"]), "--nosuch"], "unrecognized"),
    ("unknown command", lambda m, p: ["nosuch"], "nosuch"),
]


@pytest.mark.parametrize("name, make_argv, words", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_bad_paths_and_arguments_are_refused(name, make_argv, words, model, places, capsys):
    before = tree_hashes(model)
    line = assert_refused(make_argv(model, places), capsys)
    assert words in line
    assert tree_hashes(model) == before


# manifests ---------------------------------------------------------------------------------
def _set(path: str, value):
    """A mutation of the manifest dict: ``path`` (dotted; ``outputs.0.name``) set to ``value``."""
    def mutate(data: dict) -> dict:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return data
    return mutate


_DELETE = object()
MANIFEST_CASES = [
    ("a JSON list", lambda d: [d], "JSON list"),
    ("a JSON string", lambda d: "manifest", "JSON string"),
    ("null", lambda d: None, "JSON null"),
    ("task missing", _set("task", _DELETE), "'task' is missing"),
    ("unknown task", _set("task", "nosuch"), "'task'"),
    ("task a number", _set("task", 3), "'task'"),
    ("input a list", _set("input", [1, 2]), "'input'"),
    ("input missing", _set("input", _DELETE), "'input' is missing"),
    ("outputs a dict", _set("outputs", {"a": 1}), "'outputs'"),
    ("outputs empty", _set("outputs", []), "'outputs'"),
    ("an output a string", _set("outputs.0", "logits"), "'outputs[0]'"),
    ("output without name", _set("outputs.0.name", _DELETE), "outputs[0].name"),
    ("classes not strings", _set("classes", [1, 2]), "'classes'"),
    ("classes a dict", _set("classes", {"a": 1}), "'classes'"),
    ("std zero", _set("input.std", [0, 1, 1]), "input.std"),
    ("std negative", _set("input.std", [-1, 1, 1]), "input.std"),
    ("std a number", _set("input.std", 1.0), "input.std"),
    ("std missing", _set("input.std", _DELETE), "input.std"),
    ("mean NaN", _set("input.mean", [float("nan"), 0, 0]), "input.mean"),
    ("mean infinite", _set("input.mean", [float("inf"), 0, 0]), "input.mean"),
    ("mean of 2 for 3 channels", _set("input.mean", [0, 0]), "input.mean"),
    ("channels 2", _set("input.channels", 2), "input.channels"),
    ("channels a string", _set("input.channels", "3"), "input.channels"),
    ("channels a bool", _set("input.channels", True), "input.channels"),
    ("height 0", _set("input.height", 0), "input.height"),
    ("height negative", _set("input.height", -64), "input.height"),
    ("pad value 300", _set("input.pad_value", 300), "input.pad_value"),
    ("unknown input key", _set("input.colour", "RGB"), "input.colour"),
    ("postprocess a list", _set("postprocess", []), "'postprocess'"),
    ("top_k negative", _set("postprocess.top_k", -3), "postprocess.top_k"),
    ("top_k a string", _set("postprocess.top_k", "5"), "postprocess.top_k"),
    ("build profile a list", _set("build_profile", [1]), "'build_profile'"),
    ("files a list", _set("files", []), "'files'"),
    ("file entry a string", _set("files.onnx", "model.onnx"), "files.onnx"),
    ("file sha not hex", _set("files.onnx.sha256", "xyz"), "files.onnx.sha256"),
    ("file bytes negative", _set("files.onnx.bytes", -1), "files.onnx.bytes"),
    ("file path missing", _set("files.onnx.path", _DELETE), "files.onnx.path"),
    ("file path ..", _set("files.onnx.path", "../elsewhere/model.onnx"), "outside the model directory"),
    ("file path absolute", _set("files.onnx.path", "/etc/passwd"), "outside the model directory"),
    ("file path nested ..", _set("files.onnx.path", "a/../../model.onnx"), "outside the model directory"),
    ("file path windows", _set("files.onnx.path", "C:\\model.onnx"), "outside the model directory"),
    ("file path backslash ..", _set("files.onnx.path", "..\\model.onnx"), "outside the model directory"),
    ("file path empty", _set("files.onnx.path", ""), "files.onnx.path"),
    ("metrics a list", _set("metrics", []), "'metrics'"),
    ("history a dict", _set("history", {}), "'history'"),
    ("future format version", _set("format_version", 99), "upgrade visionrt"),
    ("format version a string", _set("format_version", "2"), "format_version"),
    ("format version zero", _set("format_version", 0), "format_version"),
    ("not visionrt", _set("format", "other"), "not a visionrt manifest"),
]


def _manifest_dir(model: Path, tmp_path: Path, mutate) -> Path:
    target = tmp_path / "m"
    shutil.copytree(model, target)
    data = json.loads((target / MANIFEST_NAME).read_text())
    (target / MANIFEST_NAME).write_text(json.dumps(mutate(data)))
    return target


@pytest.mark.parametrize("name, mutate, words", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_bad_manifests_are_one_artifact_error_naming_the_key(name, mutate, words, model, places, tmp_path, capsys):
    target = _manifest_dir(model, tmp_path, mutate)
    with pytest.raises(ArtifactError) as info:
        ModelDir.open(target)
    assert words in str(info.value)
    before = tree_hashes(target)
    line = assert_refused(["predict", str(target), str(places["image"])], capsys)
    assert words in line
    assert tree_hashes(target) == before


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe\x00", b"[" * 100_000, b""])
def test_unreadable_manifests(garbage, model, tmp_path):
    target = tmp_path / "m"
    shutil.copytree(model, target)
    (target / MANIFEST_NAME).write_bytes(garbage)
    with pytest.raises(ArtifactError):
        ModelDir.open(target)


def test_a_manifest_that_is_a_folder(tmp_path):
    (tmp_path / MANIFEST_NAME).mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        ModelDir.open(tmp_path)


def test_a_symlink_leading_out_of_the_model_directory_is_not_followed(model, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(model / "model.onnx", outside)
    target = tmp_path / "m"
    shutil.copytree(model, target)
    (target / "model.onnx").unlink()
    (target / "model.onnx").symlink_to(outside)
    with pytest.raises(ArtifactError, match="leads outside the model directory"):
        ModelDir.open(target).path("onnx")
    with pytest.raises(ArtifactError, match="leads outside"):
        Predictor(target)


def test_paths_are_normalised_on_load(model, tmp_path):
    target = _manifest_dir(model, tmp_path, _set("files.onnx.path", "./model.onnx"))
    model_dir = ModelDir.open(target)
    assert model_dir.manifest.files["onnx"].path == "model.onnx"
    assert model_dir.path("onnx") == target / "model.onnx"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20))
def test_random_json_raises_only_artifact_error(tmp_path, value):
    from visionrt.runtime.manifest import Manifest

    try:
        Manifest.from_dict(value)
    except ArtifactError:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["task", "input", "outputs", "files", "classes", "postprocess", "input.std", "input.mean",
                        "input.channels", "input.height", "outputs.0", "files.onnx", "files.onnx.path",
                        "format_version", "build_profile"]),
       value=st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
       | st.lists(st.integers() | st.floats(), max_size=4) | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
def test_a_valid_manifest_with_one_key_replaced_loads_or_raises_artifact_error(key, value, tiny_model_dir):
    """Mutations of a real manifest: the loader gives a manifest or an ArtifactError, nothing else,
    and a loaded one's file paths stay inside the directory."""
    from visionrt.runtime.manifest import Manifest

    data = _set(key, value)(json.loads((tiny_model_dir / MANIFEST_NAME).read_text()))
    try:
        manifest = Manifest.from_dict(data)
    except ArtifactError:
        return
    for entry in manifest.files.values():
        assert not entry.path.startswith("/") and ".." not in entry.path.split("/")
    assert all(s > 0 and math.isfinite(s) for s in manifest.input.std)


# argument types (property) ------------------------------------------------------------------
ARG_TYPES = {
    argtypes.positive_int: lambda v: isinstance(v, int) and v >= 1,
    argtypes.non_negative_int: lambda v: isinstance(v, int) and v >= 0,
    argtypes.port: lambda v: isinstance(v, int) and 0 <= v <= 65535,
    argtypes.positive_float: lambda v: math.isfinite(v) and v > 0,
    argtypes.non_negative_float: lambda v: math.isfinite(v) and v >= 0,
    argtypes.unit_float: lambda v: 0 <= v <= 1,
    argtypes.int_list: lambda v: bool(v) and all(isinstance(x, int) and x >= 1 for x in v),
    argtypes.name_list("a", "b"): lambda v: bool(v) and set(v) <= {"a", "b"},
}


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=12) | st.sampled_from(["nan", "inf", "-inf", "1e309", "-0", "0x10", " 3 ", "1_000", "a,b",
                                               "1,,2", "", ",", "NaN", "1e-400"]))
def test_argument_types_give_a_valid_value_or_an_argument_error(text):
    for parse, valid in ARG_TYPES.items():
        try:
            value = parse(text)
        except argparse.ArgumentTypeError:
            continue
        assert valid(value), (parse, text, value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300))
def test_path_types_never_raise_anything_but_argument_errors(text):
    for parse in (argtypes.existing_path, argtypes.existing_dir, argtypes.existing_file, argtypes.output_dir):
        try:
            parse(text)
        except argparse.ArgumentTypeError:
            pass


# the Python API -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor(model):
    with Predictor(model) as p:
        yield p


@pytest.mark.parametrize("kwargs", [{"threads": -5}, {"threads": 1.5}, {"threads": "2"}, {"backend": "nosuch"},
                                    {"precision": "fp64"}, {"model_dir": 42}, {"runner": 5}, {"provider": "nosuch"},
                                    {"backend": None}])
def test_predictor_refuses_bad_arguments(model, kwargs):
    kwargs = {"model_dir": model, **kwargs}
    with pytest.raises(VisionRTError):
        Predictor(**kwargs)


@pytest.mark.parametrize("images", [[], 42, None, [None], {"a": 1}, np.zeros((64, 64, 3), np.float64),
                                    np.full((64, 64, 3), np.nan, np.float32), np.zeros((0, 0, 3), np.uint8),
                                    np.zeros((64, 64, 3, 1, 1), np.uint8), np.zeros((64, 64, 5), np.uint8),
                                    np.zeros((64, 64, 3), np.int64), np.zeros((64, 64, 3), bool), b"", bytearray(b"xx"),
                                    "", "\0", "x" * 5000])
def test_predict_refuses_bad_images_with_input_error(predictor, images):
    with pytest.raises(InputError):
        predictor.predict(images)


@pytest.mark.parametrize("options", [{"top_k": -3}, {"top_k": 0}, {"top_k": 2.5}, {"top_k": "3"}, {"top_k": True},
                                     {"max_detections": 3}, {"nosuch": 1}])
def test_predict_refuses_bad_options(predictor, options):
    with pytest.raises(InputError):
        predictor.predict(np.zeros((64, 64, 3), np.uint8), **options)


def test_top_k_is_respected_and_refused_by_the_task_too(predictor):
    from visionrt.runtime.tasks.classify import postprocess

    image = np.zeros((64, 64, 3), np.uint8)
    assert len(predictor.predict(image, top_k=2)[0].top_k) == 2
    outputs = predictor.infer(predictor.preprocess([image]))
    with pytest.raises(InputError, match="top_k"):
        postprocess(outputs, predictor.manifest, top_k=-3)


def test_bytes_like_images_predict_like_bytes(predictor, places):
    data = places["image"].read_bytes()
    expected = predictor.predict(data)[0].to_dict()
    assert predictor.predict(bytearray(data))[0].to_dict() == expected
    assert predictor.predict(memoryview(data))[0].to_dict() == expected


@pytest.mark.parametrize("feed", [
    {"images": np.zeros((1, 3, 64, 64), np.float16)},
    {"images": np.zeros((1, 3, 64), np.float32)},
    {"images": np.zeros((1, 1, 64, 64), np.float32)},
    {"images": [[0.0]]},
    {},
])
def test_runner_refuses_bad_feeds(predictor, feed):
    with pytest.raises(InputError):
        predictor.runner.infer(feed)


# one line, always ---------------------------------------------------------------------------
def test_an_unexpected_error_is_one_internal_error_line(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(cli, "cmd_doctor", broken)
    line = assert_refused(["doctor"], capsys, code=1)
    assert line == ("visionrt doctor: internal error: ZeroDivisionError: division by zero; second line "
                    "(re-run with --debug and report it)")


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_doctor", interrupted)
    assert_refused(["doctor"], capsys, code=130)


def test_a_closed_pipe_ends_quietly():
    result = subprocess.run(f"{sys.executable} -m visionrt.runtime.cli doctor --json | head -c 1 >/dev/null; "
                            "echo ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() in ("0", str(cli.EXIT_BROKEN_PIPE))
    assert result.stderr == ""


def test_same_file_names_do_not_overwrite_each_other(model, places, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(places["image"], tmp_path / folder / "cat.png")
    code, out, err = run_main(["predict", str(model), str(tmp_path / "a" / "cat.png"), str(tmp_path / "b" / "cat.png"),
                               "--save-dir", str(tmp_path / "drawn"), "--json"], capsys)
    assert code == 0, err
    drawn = [row["drawn"] for row in json.loads(out)]
    assert len(set(drawn)) == 2 and all(Path(p).is_file() for p in drawn)
    assert cli.saved_stems([Path("cat.png"), Path("cat.png")]) == ["cat-0", "cat-1"]


def test_a_failed_import_leaves_no_directory_behind(model, places, tmp_path, capsys):
    out = tmp_path / "imported"
    assert_refused(["import", str(model / "model.onnx"), "--task", "classify", "--out", str(out), "--classes",
                    str(places["classes"]), "--postprocess", "score_threshold=2"], capsys)
    assert not out.exists()


def test_a_valid_predict_works_after_the_sweep(model, places, capsys):
    code, out, err = run_main(["predict", str(model), str(places["image"]), "--top-k", "2", "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)[0]["top_k"]) == 2


# stages are transactions --------------------------------------------------------------------
def _fail_after(monkeypatch, step: str, replacement=None) -> None:
    """Make step ``module:attr`` (or ``module:Class.attr``) do its work, or ``replacement``'s, then raise."""
    import importlib

    module, _, attr = step.partition(":")
    owner = importlib.import_module(module)
    *classes, name = attr.split(".")
    for cls in classes:
        owner = getattr(owner, cls)
    original = replacement or getattr(owner, name)

    def failing(*args, **kwargs):
        original(*args, **kwargs)
        raise RuntimeError(f"injected failure after {name}")
    monkeypatch.setattr(owner, name, failing)


def _assert_rolled_back(argv: list[str], root: Path, step: str, before: dict[str, str], capsys) -> None:
    code, _, err = run_main(["--quiet", *argv], capsys)
    assert code == 1, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"visionrt {argv[0]}: internal error: RuntimeError: injected")
    assert tree_hashes(root) == before, f"{step}: the model directory changed"
    assert not (root / ".visionrt-journal").exists()


@pytest.fixture
def fresh_model(model, tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(model, target)
    (target / "bench").mkdir(exist_ok=True)
    (target / "bench" / "bench.json").write_text('{"earlier": "report"}')  # a report a failed bench must keep
    return target


EXPORT_STEPS = ["visionrt.export.stage:export_onnx", "visionrt.export.stage:export_trt_flavour",
                "visionrt.export.stage:verify", "visionrt.runtime.manifest:ModelDir.save"]


@pytest.mark.parametrize("step", EXPORT_STEPS)
def test_a_failed_export_leaves_the_model_directory_byte_identical(step, fresh_model, places, monkeypatch, capsys):
    before = tree_hashes(fresh_model)
    _fail_after(monkeypatch, step)
    _assert_rolled_back(["export", str(fresh_model), "--samples", "4", "--data", str(places["data"])], fresh_model,
                        step, before, capsys)


BENCH_STEPS = ["visionrt.benchmarks.run:bench_cases", "visionrt.benchmarks.run:bench_model",
               "visionrt.benchmarks.run:bench_end_to_end", "visionrt.benchmarks.run:write_report",
               "visionrt.runtime.manifest:ModelDir.save"]


@pytest.mark.parametrize("step", BENCH_STEPS)
def test_a_failed_bench_leaves_the_model_directory_byte_identical(step, fresh_model, places, monkeypatch, capsys):
    before = tree_hashes(fresh_model)
    _fail_after(monkeypatch, step)
    _assert_rolled_back(["bench", str(fresh_model), "--backends", "onnxruntime", "--batch-sizes", "1",
                         "--seconds", "0.01", "--data", str(places["data"])], fresh_model, step, before, capsys)


def _fake_engine_build(trt, spec, onnx_path, engine_path, *args, **kwargs) -> dict:
    """Stands in for the TensorRT build (no GPU needed): writes an engine file and its log."""
    engine_path.write_bytes(b"engine" * 100)
    engine_path.with_suffix(".log.json").write_text("{}")
    return {"flavour": spec.name, "build_seconds": 0.1, "precision": "fp32"}


BUILD_STEPS = ["visionrt.export.build:_build_file", "visionrt.runtime.manifest:ModelDir.add_file",
               "visionrt.runtime.manifest:ModelDir.record", "visionrt.runtime.manifest:ModelDir.save"]


@pytest.mark.parametrize("step", BUILD_STEPS)
def test_a_failed_build_leaves_the_model_directory_byte_identical(step, fresh_model, monkeypatch, capsys):
    from visionrt.export import build as build_module
    from visionrt.runtime import tensorrt_env

    monkeypatch.setattr(tensorrt_env, "import_tensorrt", lambda name: None)
    if step.endswith("_build_file"):
        _fail_after(monkeypatch, step, replacement=_fake_engine_build)
    else:
        monkeypatch.setattr(build_module, "_build_file", _fake_engine_build)
        _fail_after(monkeypatch, step)
    before = tree_hashes(fresh_model)
    _assert_rolled_back(["build", str(fresh_model), "--flavour", "tensorrt_rtx"], fresh_model, step, before, capsys)


TRAIN_STEPS = ["visionrt.train.checkpoint:save_weights", "visionrt.train.checkpoint:save_resume",
               "visionrt.train.loop:_write_model_dir", "visionrt.runtime.atomic:write_text"]


@pytest.mark.slow
@pytest.mark.parametrize("step", TRAIN_STEPS)
def test_a_failed_training_over_a_model_leaves_it_byte_identical(step, fresh_model, places, tmp_path, monkeypatch,
                                                                 capsys):
    config = tmp_path / "run.yaml"
    config.write_text("model_kwargs: {widths: [8, 16, 16], blocks: 1}\n")
    before = tree_hashes(fresh_model)
    _fail_after(monkeypatch, step)
    _assert_rolled_back(["train", "--data", str(places["data"]), "--out", str(fresh_model), "--overwrite",
                         "--epochs", "1", "--no-check", "--config", str(config)], fresh_model, step, before, capsys)


def test_training_refuses_a_trained_model_directory_before_writing(fresh_model, places, capsys):
    before = tree_hashes(fresh_model)
    line = assert_refused(["train", "--data", str(places["data"]), "--out", str(fresh_model), "--epochs", "1"], capsys)
    assert "--resume" in line and "--overwrite" in line
    assert tree_hashes(fresh_model) == before


def test_the_transaction_restores_rewritten_files_and_removes_new_ones(tmp_path):
    from visionrt.runtime import atomic

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub" / "b.txt").write_text("b")
    before = tree_hashes(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with atomic.transaction(tmp_path):
            (tmp_path / "a.txt").write_text("changed in place")
            (tmp_path / "sub" / "b.txt").unlink()
            (tmp_path / "new" / "deep").mkdir(parents=True)
            (tmp_path / "new" / "deep" / "c.txt").write_text("c")
            raise KeyboardInterrupt
    assert tree_hashes(tmp_path) == before and not (tmp_path / "new").exists()
    with atomic.transaction(tmp_path):
        (tmp_path / "a.txt").write_text("kept")
    assert (tmp_path / "a.txt").read_text() == "kept" and not (tmp_path / atomic.JOURNAL_NAME).exists()
    with atomic.transaction(tmp_path):  # a second stage on the same directory meanwhile is refused
        with pytest.raises(ArtifactError, match="another stage is running"):
            with atomic.transaction(tmp_path):
                pass
    assert tree_hashes(tmp_path) == {**before, "a.txt": hashlib.sha256(b"kept").hexdigest()}
