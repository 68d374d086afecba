"""The hostile sweep, continued: model directories and model files that are wrong in ways the schema
cannot see, and a ``doctor`` that must report whatever it finds.

* a manifest that is valid JSON but does not fit its model (classes, input size, outputs, input
  name): refused when the directory is opened, naming the field;
* file-system oddities where a model file belongs (a FIFO, a symbolic-link loop, a broken link, a
  directory, a socket) in every command that opens one, without hanging;
* a file that is not ONNX where one is expected, in every command that parses one;
* ``doctor`` with broken optional packages: each broken row says so and the rest still prints.

Every CLI case: exit 2, one stderr line naming the cause, in bounded time, the directory unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_hostile import assert_refused, run_main, tree_hashes
from visionrt.runtime import doctor
from visionrt.runtime.errors import ArtifactError
from visionrt.runtime.file_kind import file_problem
from visionrt.runtime.manifest import MANIFEST_NAME, ModelDir
from visionrt.runtime.predictor import Predictor


@pytest.fixture(scope="module")
def image(tiny_data) -> Path:
    return tiny_data / "images" / "test" / "000001.png"


def _copy(model: Path, tmp_path: Path, name: str = "m") -> Path:
    target = tmp_path / name
    shutil.copytree(model, target)
    return target


def _edit_manifest(root: Path, mutate) -> None:
    data = json.loads((root / MANIFEST_NAME).read_text())
    mutate(data)
    (root / MANIFEST_NAME).write_text(json.dumps(data))


def _replace_file(root: Path, name: str, content: bytes) -> None:
    """``root/name`` replaced by ``content``, with the manifest's sha256 and size updated to match
    (so only the content itself is wrong)."""
    (root / name).write_bytes(content)

    def rehash(data):
        for entry in data["files"].values():
            if entry["path"] == name:
                entry.update(sha256=hashlib.sha256(content).hexdigest(), bytes=len(content))
    _edit_manifest(root, rehash)


# a manifest that does not fit its model ---------------------------------------------------------
def _set_output_shape(shape):
    return lambda d: d["outputs"][0].__setitem__("shape", shape)


#: ``(case, mutation of the manifest dict, the field the error must name)``: valid JSON, valid schema.
MISFIT_CASES = [
    ("3 classes for 10 logits", lambda d: d.__setitem__("classes", ["a", "b", "c"]), "'classes'"),
    ("3 classes and outputs edited to match", lambda d: (d.__setitem__("classes", ["a", "b", "c"]),
                                                         _set_output_shape(["batch", 3])(d)), "'classes'"),
    ("11 classes for 10 logits", lambda d: d.__setitem__("classes", [str(i) for i in range(11)]), "'classes'"),
    ("no classes", lambda d: d.__setitem__("classes", []), "'classes' is empty"),
    ("input of 100000 x 100000", lambda d: d["input"].update(height=100_000, width=100_000), "'input.height'"),
    ("input of 1 x 10**9", lambda d: d["input"].update(height=1, width=10 ** 9), "'input.height'"),
    ("output of rank 3", _set_output_shape(["batch", 10, 4]), "'outputs'"),
    ("output of rank 1", _set_output_shape([10]), "'outputs'"),
    ("output declared int", lambda d: d["outputs"][0].__setitem__("dtype", "int64"), "'outputs'"),
    ("output named as no output of the file", lambda d: d["outputs"][0].__setitem__("name", "nosuch"),
     "'outputs[0].name'"),
    ("a task whose outputs differ (pose)", lambda d: d.__setitem__("task", "pose"), "'outputs'"),
    ("a task whose outputs differ (segment)", lambda d: d.__setitem__("task", "segment"), "'outputs'"),
    ("a task whose outputs differ (superres)", lambda d: d.__setitem__("task", "superres"), "'outputs'"),
    ("a task whose outputs differ (detect)", lambda d: d.__setitem__("task", "detect"), "'outputs'"),
    ("input name the file lacks", lambda d: d["input"].__setitem__("name", "nosuch"), "'input.name'"),
    ("1 channel for a 3-channel model", lambda d: d["input"].update(channels=1, mean=[0.5], std=[0.5]),
     "'input.channels'"),
    ("height other than the file's", lambda d: d["input"].update(height=32), "'input.height'"),
    ("width other than the file's", lambda d: d["input"].update(width=128), "'input.width'"),
    ("any size for a fixed-size model", lambda d: d["input"].update(height=None, width=None), "'input.height'"),
]


@pytest.mark.parametrize("name, mutate, field", MISFIT_CASES, ids=[c[0] for c in MISFIT_CASES])
def test_a_manifest_that_does_not_fit_its_model_is_refused_when_opened(name, mutate, field, model, image, tmp_path,
                                                                      capsys):
    target = _copy(model, tmp_path)
    _edit_manifest(target, mutate)
    with pytest.raises(ArtifactError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Predictor(target)
    before = tree_hashes(target)
    for argv in (["predict", str(target), str(image)], ["serve", str(target), "--port", "0"]):
        assert field in assert_refused(argv, capsys)
    assert tree_hashes(target) == before


#: The misfits a manifest shows by itself (``check_manifest``), without opening its model file.
SELF_EVIDENT = ["3 classes for 10 logits", "no classes", "input of 100000 x 100000", "output of rank 3",
                "output declared int", "a task whose outputs differ (detect)"]


@pytest.mark.parametrize("name, mutate, field", [c for c in MISFIT_CASES if c[0] in SELF_EVIDENT],
                         ids=SELF_EVIDENT)
def test_build_and_export_triton_refuse_a_manifest_that_does_not_fit_before_writing(name, mutate, field, model,
                                                                                   tmp_path, capsys):
    """``build`` and ``export-triton`` check the manifest first: exit 2 naming the field, no engine,
    no repository, the directory unchanged."""
    target = _copy(model, tmp_path)
    _edit_manifest(target, mutate)
    before = tree_hashes(target)
    repo = tmp_path / "repo"
    for argv in (["build", str(target)], ["export-triton", str(target), "--repo", str(repo)]):
        assert field in assert_refused(argv, capsys)
    assert tree_hashes(target) == before and not repo.exists()


# file-system oddities where a model file belongs --------------------------------------------------
def _make_odd(path: Path, kind: str) -> None:
    """Put a ``kind`` thing at ``path`` (which must not exist)."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink loop":
        path.symlink_to(path.name)
    elif kind == "broken link":
        path.symlink_to(path.with_name("nowhere"))
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()


