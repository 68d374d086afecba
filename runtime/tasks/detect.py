"""Object detection in the runtime: model outputs -> per image a list of detections (box in
pixels of the original image, score, label name, and a mask for instance segmentation),
drawn onto the image; COCO mAP by pycocotools.

The model returns fixed-size detections (``num_detections [N, 1]``, ``boxes [N, K, 4]`` in
input pixels, ``scores [N, K]``, ``classes [N, K]``, optionally ``masks [N, K, M, M]``), made
by NMS in the graph (``postprocess["nms"] == "graph"``); or every candidate (``candidate_boxes
[N, A, 4]``, ``candidate_scores [N, A, C]``) and NMS runs here (``"runtime"``), the NumPy
reference of the same op (``visionrt.runtime.plugins.nms``), so both give the same detections.

Thresholds live in the manifest's ``postprocess``; :func:`postprocess` takes overrides:

* ``score_threshold`` (default ``postprocess["score_threshold"]``) keeps detections scoring
  strictly above it; with NMS in the graph it cannot go below ``nms_score_threshold``, the
  floor built into the graph (evaluation uses every detection above that floor, with either);
* ``max_detections`` keeps the best that many; with NMS in the graph at most the graph's ``K``;
* ``iou_threshold``: with NMS in the runtime any value in [0, 1]; with NMS in the graph it is
  built in (changing it means re-exporting, or the ``yolo_raw`` model).

Both filters after NMS are exact: raising the score threshold or lowering the count of a
greedy NMS only drops detections from the end of its output.

Images are fitted to the input size by the manifest's resize policy (stretch or letterbox,
:func:`~visionrt.runtime.preprocess.fit`) and boxes are mapped back through it. An image
without objects gives an empty list, not an error.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from ..datasets import compressed_rle, read_coco_split, uncompressed_rle
from ..errors import BackendUnavailable, InputError
from ..manifest import Manifest, OutputSpec
from ..plugins.nms.reference import efficient_nms
from ..preprocess import fit
from ..render import PALETTE, caption, draw_boxes, overlay
from .base import Architecture, Contract, Imported, Option, Options, RuntimeTask, Tensor, Variant
from .scores import box_iou

#: The fixed-size detections of a model with NMS in the graph (instance segmentation adds ``masks``).
DETECTIONS = (
    Tensor("num_detections", ("N", 1), "int", "detections per image; rows after it are padding"),
    Tensor("boxes", ("N", "K", 4), "float", "x1, y1, x2, y2 in input pixels (edges), best first"),
    Tensor("scores", ("N", "K"), "float", "detection scores, descending"),
    Tensor("classes", ("N", "K"), "int", "class index into `classes`"),
)
#: Every candidate of a model whose NMS runs in the runtime.
CANDIDATES = (
    Tensor("candidate_boxes", ("N", "A", 4), "float", "every candidate box, x1, y1, x2, y2 in input pixels"),
    Tensor("candidate_scores", ("N", "A", "C"), "float", "each candidate's score per class"),
)
#: Their names (the outputs a model with NMS in the graph returns; the runtime reads them by name).
DETECTION_OUTPUTS = tuple(t.name for t in DETECTIONS)
CANDIDATE_OUTPUTS = tuple(t.name for t in CANDIDATES)


def _output_specs(tensors: tuple[Tensor, ...], **sizes: int) -> list[OutputSpec]:
    """Manifest output specs of contract tensors, the symbols of ``sizes`` made numbers."""
    return [OutputSpec(t.name, ["batch", *(sizes.get(d, d) for d in t.shape[1:])], t.meaning,
                       "int32" if t.kind == "int" else "float32") for t in tensors]


def detection_outputs(mask_size: int | None = None) -> list[OutputSpec]:
    """Output specs of the fixed-size detections (with ``masks`` when ``mask_size`` is given)."""
    specs = _output_specs(DETECTIONS)
    if mask_size:
        specs.append(OutputSpec("masks", ["batch", "K", mask_size, mask_size],
                                "per detection, the probability of its class per cell of its box "
                                "(cell (u, v) covers x1 + [u, u+1) * (x2 - x1) / M, likewise y)"))
    return specs


def candidate_outputs(num_classes: int) -> list[OutputSpec]:
    """Output specs of a model whose NMS runs in the runtime."""
    return _output_specs(CANDIDATES, C=num_classes)


# options and thresholds -------------------------------------------------------------------
#: ``predict``'s options (``mask_threshold``: models with masks).
OPTIONS = Options((
    Option("score_threshold", float, "keep detections scoring above it", low=0, high=1),
    Option("iou_threshold", float, "NMS IoU threshold (models with NMS in the runtime)", low=0, high=1),
    Option("max_detections", int, "at most this many per image", low=1),
    Option("mask_threshold", float, "mask probability threshold (models with masks)", low=0, high=1, default=0.5),
))


@dataclasses.dataclass(frozen=True)
class Thresholds:
    score: float
    iou: float
    max_detections: int


def thresholds(manifest: Manifest, score_threshold: float, iou_threshold: float, max_detections: int) -> Thresholds:
    """The thresholds of one call (:data:`OPTIONS` resolved), checked against what this model's
    NMS allows (:class:`InputError` with the fix)."""
    p = manifest.postprocess
    t = Thresholds(score_threshold, iou_threshold, max_detections)
    if p["nms"] == "graph":
        if t.score < p["nms_score_threshold"]:
            raise InputError(f"score_threshold {t.score} is below {p['nms_score_threshold']}, the floor of this "
                             "model's NMS: lower-scoring detections never leave the graph",
                             fix=f"use a score_threshold >= {p['nms_score_threshold']}")
        if t.max_detections > p["max_detections"]:
            raise InputError(f"max_detections {t.max_detections} exceeds the {p['max_detections']} detections "
                             "this model's NMS returns per image",
                             fix=f"use max_detections <= {p['max_detections']}")
        if t.iou != p["iou_threshold"]:
            raise InputError(f"iou_threshold {t.iou} differs from {p['iou_threshold']}, which this model's NMS "
                             "has built in", fix="re-export with another postprocess.iou_threshold in the "
                                                 "manifest, or use a model with NMS in the runtime (yolo_raw)")
    return t


# results ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Detection:
    """One object: ``label`` (class name), its ``index``, ``score``, ``box`` (x1, y1, x2, y2) in pixels
    of the original image (edges, x right, y down) and, for instance segmentation, ``mask`` (bool ``[H, W]``)."""

    label: str
    index: int
    score: float
    box: tuple[float, float, float, float]
    mask: np.ndarray | None = None

    def to_dict(self) -> dict:
        out = {"label": self.label, "index": self.index, "score": self.score, "box": list(self.box)}
        if self.mask is not None:
            out["mask"] = uncompressed_rle(self.mask)
        return out


@dataclasses.dataclass
class Detections:
    """One image's detections, best first."""

    #: The list's key in :meth:`to_dict`, and the words for one and several in :meth:`summary`.
    WORDS: ClassVar[tuple[str, str, str]] = ("detections", "object", "objects")

    detections: list[Detection]

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self) -> Iterator[Detection]:
        return iter(self.detections)

    def __getitem__(self, i: int) -> Detection:
        return self.detections[i]

    def to_dict(self) -> dict:
        return {"count": len(self), self.WORDS[0]: [d.to_dict() for d in self.detections]}

    def summary(self) -> str:
        _, one, several = self.WORDS
        if not self.detections:
            return f"no {several}"
        return f"{len(self)} {one if len(self) == 1 else several}: " + ", ".join(map(self.tag, self.detections))

    @staticmethod
    def tag(d: Detection) -> str:
        """A detection's words beside its box and in the summary."""
        return f"{d.label} {d.score:.2f}"

    def draw(self, image: np.ndarray) -> np.ndarray:
        """The image (RGB uint8) with masks blended in, boxes with class and score, the summary beneath."""
        colours = [PALETTE[d.index % len(PALETTE)] for d in self.detections]
        if any(d.mask is not None for d in self.detections):
            labels = np.zeros(image.shape[:2], np.uint8)
            for i in reversed(range(len(self.detections))):  # the best on top
                if self.detections[i].mask is not None:
                    labels[self.detections[i].mask] = i + 1
            image = overlay(image, labels, np.array([(0, 0, 0), *colours], np.uint8), alpha=0.45)
        drawn = draw_boxes(image, [d.box for d in self.detections], [self.tag(d) for d in self.detections],
                           colours=colours or PALETTE)
        return caption(drawn, self.summary())


