"""What another exporter's ONNX says about its input and outputs, for ``visionrt import``.

* Input: ``[N, 3, H, W]`` (NCHW) or ``[N, H, W, 3]`` (NHWC), read from which axis holds 3
  channels (``layout`` overrides), float32 or uint8; :func:`read_input` returns the NCHW float32
  view the task contract checks, and the manifest's ``layout``/``dtype``.
* Outputs: which output plays which role (``--output NAME=ROLE``), whether the graph already
  normalises its scores (the last op on the output's path: Softmax or Sigmoid -> ``probabilities``;
  ``outputs`` overrides), and the layout of a detector's or one-channel segmenter's outputs
  (:mod:`visionrt.runtime.output_adapters`).
"""
from __future__ import annotations

from typing import Any, Sequence

import onnx

from ..runtime.backends.base import TensorSpec
from ..runtime.contracts import ContractError
from ..runtime.manifest import DTYPES
from ..runtime.output_adapters import LAYOUTS
from ..runtime.tasks import TASKS, runtime_task

#: Ops that pass values through unchanged in meaning: the path to an output is followed past them.
PASS_THROUGH = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Transpose", "Slice", "Gather")
#: Last ops whose output is already a probability.
NORMALISING = ("Softmax", "Sigmoid")
#: Roles of the single output a task without an output layout reads.
SINGLE_ROLES = ("logits", "probabilities", "class_map")
OUTPUT_KINDS = ("logits", "probabilities")


def final_op(model: onnx.ModelProto, output: str) -> str | None:
    """The op type that computes ``output``, looking through :data:`PASS_THROUGH` ops (``None``:
    the output is an input or an initializer)."""
    producers = {name: node for node in model.graph.node for name in node.output}
    name, steps = output, 0
    while name in producers and steps < len(producers):
        node = producers[name]
        if node.op_type not in PASS_THROUGH:
            return node.op_type
        name, steps = node.input[0], steps + 1
    return None


def read_input(tensor: TensorSpec, layout: str | None, source: str) -> tuple[TensorSpec, dict[str, str]]:
    """The NCHW float32 view of an image input and its ``{"layout", "dtype"}``; :class:`ContractError`
    naming the input where it is no 4-D float32/uint8 tensor with 3 channels on axis 1 or 3."""
    shape = tuple(tensor.shape)
    what = f"{source} input '{tensor.name}' is [{', '.join(str(d) for d in shape)}] {tensor.dtype}"
    if tensor.dtype not in DTYPES:
        raise ContractError(f"{what}; visionrt feeds images as float32 or uint8 tensors",
                            fix="export the model with a float32 (or uint8) image input")
    if len(shape) != 4:
        raise ContractError(f"{what}; an image batch has 4 axes, [N, 3, H, W] or [N, H, W, 3]",
                            fix="export the model with one image batch input")
    if layout is None:
        channels = [axis for axis in (1, 3) if shape[axis] == 3]
        if len(channels) != 1:
            raise ContractError(f"{what}: cannot tell its layout ({'both axes 1 and 3 are' if channels else 'neither axis 1 nor 3 is'} 3)",
                                fix="pass --layout NCHW or --layout NHWC")
        layout = "NCHW" if channels == [1] else "NHWC"
    nchw = shape if layout == "NCHW" else (shape[0], shape[3], shape[1], shape[2])
    return TensorSpec(tensor.name, nchw, "float32"), {"layout": layout, "dtype": tensor.dtype}


def name_input_axes(model: onnx.ModelProto, layout: str) -> dict[str, str]:
    """Give the first input's dynamic axes distinct names where some share one (or have none):
    TensorRT takes axes of one name for one size, so ``[-1, 3, ?, ?]`` could never be 48 × 192.
    Changes ``model`` (only where the model holds all its weights: external data is not rewritten);
    returns ``{axis: new name}`` (empty: nothing changed)."""
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return {}
    dims = model.graph.input[0].type.tensor_type.shape.dim
    names = ("batch", "height", "width", "channels") if layout == "NHWC" else ("batch", "channels", "height", "width")
    dynamic = [i for i, d in enumerate(dims) if not (d.HasField("dim_value") and d.dim_value > 0)]
    params = [dims[i].dim_param for i in dynamic]
    if all(params) and len(set(params)) == len(params):
        return {}
    for i in dynamic:
        dims[i].dim_param = names[i]
    return {str(i): names[i] for i in dynamic}