ODD_KINDS = ["fifo", "symlink loop", "broken link", "directory", "socket"]
#: What :func:`file_problem` says of each.
ODD_WORDS = {"fifo": "named pipe", "symlink loop": "symbolic-link loop", "broken link": "broken symbolic link",
             "directory": "directory", "socket": "socket"}


@pytest.mark.parametrize("kind", ODD_KINDS)
def test_file_problem_names_what_is_there_without_opening_it(kind, tmp_path):
    path = tmp_path / "model.onnx"
    _make_odd(path, kind)
    assert ODD_WORDS[kind] in file_problem(path)
    (tmp_path / "real.onnx").write_bytes(b"x")
    assert file_problem(tmp_path / "real.onnx") is None
    assert file_problem(tmp_path / "missing.onnx") == "does not exist"


MODEL_DIR_COMMANDS = {
    "predict": lambda root, image: ["predict", str(root), str(image)],
    "bench": lambda root, image: ["bench", str(root), "--seconds", "0.01", "--batch-sizes", "1",
                                  "--backends", "onnxruntime"],
    "build": lambda root, image: ["build", str(root), "--flavour", "tensorrt_rtx"],
    "export-triton": lambda root, image: ["export-triton", str(root), "--repo", str(root.parent / "repo")],
    "serve": lambda root, image: ["serve", str(root), "--port", "0"],
}


@pytest.mark.parametrize("command", MODEL_DIR_COMMANDS)
@pytest.mark.parametrize("kind", ODD_KINDS)
def test_an_odd_file_in_place_of_the_onnx_is_one_error_in_every_command(kind, command, model, image, tmp_path,
                                                                       capsys):
    target = _copy(model, tmp_path)
    (target / "model.onnx").unlink()
    _make_odd(target / "model.onnx", kind)
    before = tree_hashes(target)
    line = assert_refused(MODEL_DIR_COMMANDS[command](target, image), capsys)
    assert "model.onnx" in line or "TensorRT-RTX" in line, line
    assert tree_hashes(target) == before and not (target / ".visionrt-journal").exists()


