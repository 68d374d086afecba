"""The output contract of each task: what a model must return for the runtime to read it.

Each task declares its contract in its spec (``runtime/tasks/<task>.py``: ``TASK.contract``, a
:class:`~visionrt.runtime.tasks.base.Contract`): output names, shapes, dtypes and meaning, the
input it takes, what ``classes`` names and the post-processing parameters the manifest must
hold. This module checks a model against it: ``visionrt import`` (an ONNX file) and
``export_module`` (an ``nn.Module``) use :func:`check_outputs`, and the README's "your own model"
table is :func:`markdown_table` of it.

Shape symbols: ``N`` batch; ``C`` the number of ``classes``; ``J`` the number of joints (the
``classes`` of a pose model); ``H``, ``W`` the model input's height and width; ``K`` detections
per image (fixed: padding rows after ``num_detections``); ``A`` candidate boxes; ``M`` the mask
(or heatmap) side; ``P`` the joints of a keypoint model (its ``postprocess["joints"]``); ``h``,
``w`` any size (scaled back to the image); ``sH``, ``sW`` the input's height and
width times the model's ``scale``. Integers are exact.
"""
from __future__ import annotations

from typing import Any, Sequence

from .backends.base import TensorSpec
from .errors import ArtifactError
from .manifest import OutputSpec
from .tasks import TASKS, runtime_task
from .tasks.base import Contract, Tensor, Variant


class ContractError(ArtifactError):
    """A model whose inputs or outputs do not meet its task's contract."""


#: Each task's contract, from its spec.
CONTRACTS: dict[str, Contract] = {task: runtime_task(task).contract for task in TASKS}


def contract(task: str) -> Contract:
    if task not in CONTRACTS:
        raise ContractError(f"no output contract for task '{task}'", fix=f"choose one of {', '.join(CONTRACTS)}")
    return CONTRACTS[task]


def check_input(task: str, found: Sequence[TensorSpec], image_size: tuple[int, int] | None,
                source: str) -> tuple[str, int | None, int | None]:
    """The input's ``(name, height, width)`` for the manifest (``None``: any size), checked: one
    ``[N, 3, H, W]`` float32 input; ``image_size`` (H, W) fixes dynamic sides and must match fixed ones."""
    c = contract(task)
    if len(found) != 1:
        raise ContractError(f"{source} has {len(found)} inputs ({', '.join(f.name for f in found)}); a "
                            f"{task} model takes one image batch [N, 3, H, W]",
                            fix="export the model with a single image input")
    (tensor,) = found
    shape = tuple(tensor.shape)
    if len(shape) != 4 or _fixed(shape[1]) not in (3, None) or tensor.dtype != "float32":
        raise ContractError(f"{source} input '{tensor.name}' is {_shape_text(shape)} {tensor.dtype}; a {task} model "
                            "takes [N, 3, H, W] float32 (RGB)", fix="export the model with an RGB float32 input")
    sides = [_fixed(shape[2]), _fixed(shape[3])]
    if c.image_size == "any":
        if any(side is not None for side in sides) or image_size:
            raise ContractError(f"{source}: a {task} model takes images of any size, so its input's height and "
                                f"width must be dynamic (it is {_shape_text(shape)})",
                                fix="export with dynamic height and width axes, and give no image size")
        return tensor.name, None, None
    if image_size:
        for axis, (side, given) in enumerate(zip(sides, image_size), start=2):
            if side is not None and side != given:
                raise ContractError(f"{source} input '{tensor.name}' is {_shape_text(shape)}: axis {axis} is "
                                    f"{side}, not {given} as the image size says",
                                    fix=f"give the image size {sides[0]}x{sides[1]}, or none")
        return tensor.name, *image_size
    if None in sides:
        raise ContractError(f"{source} input '{tensor.name}' {_shape_text(shape)} has a dynamic height or width, "
                            f"and a {task} model resizes images to one fixed size",
                            fix="give the image size (--image-size HxW)")
    return tensor.name, sides[0], sides[1]


def check_outputs(task: str, found: Sequence[TensorSpec], classes: Sequence[str], height: int | None,
                  width: int | None, source: str, batch: int | None = None) -> tuple[Variant, list[OutputSpec], dict]:
    """Match a model's outputs to its task's contract: ``(variant, output specs for the manifest,
    bound shape symbols)``, or :class:`ContractError` naming each missing or mismatched output.

    By-name variants match outputs by name; the others by position (output ``i`` is the
    contract's output ``i``, names free). Outputs beyond the contract are listed as unused."""
    c = contract(task)
    problems = {}
    for variant in c.variants:
        try:
            return variant, *_match(variant, found, classes, height, width, batch)
        except ContractError as err:
            problems[variant.label] = str(err)
    expected = " or ".join(f"({', '.join(t.text() for t in v.outputs)})" for v in c.variants)
    detail = "; ".join(problems.values()) if len(problems) == 1 else "; ".join(
        f"as {label}: {text}" for label, text in problems.items())
    raise ContractError(f"{source} does not meet the {task} output contract: {detail}; expected {expected}",
                        fix="see the contract table in README.md (visionrt.runtime.contracts)")


