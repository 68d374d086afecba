"""Keypoints (pose per detected person) in the runtime: Keypoint R-CNN's detections plus per-joint
heatmaps -> per person a box, score and named joints with scores, in pixels of the original image;
COCO keypoint AP (OKS) and box AP by pycocotools.

The model returns detection's fixed-size outputs (:mod:`.detect`, NMS in the graph) and
``heatmaps [N, K, P, M, M]``: per detection and joint, probabilities over the ``M × M`` cells of
its box (cell ``(u, v)`` covers ``x1 + [u, u + 1) * (x2 - x1) / M``, likewise y). A joint is the
centre of its heatmap's arg-max cell (:func:`decode_heatmaps`), its score that cell's probability.
The joint names and the skeleton (pairs of joint indices) are ``manifest.postprocess`` ``joints``
and ``skeleton``; the OKS sigmas per joint ``oks_sigmas`` (:func:`oks_sigmas`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np

from ..errors import BackendUnavailable
from ..manifest import Manifest
from ..preprocess import fit
from ..render import PALETTE, caption, draw_boxes, draw_skeleton
from .base import Architecture, Contract, Imported, Options, Tensor, Variant
from .detect import GRAPH_NMS, OPTIONS as DETECT_OPTIONS, TASK as DETECT, Detection, Detections, coco_metrics, \
    detections, import_defaults as detect_defaults, thresholds

#: ``predict``'s options: detection's thresholds (no masks here).
OPTIONS = Options(tuple(o for o in DETECT_OPTIONS.items if o.name != "mask_threshold"))

#: OKS sigmas per joint name: COCO's (Ronchi & Perona's per-joint annotation spread, as
#: ``pycocotools`` ships them) for COCO's 17 joints; CrowdPose's 0.079 (a shoulder's) for the built-in
#: figures' ``head`` (top) and ``neck``, which COCO lacks. The built-in joints are exact, so these
#: only set how near a prediction must be: for a 30 px tall figure, OKS 0.5 at a wrist is ~2 px.
SIGMAS = {"nose": 0.026, "left_eye": 0.025, "right_eye": 0.025, "left_ear": 0.035, "right_ear": 0.035,
          "left_shoulder": 0.079, "right_shoulder": 0.079, "left_elbow": 0.072, "right_elbow": 0.072,
          "left_wrist": 0.062, "right_wrist": 0.062, "left_hip": 0.107, "right_hip": 0.107,
          "left_knee": 0.087, "right_knee": 0.087, "left_ankle": 0.089, "right_ankle": 0.089,
          "head": 0.079, "neck": 0.079}
#: The sigma of a joint name neither list has: a shoulder's, as CrowdPose gives its extra joints.
DEFAULT_SIGMA = 0.079
#: Drawn joints scoring under this (their heatmap's peak probability) are drawn hollow.
SHOWN_JOINT = 0.1


def oks_sigmas(joints: list[str]) -> list[float]:
    """Per joint name its OKS sigma (:data:`SIGMAS`, else :data:`DEFAULT_SIGMA`)."""
    return [SIGMAS.get(name, DEFAULT_SIGMA) for name in joints]


def decode_heatmaps(heatmaps: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``heatmaps [K, P, M, M]`` of boxes ``[K, 4]`` (x1, y1, x2, y2) -> ``(xy [K, P, 2]`` the centres
    of the arg-max cells in the boxes' pixels, ``scores [K, P]`` their probabilities)."""
    k, p, m, _ = heatmaps.shape
    flat = heatmaps.reshape(k, p, m * m)
    best = flat.argmax(-1)
    v, u = np.divmod(best, m)
    boxes = np.asarray(boxes, np.float64).reshape(k, 1, 4)
    x = boxes[..., 0] + (u + 0.5) / m * (boxes[..., 2] - boxes[..., 0])
    y = boxes[..., 1] + (v + 0.5) / m * (boxes[..., 3] - boxes[..., 1])
    return np.stack([x, y], -1), np.take_along_axis(flat, best[..., None], -1)[..., 0].astype(np.float64)


@dataclasses.dataclass
class Person(Detection):
    """One detected person: a :class:`~.detect.Detection` with ``joints``: name -> ``(x, y, score)``
    in pixels of the original image."""

    joints: dict[str, tuple[float, float, float]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "joints": {name: list(j) for name, j in self.joints.items()}}


@dataclasses.dataclass
class People(Detections):
    """One image's people (``detections``, best first); ``skeleton`` the limbs as joint index pairs."""

    WORDS = ("people", "person", "people")

    skeleton: list[tuple[int, int]]

    @property
    def people(self) -> list[Person]:
        return self.detections

    @staticmethod
    def tag(p: Person) -> str:
        """A person's score (every one is a person)."""
        return f"{p.score:.2f}"

    def draw(self, image: np.ndarray) -> np.ndarray:
        """The image (RGB uint8) with each person's box and skeleton in its colour (joints scoring
        under :data:`SHOWN_JOINT` hollow), the summary beneath."""
        colours = [PALETTE[i % len(PALETTE)] for i in range(len(self))]
        drawn = draw_boxes(image, [p.box for p in self.people], [self.tag(p) for p in self.people],
                           colours=colours or PALETTE)
        if self.people:   # one call: drawing enlarges a small image, so every person is drawn at its scale
            joints = np.array([list(p.joints.values()) for p in self.people], np.float64)   # [n, P, 3]
            points = joints[..., :2].reshape(-1, 2) * (drawn.shape[1] / image.shape[1])
            p = joints.shape[1]
            edges = [(a + k * p, b + k * p) for k in range(len(self)) for a, b in self.skeleton]
            drawn = draw_skeleton(drawn, points, edges, [c for c in colours for _ in self.skeleton],
                                  visible=joints[..., 2].ravel() >= SHOWN_JOINT)
        return caption(drawn, self.summary())


