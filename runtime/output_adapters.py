"""Outputs as other exporters write them -> the task's output contract (:mod:`.contracts`).

An imported model's manifest may record, in ``postprocess``:

* ``output_layout``: how its raw outputs are laid out (:data:`LAYOUTS`), mapped here onto the
  contract the task's post-processing reads:

  - ``yolov5``: ``predictions [N, A, 5 + C]`` (cx, cy, w, h, objectness, class scores) ->
    ``candidate_boxes [N, A, 4]`` (x1, y1, x2, y2 in input pixels) and ``candidate_scores [N, A, C]``
    (objectness × class score), NMS in the runtime;
  - ``yolov8``: ``predictions [N, 4 + C, A]`` (cx, cy, w, h, class scores) -> the same;
  - ``ssd``: ``boxes [N, A, 4]`` and ``scores [N, A, 1 + C]`` whose column 0 is the background ->
    the same, the background column dropped;
  - ``binary``: a one-channel foreground probability ``[N, 1, h, w]`` (a Sigmoid segmenter) ->
    ``[N, 2, h, w]`` (background, foreground) probabilities.

  Detection boxes are read as ``box_format`` (``cxcywh`` for the YOLO layouts, else ``xyxy``;
  ``yxyx`` for TensorFlow's) in ``box_units`` (``pixels`` of the input, or ``normalised`` by its
  width and height).
* ``output_roles``: ``{role: output name}`` where the model has several outputs (the roles are
  the layout's, or ``logits``/``probabilities``/``classes`` for one-output layouts); outputs no
  role names are not read. Without it, outputs are taken in order.
* ``outputs``: ``"probabilities"`` where the graph already normalises its scores (Softmax,
  Sigmoid): nothing normalises them again; ``"logits"`` for a detector's raw class scores makes
  them probabilities here (sigmoid).

:class:`AdaptedRunner` applies this to any backend's runner, so the Predictor, the server,
parity and benchmarks all read the contract's outputs.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .backends.base import Runner, TensorSpec
from .errors import ArtifactError

#: Layout -> the roles of its raw outputs, in order.
LAYOUTS: dict[str, tuple[str, ...]] = {"yolov5": ("predictions",), "yolov8": ("predictions",),
                                       "ssd": ("boxes", "scores"), "binary": ("probabilities",)}
#: Box formats and units of the detection layouts.
BOX_FORMATS = ("xyxy", "yxyx", "cxcywh")
BOX_UNITS = ("pixels", "normalised")


def raw_names(postprocess: Mapping[str, Any], available: list[str]) -> dict[str, str]:
    """``{role: raw output name}`` of the recorded layout: the roles from ``output_roles`` where
    given, else the first outputs in order; :class:`ArtifactError` naming what is missing."""
    roles = LAYOUTS[postprocess["output_layout"]]
    named = postprocess.get("output_roles", {})
    if not named:
        if len(available) < len(roles):
            raise ArtifactError(f"the {postprocess['output_layout']} layout reads {len(roles)} outputs "
                                f"({', '.join(roles)}); the model has {len(available)} ({', '.join(available)})",
                                fix="pass --output NAME=ROLE for each")
        return dict(zip(roles, available))
    missing = [r for r in roles if r not in named]
    if missing:
        raise ArtifactError(f"the {postprocess['output_layout']} layout needs output role(s) {', '.join(missing)}",
                            fix=f"pass --output NAME={missing[0]} (the model's outputs: {', '.join(available)})")
    absent = [named[r] for r in roles if named[r] not in available]
    if absent:
        raise ArtifactError(f"output {absent[0]!r} is not an output of the model (it has {', '.join(available)})",
                            fix="name one of its outputs in --output NAME=ROLE")
    return {r: named[r] for r in roles}


def adapt(outputs: Mapping[str, np.ndarray], postprocess: Mapping[str, Any], height: int | None,
          width: int | None) -> dict[str, np.ndarray]:
    """The raw outputs of a batch -> the contract's (outputs no layout reads pass through);
    ``height``/``width``: the input's size in pixels (normalised boxes are scaled by it)."""
    layout = postprocess.get("output_layout")
    if layout is None:
        return dict(outputs)
    names = raw_names(postprocess, list(outputs))
    rest = {k: v for k, v in outputs.items() if k not in names.values()}
    raw = {role: np.asarray(outputs[name]) for role, name in names.items()}
    if layout == "binary":
        p = raw["probabilities"].astype(np.float32)
        if p.ndim != 4 or p.shape[1] != 1:
            raise ArtifactError(f"output {names['probabilities']!r} is {list(p.shape)}; the binary layout "
                                "reads one foreground channel [N, 1, h, w]")
        return {**rest, names["probabilities"]: np.concatenate([1 - p, p], axis=1)}
    boxes, scores = _split(layout, raw, names)
    if postprocess.get("outputs") == "logits":
        scores = 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))
    return {**rest, "candidate_boxes": to_xyxy(boxes, postprocess.get("box_format", default_box_format(layout)),
                                               postprocess.get("box_units", "pixels"), height, width),
            "candidate_scores": np.ascontiguousarray(scores, np.float32)}