def parse_roles(pairs: Sequence[tuple[str, str]], output_layout: str | None, outputs: Sequence[TensorSpec],
                source: str) -> dict[str, str]:
    """``{role: output name}`` from ``--output NAME=ROLE`` pairs, each checked: a known role of the
    layout (or of a single-output task) and an output the model has."""
    roles = LAYOUTS[output_layout] if output_layout else SINGLE_ROLES
    names = [o.name for o in outputs]
    chosen: dict[str, str] = {}
    for name, role in pairs:
        if name not in names:
            raise ContractError(f"--output {name}={role}: {source} has no output '{name}' (it has {', '.join(names)})",
                                fix="name one of its outputs")
        if role not in roles:
            raise ContractError(f"--output {name}={role}: '{role}' is not a role "
                                f"{f'of the {output_layout} layout' if output_layout else 'here'} (roles: {', '.join(roles)})",
                                fix=f"use one of {', '.join(roles)}")
        if role in chosen:
            raise ContractError(f"--output names two outputs ({chosen[role]}, {name}) for the role {role}",
                                fix="give each role once")
        chosen[role] = name
    return chosen


def read_outputs(task: str, model: onnx.ModelProto, outputs: Sequence[TensorSpec], classes: Sequence[str],
                 source: str, *, kind: str | None = None, output_layout: str | None = None,
                 roles: Sequence[tuple[str, str]] = ()) -> tuple[list[TensorSpec], dict[str, Any], str | None]:
    """``(outputs in the order the contract reads them, postprocess entries, the last op found)``.

    The postprocess entries: ``outputs`` (``logits``/``probabilities``), and where needed
    ``output_layout`` and ``output_roles``. What the task's spec says of imports
    (:class:`~visionrt.runtime.tasks.base.Imported`) decides the layouts accepted, the layout of a
    two-class model's single-channel output (a segmenter's: ``binary``) and what scores are
    where the last op does not say (a detector's: probabilities)."""
    imported = runtime_task(task).imported
    if output_layout and output_layout not in imported.output_layouts:
        takers = [t for t in TASKS if output_layout in runtime_task(t).imported.output_layouts]
        raise ContractError(f"--output-layout {output_layout} is a {' or '.join(takers)} layout; this is a {task} model",
                            fix=f"drop --output-layout, or import with --task {takers[0]}")
    chosen = parse_roles(roles, output_layout, outputs, source)
    ordered = list(outputs)
    if not output_layout and chosen:
        if len(chosen) > 1:
            raise ContractError(f"--output names {len(chosen)} roles ({', '.join(chosen)}); a {task} model "
                                "reads one output", fix="name the one output the task reads")
        (role, name), = chosen.items()
        ordered = sorted(outputs, key=lambda o: o.name != name)
        if role in OUTPUT_KINDS:
            kind = kind or role
    main = ordered[0]
    if (imported.one_channel_layout and not output_layout and len(main.shape) == 4 and main.shape[1] == 1
            and len(classes) == 2):
        output_layout = imported.one_channel_layout
    found = final_op(model, chosen.get(LAYOUTS[output_layout][-1], main.name) if output_layout else main.name)
    if kind is None:
        kind = "probabilities" if found in NORMALISING else imported.scores
    if output_layout == "binary" and kind != "probabilities":
        raise ContractError(f"{source} output '{main.name}' has one channel and its last op is {found}: "
                            "a binary segmenter's output must be a probability (Sigmoid)",
                            fix="pass --outputs probabilities if it is one")
    post: dict[str, Any] = {"outputs": kind}
    if output_layout:
        post["output_layout"] = output_layout
    if chosen and output_layout:
        post["output_roles"] = chosen
    return ordered, post, found