def paste_mask(probabilities: np.ndarray, box: np.ndarray, height: int, width: int,
               threshold: float = 0.5) -> np.ndarray:
    """An ``M × M`` box-relative mask -> bool ``[height, width]`` in the image: each pixel centre inside
    ``box`` (x1, y1, x2, y2 in these pixels) samples the mask bilinearly (cell centres at ``(u + 0.5)``
    of the box's ``M`` parts, the edge value beyond them) and is in the mask above ``threshold``."""
    out = np.zeros((height, width), bool)
    m = probabilities.shape[0]
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        return out
    cols = np.arange(max(int(np.floor(x1)), 0), min(int(np.ceil(x2)), width))
    rows = np.arange(max(int(np.floor(y1)), 0), min(int(np.ceil(y2)), height))
    if not len(cols) or not len(rows):
        return out

    def weights(centres, lo, hi):
        u = np.clip((centres + 0.5 - lo) / (hi - lo) * m - 0.5, 0, m - 1)
        first = np.minimum(np.floor(u).astype(int), m - 2) if m > 1 else np.zeros(len(u), int)
        return first, (u - first) if m > 1 else np.zeros(len(u))

    (c0, wx), (r0, wy) = weights(cols, x1, x2), weights(rows, y1, y2)
    p = probabilities.astype(np.float64)
    c1, r1 = np.minimum(c0 + 1, m - 1), np.minimum(r0 + 1, m - 1)
    top = p[r0][:, c0] * (1 - wx) + p[r0][:, c1] * wx
    bottom = p[r1][:, c0] * (1 - wx) + p[r1][:, c1] * wx
    inside_x = (cols + 0.5 >= x1) & (cols + 0.5 < x2)
    inside_y = (rows + 0.5 >= y1) & (rows + 0.5 < y2)
    value = top * (1 - wy)[:, None] + bottom * wy[:, None]
    out[np.ix_(rows, cols)] = (value > threshold) & inside_y[:, None] & inside_x[None, :]
    return out