def _match(variant: Variant, found: Sequence[TensorSpec], classes: Sequence[str], height: int | None,
           width: int | None, batch: int | None) -> tuple[list[OutputSpec], dict]:
    by_name = {f.name: f for f in found}
    if variant.by_name:
        missing = [t.name for t in variant.outputs if t.name not in by_name]
        if missing:
            raise ContractError(f"output{'s' * (len(missing) > 1)} {', '.join(missing)} missing "
                                f"(it has {', '.join(by_name) or 'none'})")
        pairs = [(t, by_name[t.name]) for t in variant.outputs]
    else:
        if len(found) < len(variant.outputs):
            raise ContractError(f"{len(found)} output{'s' * (len(found) != 1)}, {len(variant.outputs)} expected")
        pairs = list(zip(variant.outputs, found))
    bound: dict[str, int] = {"C": len(classes), "J": len(classes)}
    bound.update({k: v for k, v in (("N", batch), ("H", height), ("W", width)) if v is not None})
    for expected, tensor in pairs:
        _check_tensor(expected, tensor, bound)
    used = {tensor.name for _, tensor in pairs}
    specs = [OutputSpec(tensor.name, _manifest_shape(expected.shape, bound), expected.meaning, tensor.dtype)
             for expected, tensor in pairs]
    specs += [OutputSpec(f.name, [d if isinstance(d, int) else "?" for d in f.shape], "not read by the runtime",
                         f.dtype) for f in found if f.name not in used]
    return specs, bound


def _check_tensor(expected: Tensor, tensor: TensorSpec, bound: dict[str, int]) -> None:
    shape = tuple(tensor.shape)
    what = f"output '{tensor.name}' {_shape_text(shape)} {tensor.dtype}"
    if len(shape) != len(expected.shape):
        raise ContractError(f"{what} has rank {len(shape)}, not {len(expected.shape)}")
    kind = "int" if tensor.dtype.startswith(("int", "uint")) else "float" if tensor.dtype.startswith(
        ("float", "bfloat")) else tensor.dtype
    if kind != expected.kind:
        raise ContractError(f"{what} is {kind}, not {expected.kind}")
    for axis, (symbol, dim) in enumerate(zip(expected.shape, shape)):
        dim = _fixed(dim)
        if dim is None or symbol in ("h", "w"):
            continue
        if symbol in ("sH", "sW"):
            side = bound.get(symbol[1])
            if side is None:
                continue
            if dim % side:
                raise ContractError(f"{what}: axis {axis} is {dim}, not a multiple of the input's {side}")
            symbol, dim = "s", dim // side
        want = symbol if isinstance(symbol, int) else bound.setdefault(symbol, dim)
        if dim != want:
            name = {"C": "the number of classes", "J": "the number of joint names", "N": "the batch"}.get(
                symbol, f"{symbol} elsewhere" if isinstance(symbol, str) else str(symbol))
            raise ContractError(f"{what}: axis {axis} is {dim}, not {want} ({name})")


def _manifest_shape(symbols: tuple[str | int, ...], bound: dict[str, int]) -> list[Any]:
    """The manifest's symbolic shape: sizes of the classes, detections, masks as numbers; batch and
    image sides as names (the input spec holds the sides)."""
    names = {"N": "batch", "H": "height", "W": "width", "h": "height", "w": "width", "sH": "out_height",
             "sW": "out_width"}
    return [s if isinstance(s, int) else names.get(s) or bound.get(s, s) for s in symbols]


def _fixed(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _shape_text(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if _fixed(d) else str(d or "?") for d in shape) + "]"


def default_postprocess(task: str, variant: Variant, classes: Sequence[str], bound: dict[str, int]) -> dict[str, Any]:
    """Post-processing parameters for a model the contract checked, where a default makes sense
    (the contract's ``defaults``); the caller's values override them. Keys without a default are
    left out (:func:`check_postprocess`)."""
    defaults = contract(task).defaults(variant, list(classes), bound)
    return {k: v for k, v in defaults.items() if v is not None}


def check_postprocess(task: str, variant: Variant, postprocess: dict[str, Any], source: str) -> None:
    """:class:`ContractError` naming the post-processing parameters the variant needs and lacks."""
    missing = [key for key in variant.postprocess if key not in postprocess]
    if missing:
        raise ContractError(f"{source}: a {task} model ({variant.label}) needs post-processing parameter"
                            f"{'s' * (len(missing) > 1)} {', '.join(f'{k} ({variant.postprocess[k]})' for k in missing)}",
                            fix="pass them with --postprocess KEY=VALUE (Python: postprocess={...})")


def markdown_table() -> str:
    """The contracts as a Markdown table (the README's "your own model" section)."""
    rows = ["| task | input | outputs (by name / by position) | `classes` | post-processing parameters |",
            "|---|---|---|---|---|"]
    for task, c in CONTRACTS.items():
        for v in c.variants:
            outputs = "<br>".join(f"`{t.text()}`: {t.meaning}" for t in v.outputs)
            size = "[N, 3, H, W], fixed H, W" if c.image_size == "fixed" else "[N, 3, H, W], any H, W"
            rows.append(f"| {task} ({v.label}) | {size} | {'by name' if v.by_name else 'by position'}:<br>"
                        f"{outputs} | {c.classes or '-'} | {', '.join(f'`{k}`' for k in v.postprocess) or '-'} |")
    return "\n".join(rows)