def postprocess(outputs: dict[str, np.ndarray], manifest: Manifest, image_sizes: list[tuple[int, int]],
                **options) -> list[People]:
    """One :class:`People` per image; ``image_sizes`` are the originals' ``(height, width)``; ``options``
    (:data:`OPTIONS`) override the manifest's thresholds as detection's do."""
    o = OPTIONS.resolve(manifest, options)
    t = thresholds(manifest, o["score_threshold"], o["iou_threshold"], o["max_detections"])
    count, boxes, scores, classes, _ = detections(outputs, manifest, t)
    names, skeleton = manifest.postprocess["joints"], [tuple(e) for e in manifest.postprocess["skeleton"]]
    results = []
    for i, (height, width) in enumerate(image_sizes):
        n = int(count[i])
        geometry = fit(height, width, manifest.input)
        xy, joint_scores = decode_heatmaps(outputs["heatmaps"][i, :n], boxes[i, :n])
        xy = geometry.to_original(xy)
        kept = np.clip(geometry.to_original(boxes[i, :n]), 0, [width, height, width, height])
        found = []
        for k in range(n):
            c = int(classes[i, k])
            joints = {name: (float(x), float(y), float(s)) for name, (x, y), s in zip(names, xy[k], joint_scores[k])}
            found.append(Person(manifest.classes[c], c, float(scores[i, k]), tuple(kept[k].tolist()), joints=joints))
        results.append(People(found, skeleton))
    return results


def keypoint_metrics(results: list[People], targets: np.ndarray, sigmas: list[float]) -> dict[str, float]:
    """COCO keypoint ``ap`` (OKS @[.5:.95]) and ``ap50`` by pycocotools (``iouType="keypoints"``,
    ``params.kpt_oks_sigmas = sigmas``); a person's score is its box's."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:
        raise BackendUnavailable("COCO keypoint AP needs pycocotools", fix="pip install pycocotools") from err
    images = [t["image"] for t in targets]
    annotations = [{**a, "id": n} for n, a in enumerate((a for t in targets for a in t["annotations"]), 1)]
    dets = [{"image_id": image["id"], "category_id": p.index + 1, "score": p.score,
             "keypoints": [v for x, y, _ in p.joints.values() for v in (x, y, 1.0)]}
            for image, result in zip(images, results) for p in result]
    if not dets or not any(a.get("num_keypoints", 0) for a in annotations):
        return {"ap": 0.0, "ap50": 0.0}
    categories = sorted({a["category_id"] for a in annotations} | {d["category_id"] for d in dets})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c, "name": str(c)} for c in categories]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(dets), "keypoints")
        evaluation.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"ap": max(float(evaluation.stats[0]), 0.0), "ap50": max(float(evaluation.stats[1]), 0.0)}


def evaluate(outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> dict[str, float]:
    """``keypoint_ap50`` (primary), ``keypoint_ap`` (OKS @[.5:.95]), ``box_map50`` and ``box_map`` against
    the held-out targets, every detection above the NMS floor counted."""
    sizes = [(t["image"]["height"], t["image"]["width"]) for t in targets]
    results = postprocess(outputs, manifest, sizes, score_threshold=manifest.postprocess["nms_score_threshold"])
    keypoints = keypoint_metrics(results, targets, manifest.postprocess["oks_sigmas"])
    boxes = coco_metrics(results, targets, manifest.classes)["bbox"]
    return {"keypoint_ap50": keypoints["ap50"], "keypoint_ap": keypoints["ap"],
            "box_map50": boxes["map50"], "box_map": boxes["map"]}


def import_defaults(variant: Variant, classes: list[str], bound: dict[str, int]) -> dict:
    """Detection's, and joints named by number without a skeleton (:data:`DEFAULT_SIGMA` each)."""
    joints = [f"joint_{j}" for j in range(bound.get("P", 0))]
    return {**detect_defaults(variant, classes, bound), "joints": joints, "skeleton": [],
            "oks_sigmas": oks_sigmas(joints)}


TASK = dataclasses.replace(
    DETECT, name="keypoints",
    architectures=(Architecture("keypoint_rcnn", ("EfficientNms", "RoiAlign2d"), default=True),),
    contract=Contract("fixed", "the object class names (one: the person), in class-index order", (
        Variant("NMS in the graph, with heatmaps", (*GRAPH_NMS.outputs, Tensor(
            "heatmaps", ("N", "K", "P", "M", "M"), "float",
            "per detection and joint, probabilities over the cells of its box")), True,
            {**GRAPH_NMS.postprocess, "joints": "the joint names, in heatmap order",
             "skeleton": "limbs as pairs of joint indices", "oks_sigmas": "OKS sigma per joint"}),), import_defaults),
    options=OPTIONS, postprocess=postprocess, evaluate=evaluate,
    precision_tolerance={"keypoint_ap50": (0.02, 0.0), "box_map50": (0.02, 0.0)}, imported=Imported(),
)