# post-processing ------------------------------------------------------------------------------
def detections(outputs: dict[str, np.ndarray], manifest: Manifest, t: Thresholds) -> tuple[np.ndarray, ...]:
    """``(count [N], boxes [N, K, 4], scores [N, K], classes [N, K], masks [N, K, M, M] or None)`` in
    input pixels after NMS (here, when the model has none) and the thresholds ``t``."""
    p = manifest.postprocess
    if p["nms"] == "runtime":
        num, boxes, scores, classes = efficient_nms(outputs["candidate_boxes"], outputs["candidate_scores"],
                                                    t.score, t.iou, t.max_detections, p["pre_nms_top_k"])
        masks = None
    else:
        num, boxes, scores, classes = (outputs[name] for name in DETECTION_OUTPUTS)
        masks = outputs.get("masks")
    k = np.arange(scores.shape[1])[None]
    keep = (k < num.reshape(-1, 1)) & (k < t.max_detections) & (scores > np.float32(t.score))
    return keep.sum(axis=1), boxes, scores, classes, masks  # kept rows come first: scores descend


def postprocess(outputs: dict[str, np.ndarray], manifest: Manifest, image_sizes: list[tuple[int, int]],
                **options) -> list[Detections]:
    """One :class:`Detections` per image; ``image_sizes`` are the originals' ``(height, width)``.
    ``options`` (:data:`OPTIONS`) override the manifest's thresholds (see the module doc);
    ``mask_threshold`` binarises the pasted mask probabilities."""
    o = OPTIONS.resolve(manifest, options)
    t = thresholds(manifest, o["score_threshold"], o["iou_threshold"], o["max_detections"])
    mask_threshold = o["mask_threshold"]
    count, boxes, scores, classes, masks = detections(outputs, manifest, t)
    results = []
    for i, (height, width) in enumerate(image_sizes):
        n = int(count[i])  # every kept box mapped at once: [n, 4] original pixels
        kept = np.clip(fit(height, width, manifest.input).to_original(boxes[i, :n]), 0, [width, height, width, height])
        found = []
        for k, (c, score, box) in enumerate(zip(classes[i, :n].astype(int).tolist(), scores[i, :n].tolist(),
                                                 kept.tolist())):
            mask = None if masks is None else paste_mask(masks[i, k], kept[k], height, width, mask_threshold)
            found.append(Detection(manifest.classes[c], c, score, tuple(box), mask))
        results.append(Detections(found))
    return results


# held-out data and metrics ----------------------------------------------------------------------
def coco_targets(coco: dict) -> tuple[np.ndarray, list[str]]:
    """Per image of a COCO dict ``{"image": record, "annotations": [...]}`` (object array), with
    ``category_id`` renumbered to class index + 1; and the class names (categories in id order)."""
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    found: dict[int, list[dict]] = {image["id"]: [] for image in coco["images"]}
    for a in coco["annotations"]:
        found[a["image_id"]].append({**a, "category_id": index_of[a["category_id"]] + 1})
    targets = np.empty(len(coco["images"]), dtype=object)
    targets[:] = [{"image": image, "annotations": found[image["id"]]} for image in coco["images"]]
    return targets, [c["name"] for c in categories]