@pytest.mark.parametrize("kind", ["fifo", "symlink loop", "directory"])
def test_an_odd_file_in_place_of_the_weights_stops_export(kind, model, tiny_data, tmp_path, capsys):
    target = _copy(model, tmp_path)
    (target / "weights.safetensors").unlink()
    _make_odd(target / "weights.safetensors", kind)
    before = tree_hashes(target)
    line = assert_refused(["export", str(target), "--samples", "2", "--data", str(tiny_data)], capsys)
    assert "weights.safetensors" in line and ODD_WORDS[kind] in line
    assert tree_hashes(target) == before and not (target / ".visionrt-journal").exists()


#: ``(case, change to the model directory, words the export error must hold)``: weights and model
#: description that do not go together (the manifest's sha256 kept right, so only the content is wrong).
WEIGHTS_CASES = [
    ("weights not safetensors", lambda root: _replace_file(root, "weights.safetensors", b"junk weights"),
     "not a safetensors weights file"),
    ("weights truncated", lambda root: _replace_file(root, "weights.safetensors",
                                                     (root / "weights.safetensors").read_bytes()[:200]),
     "not a safetensors weights file"),
    ("weights of a wider model", lambda root: _edit_manifest(root, lambda d: d["model"]["kwargs"].update(
        widths=[8, 16, 32])), "weights of another model"),
    ("unknown architecture", lambda root: _edit_manifest(root, lambda d: d["model"].update(arch="nosuch")),
     "manifest 'model'"),
    ("a keyword the architecture lacks", lambda root: _edit_manifest(root, lambda d: d["model"]["kwargs"].update(
        nosuch=1)), "manifest 'model'"),
    ("kwargs of the wrong type", lambda root: _edit_manifest(root, lambda d: d["model"]["kwargs"].update(
        widths=-1)), "manifest 'model'"),
]


@pytest.mark.parametrize("name, change, words", WEIGHTS_CASES, ids=[c[0] for c in WEIGHTS_CASES])
def test_weights_that_do_not_fit_the_manifest_stop_export(name, change, words, model, tiny_data, tmp_path, capsys):
    target = _copy(model, tmp_path)
    change(target)
    before = tree_hashes(target)
    line = assert_refused(["export", str(target), "--samples", "2", "--data", str(tiny_data)], capsys)
    assert words in line
    assert tree_hashes(target) == before


BARE_ONNX_COMMANDS = {
    "bench": lambda path, out: ["bench", str(path), "--seconds", "0.01", "--batch-sizes", "1"],
    "build": lambda path, out: ["build", str(path), "--flavour", "tensorrt_rtx", "--out", str(out / "x.engine")],
    "import": lambda path, out: ["import", str(path), "--task", "classify", "--out", str(out / "imported")],
}