def default_box_format(layout: str) -> str:
    return "cxcywh" if layout in ("yolov5", "yolov8") else "xyxy"


def _split(layout: str, raw: dict[str, np.ndarray], names: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[N, A, 4]`` and class scores ``[N, A, C]`` of a detection layout."""
    if layout == "ssd":
        boxes, scores = raw["boxes"], raw["scores"]
        if boxes.ndim != 3 or boxes.shape[2] != 4:
            raise ArtifactError(f"output {names['boxes']!r} is {list(boxes.shape)}; the ssd layout reads boxes [N, A, 4]")
        if scores.shape[:2] != boxes.shape[:2] or scores.ndim != 3 or scores.shape[2] < 2:
            raise ArtifactError(f"output {names['scores']!r} is {list(scores.shape)}; the ssd layout reads scores "
                                f"[N, {boxes.shape[1]}, 1 + C] (column 0 the background)")
        return boxes, scores[..., 1:]
    p = raw["predictions"]
    head = 5 if layout == "yolov5" else 4
    if p.ndim != 3 or (p.shape[2] if layout == "yolov5" else p.shape[1]) <= head:
        expected = "[N, A, 5 + C]" if layout == "yolov5" else "[N, 4 + C, A]"
        raise ArtifactError(f"output {names['predictions']!r} is {list(p.shape)}; the {layout} layout reads {expected}")
    if layout == "yolov8":
        p = p.transpose(0, 2, 1)
        return p[..., :4], p[..., 4:]
    return p[..., :4], p[..., 4:5] * p[..., 5:]


def to_xyxy(boxes: np.ndarray, box_format: str, units: str, height: int | None, width: int | None) -> np.ndarray:
    """Boxes ``[..., 4]`` in ``box_format`` and ``units`` -> x1, y1, x2, y2 in input pixels (float32)."""
    b = boxes.astype(np.float32)
    if box_format == "yxyx":
        b = b[..., [1, 0, 3, 2]]
    elif box_format == "cxcywh":
        half = b[..., 2:] / 2
        b = np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1)
    if units == "normalised":
        b = b * np.asarray([width, height, width, height], np.float32)
    return np.ascontiguousarray(b)


class AdaptedRunner(Runner):
    """A runner whose outputs are :func:`adapt`-ed (same name, inputs and timing as the one it wraps);
    ``height``/``width`` ``None`` (a model of several input sizes): each batch's, read from its feed
    in ``layout`` (NCHW or NHWC)."""

    def __init__(self, runner: Runner, postprocess: Mapping[str, Any], height: int | None, width: int | None,
                 layout: str = "NCHW"):
        super().__init__()
        self.runner, self.post, self.height, self.width = runner, dict(postprocess), height, width
        self.layout = layout
        self.name = runner.name

    def _activate(self) -> None:
        self.runner.activate()

    def _deactivate(self) -> None:
        self.runner.deactivate()

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.runner.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        """The adapted outputs (their shapes as far as the raw ones say: where a raw axis the layout
        reads is dynamic, every axis of the adapted outputs is ``None``)."""
        found = self.runner.outputs
        raw = {o.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in o.shape], np.float32) for o in found}
        try:
            values = adapt(raw, self.post, self.height or 1, self.width or 1)
        except ArtifactError:  # e.g. [N, A, ?]: its sizes are known after a run only
            read = raw_names(self.post, list(raw)).values()
            binary = self.post["output_layout"] == "binary"
            made = list(read) if binary else ["candidate_boxes", "candidate_scores"]
            return [*(o for o in found if o.name not in read),
                    *(TensorSpec(name, (None,) * (4 if binary else 3), "float32") for name in made)]
        return [TensorSpec(name, value.shape, value.dtype.name) for name, value in values.items()]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        height, width = self.height, self.width
        if height is None:
            shape = next(iter(feed.values())).shape
            height, width = shape[1:3] if self.layout == "NHWC" else shape[2:4]
        return adapt(self.runner.infer(feed), self.post, height, width)

    def __getattr__(self, name: str) -> Any:  # backend facts (providers, engine, chosen_because, ...)
        if name == "runner":
            raise AttributeError(name)
        return getattr(self.runner, name)


def adapted(runner: Runner, postprocess: Mapping[str, Any], height: int | None, width: int | None,
            layout: str = "NCHW") -> Runner:
    """``runner`` itself, or wrapped in :class:`AdaptedRunner` where ``postprocess`` records a layout."""
    return AdaptedRunner(runner, postprocess, height, width, layout) if postprocess.get("output_layout") else runner