def heldout(data_dir: str | Path, count: int | None = None,
            manifest: Manifest | None = None) -> tuple[list[Path], np.ndarray]:
    """Test-split image paths and their targets (:func:`coco_targets`)."""
    split = read_coco_split(data_dir, "test", count)
    targets, _ = coco_targets(split.coco)
    return split.image_paths, targets


def coco_metrics(results: list[Detections], targets: np.ndarray, classes: list[str],
                 iou_types: tuple[str, ...] = ("bbox",)) -> dict[str, dict[str, float]]:
    """COCO ``map`` (@[.5:.95]), ``map50`` and ``map75`` per IoU type (``bbox``, ``segm``) by pycocotools."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:
        raise BackendUnavailable("COCO mAP needs pycocotools", fix="pip install pycocotools") from err
    images = [t["image"] for t in targets]
    annotations = [{**a, "id": n} for n, a in enumerate((a for t in targets for a in t["annotations"]), 1)]
    dets = []
    for image, result in zip(images, results):
        for d in result:
            x1, y1, x2, y2 = d.box
            det = {"image_id": image["id"], "category_id": d.index + 1, "score": d.score,
                   "bbox": [x1, y1, x2 - x1, y2 - y1]}
            if d.mask is not None:
                det["segmentation"] = compressed_rle(d.mask)
            dets.append(det)
    metrics = {}
    for iou_type in iou_types:
        if not dets or not annotations:
            metrics[iou_type] = {"map": 0.0, "map50": 0.0, "map75": 0.0}
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            truth = COCO()
            truth.dataset = {"images": images, "annotations": annotations,
                             "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)]}
            truth.createIndex()
            evaluation = COCOeval(truth, truth.loadRes(dets), iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        stats = [max(float(s), 0.0) for s in evaluation.stats[:3]]  # -1: no ground truth
        metrics[iou_type] = dict(zip(("map", "map50", "map75"), stats))
    return metrics


def evaluation_results(outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> list[Detections]:
    """Every detection above the NMS floor, in original pixels: what COCO mAP is computed on."""
    sizes = [(t["image"]["height"], t["image"]["width"]) for t in targets]
    return postprocess(outputs, manifest, sizes, score_threshold=manifest.postprocess["nms_score_threshold"])


def evaluate(outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> dict[str, float]:
    """Box ``map`` (COCO mAP@[.5:.95]), ``map50`` and ``map75`` against :func:`heldout` targets."""
    return coco_metrics(evaluation_results(outputs, targets, manifest), targets, manifest.classes)["bbox"]



# parity after post-processing ---------------------------------------------------------------
#: Parity: each backend's mAP within this of the reference's.
PARITY_TOLERANCE = 0.005
#: Parity: matched detections' scores within this of the reference's.
SCORE_TOLERANCE = 0.01
#: Parity: mean mask IoU of matched detections at least this.
MASK_IOU_TOLERANCE = 0.95
#: Detections of the two backends match when of one class and at least this IoU.
MATCH_IOU = 0.5


def match(reference: Detections, candidate: Detections) -> list[tuple[int, int]]:
    """One-to-one pairs ``(reference index, candidate index)``: best first, each reference detection takes
    the unmatched candidate of its class that overlaps it most, if that IoU >= :data:`MATCH_IOU`."""
    overlap = box_iou([d.box for d in reference], [d.box for d in candidate])
    taken, pairs = set(), []
    for i, d in enumerate(reference):
        options = [(overlap[i, j], j) for j, c in enumerate(candidate)
                   if j not in taken and c.index == d.index and overlap[i, j] >= MATCH_IOU]
        if options:
            taken.add(max(options)[1])
            pairs.append((i, max(options)[1]))
    return pairs


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], targets: np.ndarray,
            manifest: Manifest) -> dict[str, Any]:
    """Parity after post-processing: every detection above the NMS floor, in original pixels, matched
    between the backends per image (:func:`match`). Passes when every reference detection a prediction
    shows (above ``postprocess["score_threshold"]``) has a match and vice versa, matched scores differ
    by at most :data:`SCORE_TOLERANCE` and (with masks) their mean mask IoU is at least
    :data:`MASK_IOU_TOLERANCE`. The mAPs are compared beside it (:data:`PARITY_TOLERANCE`)."""
    shown = manifest.postprocess["score_threshold"]
    ref_results = evaluation_results(reference, targets, manifest)
    cand_results = evaluation_results(candidate, targets, manifest)
    counts = {"reference": 0, "candidate": 0, "matched": 0, "shown_unmatched": 0}
    score_diffs, box_ious, mask_ious, unmatched_scores = [], [], [], [0.0]
    for ref, cand in zip(ref_results, cand_results):
        pairs = match(ref, cand)
        counts["reference"] += len(ref)
        counts["candidate"] += len(cand)
        counts["matched"] += len(pairs)
        for i, j in pairs:
            score_diffs.append(abs(ref[i].score - cand[j].score))
            box_ious.append(box_iou([ref[i].box], [cand[j].box])[0, 0])
            if ref[i].mask is not None:
                union = np.logical_or(ref[i].mask, cand[j].mask).sum()
                mask_ious.append(np.logical_and(ref[i].mask, cand[j].mask).sum() / union if union else 1.0)
        for side, paired in ((ref, {i for i, _ in pairs}), (cand, {j for _, j in pairs})):
            lonely = [d.score for k, d in enumerate(side) if k not in paired]
            unmatched_scores += lonely
            counts["shown_unmatched"] += sum(score > shown for score in lonely)
    result = {**counts, "max_score_diff": float(max(score_diffs, default=0.0)),
              "min_box_iou": float(min(box_ious, default=1.0)),
              "max_unmatched_score": float(max(unmatched_scores))}
    if mask_ious:
        result["mean_mask_iou"] = float(np.mean(mask_ious))
    result["passed"] = bool(counts["shown_unmatched"] == 0 and result["max_score_diff"] <= SCORE_TOLERANCE
                            and result.get("mean_mask_iou", 1.0) >= MASK_IOU_TOLERANCE)
    return result


# the spec ---------------------------------------------------------------------------------------
#: Manifest parameters of NMS.
NMS_PARAMETERS = {"nms_score_threshold": "the floor of the scores the model returns (evaluation uses all above it)",
                  "iou_threshold": "the NMS IoU threshold", "max_detections": "detections kept per image",
                  "score_threshold": "predictions show detections scoring above it"}
#: The variant with NMS in the graph.
GRAPH_NMS = Variant("NMS in the graph", DETECTIONS, True, {"nms": "\"graph\"", **NMS_PARAMETERS})


def own_detections(outputs: dict[str, np.ndarray], manifest: Manifest) -> np.ndarray:
    """The model's own detections as :func:`heldout` targets (those of an imported model's reduced
    precisions, judged by their mAP against them): per image, what ``predict`` shows (above
    ``score_threshold``), in pixels of an image of the input's fixed size."""
    height, width = manifest.input.height, manifest.input.width
    count = len(next(iter(outputs.values())))
    targets = np.empty(count, dtype=object)
    targets[:] = [{"image": {"id": i, "height": height, "width": width},
                   "annotations": [{"image_id": i, "category_id": d.index + 1, "iscrowd": 0,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
                                   for d in result for x1, y1, x2, y2 in [d.box]]}
                  for i, result in enumerate(postprocess(outputs, manifest, [(height, width)] * count))]
    return targets


def import_defaults(variant: Variant, classes: list[str], bound: dict[str, int]) -> dict:
    """NMS parameters of an imported model: where its NMS runs, and the usual thresholds."""
    graph = "num_detections" in {t.name for t in variant.outputs}
    return {"nms": "graph" if graph else "runtime", "nms_score_threshold": 0.0 if graph else 0.001,
            "iou_threshold": 0.5, "max_detections": bound.get("K", 100), "pre_nms_top_k": 1000,
            "score_threshold": 0.25}


TASK = RuntimeTask(
    name="detect",
    architectures=(Architecture("yolo", ("EfficientNms",), default=True), Architecture("yolo_raw"),
                   Architecture("fasterrcnn", ("EfficientNms", "RoiPool2d")),
                   Architecture("ssd", ("EfficientNms",)), Architecture("ssd_raw")),
    contract=Contract("fixed", "the class names, in class-index order", (
        GRAPH_NMS,
        Variant("NMS in the runtime", CANDIDATES, True,
                {"nms": "\"runtime\"", **NMS_PARAMETERS, "pre_nms_top_k": "candidates NMS considers"})),
        import_defaults),
    options=OPTIONS, postprocess=postprocess, heldout=heldout, evaluate=evaluate, compare=compare,
    parity_tolerance=PARITY_TOLERANCE, precision_tolerance={"map50": (0.02, 0.0)},
    # other exporters' detectors: raw candidates (NMS here), scores that are probabilities; reduced
    # precisions judged by mAP against fp32's own detections
    imported=Imported(output_layouts=("yolov5", "yolov8", "ssd"), scores="probabilities", own_targets=own_detections),
)