@pytest.mark.parametrize("command", BARE_ONNX_COMMANDS)
@pytest.mark.parametrize("kind", ODD_KINDS)
def test_an_odd_file_given_as_the_onnx_is_one_error(kind, command, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    _make_odd(path, kind)
    line = assert_refused(BARE_ONNX_COMMANDS[command](path, tmp_path), capsys)
    assert "model.onnx" in line or "TensorRT-RTX" in line, line
    assert not (tmp_path / "imported").exists()


# not an ONNX where one is expected ------------------------------------------------------------------
NOT_ONNX = {
    "text": b"not an onnx model\n",
    "empty": b"",
    "json": b'{"graph": {}}',
    "png header": b"\x89PNG\r\n\x1a\n" + b"\0" * 64,
    "random bytes": bytes(range(256)) * 8,
}


def _truncated(model: Path) -> bytes:
    data = (model / "model.onnx").read_bytes()
    return data[: len(data) // 3]


@pytest.mark.parametrize("command", BARE_ONNX_COMMANDS)
@pytest.mark.parametrize("what", [*NOT_ONNX, "truncated onnx"])
def test_a_file_that_is_not_onnx_is_one_error_in_every_command_that_parses_one(what, command, model, tmp_path,
                                                                              capsys):
    path = tmp_path / "model.onnx"
    path.write_bytes(_truncated(model) if what == "truncated onnx" else NOT_ONNX[what])
    line = assert_refused(BARE_ONNX_COMMANDS[command](path, tmp_path), capsys)
    assert "model.onnx" in line or "TensorRT-RTX" in line, line
    assert not (tmp_path / "imported").exists()


@pytest.mark.parametrize("command", MODEL_DIR_COMMANDS)
@pytest.mark.parametrize("what", ["text", "truncated onnx"])
def test_a_model_directory_whose_onnx_is_not_onnx_is_one_error(what, command, model, image, tmp_path, capsys):
    """The manifest's sha256 matches (so only the content is wrong): each command that reads the
    ONNX says it cannot; none ends as an internal error."""
    target = _copy(model, tmp_path)
    _replace_file(target, "model.onnx", _truncated(model) if what == "truncated onnx" else NOT_ONNX[what])
    before = tree_hashes(target)
    argv = MODEL_DIR_COMMANDS[command](target, image)
    if command == "export-triton":  # copies the file as it is: nothing parses it here
        code, _, err = run_main(argv, capsys)
        assert code in (0, 2) and "internal error" not in err, err
    else:
        assert "model.onnx" in assert_refused(argv, capsys) or command == "build"
    assert tree_hashes(target) == before


# doctor never fails --------------------------------------------------------------------------------
def _raise(error: Exception):
    def broken(*args, **kwargs):
        raise error
    return broken


BROKEN_PARTS = {
    "tensorrt_env.report": (doctor.tensorrt_env, "report",
                            OSError("libnvinfer.so.10: undefined symbol: _ZN8nvinfer1")),
    "plugins": (doctor, "_plugins", ImportError("cannot import name 'nvrtc' from 'cuda.bindings'")),
    "onnxruntime row": (doctor, "_onnxruntime_row",
                        AttributeError("module 'onnxruntime' has no attribute '__version__'")),
    "torch row": (doctor, "_torch_row", RuntimeError("torch/_C.so: undefined symbol: cudaGetDriverEntryPoint")),
    "tasks": (doctor, "task_support", ValueError("a broken task module")),
}


@pytest.mark.parametrize("part", BROKEN_PARTS)
def test_doctor_reports_a_broken_part_in_its_row_and_prints_the_rest(part, monkeypatch, capsys):
    owner, attr, error = BROKEN_PARTS[part]
    monkeypatch.setattr(owner, attr, _raise(error))
    code, out, err = run_main(["doctor"], capsys)
    assert code == 0, err
    assert f"broken ({type(error).__name__}: {error}" in out
    for heading in ("GPU:", "backends:", "tasks (architecture"):
        assert heading in out
    assert out.count("broken (") >= 1 and "internal error" not in err
    code, out, err = run_main(["doctor", "--json"], capsys)
    assert code == 0 and "broken" in out and json.loads(out)["python"]


@pytest.mark.parametrize("error", ["raise ImportError('libfoo.so: cannot open shared object file')",
                                   "raise OSError('libnvinfer.so.10: undefined symbol: createInferBuilder')",
                                   "raise RuntimeError('initialisation failed')", "1 / 0"])
def test_doctor_survives_a_broken_tensorrt_package_installed_for_real(error, tmp_path):
    """A ``tensorrt`` (and ``tensorrt_rtx``) package on the path that fails on import, in a fresh
    interpreter as a user runs it: doctor exits 0 and still lists onnxruntime and the tasks."""
    for name in ("tensorrt", "tensorrt_rtx"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(error + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "visionrt.runtime.cli", "doctor"], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "broken" in result.stdout and "onnxruntime" in result.stdout and "classify" in result.stdout
    assert "Traceback" not in result.stderr


# the success paths the refusals above are measured against ----------------------------------------
def test_import_through_the_cli_gives_a_model_that_predicts_like_the_original(model, image, tmp_path, capsys):
    """``visionrt import`` of the exported ONNX (no torch involved): exit 0, a model directory that
    opens, and predictions equal to the original's."""
    classes = tmp_path / "classes.txt"
    original = ModelDir.open(model).manifest
    classes.write_text("\n".join(original.classes) + "\n")
    spec = original.input
    out = tmp_path / "imported"
    code, _, err = run_main(["import", str(model / "model.onnx"), "--task", "classify", "--classes", str(classes),
                             "--image-size", f"{spec.height}x{spec.width}",
                             "--mean", ",".join(map(str, spec.mean)), "--std", ",".join(map(str, spec.std)),
                             "--out", str(out)], capsys)
    assert code == 0, err
    assert ModelDir.open(out).manifest.classes == original.classes
    results = []
    for root in (model, out):
        code, printed, err = run_main(["predict", str(root), str(image), "--json", "--top-k", "3"], capsys)
        assert code == 0, err
        results.append(json.loads(printed)[0]["top_k"])
    assert [row["label"] for row in results[0]] == [row["label"] for row in results[1]]
