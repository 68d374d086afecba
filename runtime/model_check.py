"""Does a manifest fit its model? Checked when a model is opened to run, not at the first image.

A manifest can be valid JSON and pass the schema (:func:`~visionrt.runtime.manifest.check_schema`)
yet not describe its model: a class list of the wrong length for the output (or an empty one where
the task names classes), an input size no machine can hold, outputs the task cannot read. Each is
an :class:`~visionrt.runtime.errors.ArtifactError` naming the manifest field:

* :func:`check_manifest` (:func:`check_model_dir` for a model directory; by every
  :class:`~visionrt.runtime.predictor.Predictor`: ``predict``, ``serve``, ``bench``, Triton's python
  models; and first thing by ``build`` and ``export-triton``): the
  manifest against itself and its task's output contract (:mod:`.contracts`): ``classes`` vs the
  output shapes it declares, ``input.height``/``width`` vs :data:`MAX_INPUT_BYTES`, ``outputs``
  (names, ranks, dtypes) vs what the task reads;
* :func:`check_runner` (by a :class:`~visionrt.runtime.predictor.Predictor` that opens its runner):
  the same contract against the inputs and outputs the model file really has, as its backend
  reports them, so a manifest edited (or written) for another model is refused before any image
  is read.
"""
from __future__ import annotations

from typing import Any, Sequence

from .backends.base import Runner, TensorSpec
from .contracts import ContractError, check_outputs, contract
from .errors import ArtifactError
from .manifest import MANIFEST_NAME, Manifest, ModelDir

#: Largest input tensor of one image the runtime accepts (bytes): ``channels × height × width ×
#: 4`` beyond it is a manifest error, not a model (16384 × 16384 RGB float32 is 3 GiB).
MAX_INPUT_BYTES = 1024 ** 3

_FIX = "re-run the stage that wrote the model directory (export / import), or repair that field"


def check_manifest(manifest: Manifest, source: str) -> None:
    """:class:`ArtifactError` naming the field where ``manifest`` does not fit its own task:
    ``classes`` empty where the task names classes, ``input`` absurdly large, ``outputs`` or
    ``classes`` not what the task's contract reads."""
    spec = manifest.input
    if spec.height and spec.width:
        size = spec.channels * spec.height * spec.width * 4
        if size > MAX_INPUT_BYTES:
            raise ArtifactError(f"{source}: 'input.height' x 'input.width' is {spec.height} x {spec.width}: "
                                f"{size / 1024 ** 3:.1f} GiB per image, more than the "
                                f"{MAX_INPUT_BYTES / 1024 ** 3:.0f} GiB the runtime accepts", fix=_FIX)
    if contract(manifest.task).classes and not manifest.classes:
        raise ArtifactError(f"{source}: 'classes' is empty: a {manifest.task} model lists "
                            f"{contract(manifest.task).classes}", fix=_FIX)
    _check_outputs(manifest, [TensorSpec(o.name, tuple(_dim(d) for d in o.shape), o.dtype) for o in manifest.outputs],
                   source)


def check_model_dir(model_dir: ModelDir) -> None:
    """:func:`check_manifest` on ``model_dir``'s manifest, naming its file in the error."""
    check_manifest(model_dir.manifest, str(model_dir.root / MANIFEST_NAME))


def check_runner(manifest: Manifest, runner: Runner, source: str) -> None:
    """:class:`ArtifactError` naming the manifest field that does not fit the model file ``runner``
    runs: ``input.name``, ``input.channels``/``height``/``width`` (fixed sizes that differ),
    ``outputs[i].name`` (an output the file lacks), or outputs or ``classes`` against the task's
    contract with the file's real output shapes."""
    inputs = {spec.name: spec for spec in runner.inputs}
    spec = manifest.input
    if spec.name not in inputs:
        raise ArtifactError(f"{source}: 'input.name' is {spec.name!r}, and the model file's input is named "
                            f"{', '.join(map(repr, inputs)) or 'nothing'}", fix=_FIX)
    found = inputs[spec.name].shape
    fields = ["batch", "input.height", "input.width", "input.channels"] if spec.layout == "NHWC" else [
        "batch", "input.channels", "input.height", "input.width"]
    if len(found) == len(spec.shape):
        for field, declared, dim in zip(fields, spec.shape, found):
            if field == "batch":  # a runner takes any batch, also of a file that fixes it (in chunks)
                continue
            if _dim(dim) is not None and _dim(declared) != _dim(dim):
                raise ArtifactError(f"{source}: '{field}' is {declared if _dim(declared) else 'any size'}, and the "
                                    f"model file's input '{spec.name}' is {list(found)}", fix=_FIX)
    names = {o.name for o in runner.outputs}
    for i, output in enumerate(manifest.outputs):
        if output.name not in names:
            raise ArtifactError(f"{source}: 'outputs[{i}].name' is {output.name!r}, not an output of the model "
                                f"file (it has {', '.join(sorted(names)) or 'none'})", fix=_FIX)
    _check_outputs(manifest, runner.outputs, f"{source} (the model file's outputs)")


def _check_outputs(manifest: Manifest, found: Sequence[TensorSpec], source: str) -> None:
    try:
        check_outputs(manifest.task, found, manifest.classes, manifest.input.height, manifest.input.width, source)
    except ContractError as err:
        field = "classes" if ("number of classes" in str(err) or "joint names" in str(err)) else "outputs"
        raise ArtifactError(f"'{field}' does not fit the model: {str(err)[:600]}", fix=_FIX) from None


def _dim(value: Any) -> int | None:
    """A manifest shape entry as a dimension: an integer is fixed, a name (``batch``) is dynamic."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
