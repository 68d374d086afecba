"""Object detection: data, models (YOLO, Faster R-CNN), losses, COCO metrics and manifest entries.

The built-in data: scenes of 2-4 handwritten digits on real photos, 96×96, COCO boxes (and
masks, for the ``instance`` task built on this module); or anyone's COCO json + images of any
size. Models take the image fitted to the manifest's fixed input size by its resize policy
(letterbox by default: aspect kept, grey border); boxes come out in input pixels and the
runtime maps them back to the original image (:func:`visionrt.runtime.preprocess.fit`).

Architectures (``--model``):

* ``yolo`` (default): YOLOv1-style single shot with NMS in the graph (``efficient_nms``).
  The default because it trains to the target fastest on a CPU and is one forward pass;
  Faster R-CNN's machinery runs in every ``instance`` pipeline (Mask R-CNN).
* ``yolo_raw``: the same network without NMS in the graph; outputs every candidate box and
  its class scores and the runtime runs NMS (the NumPy reference of the same op), so its
  engine builds on TensorRT-RTX (no plugins there).
* ``fasterrcnn``: Faster R-CNN with RoI max pooling.
* ``ssd``: SSD-style single shot (default boxes on three feature maps) with NMS in the graph;
  ``ssd_raw``: the same without, NMS in the runtime (an engine for TensorRT-RTX), as ``yolo_raw``.

The NMS parameters live in the manifest's ``postprocess`` (:func:`default_postprocess`):
the export builds them into the graph, the runtime reads them, predict can tighten them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...runtime.manifest import InputSpec, Manifest, OutputSpec
from ...runtime.preprocess import fit
from ...runtime.tasks import detect as runtime_detect
from ..config import TrainConfig
from ..data import build_dataset, load_coco
from ..data.build import is_builtin_digits
from ..data.coco import training_annotations
from ..data.lazy import LazyImages
from ..models.detection import FasterRCNN, FasterRCNNConfig, NmsSettings
from ..models.detection.ssd import SSD, SSDConfig
from ..models.yolo import YOLO, YOLOConfig
from .architectures import Builder, register_model
from .base import Baseline, TrainTask
from .inputs import channel_stats, flip_choice, mirror, mirror_boxes, to_input

#: Images per split: the quick run fits a few CPU minutes; ``full`` trains longer on more data.
DATA_SIZES = {True: {"train": 2000, "val": 200, "test": 300},
              False: {"train": 12000, "val": 500, "test": 1000}}
IMAGE_SIZE = 96
OBJECTS_PER_IMAGE = (2, 4)
#: Digit height as a fraction of the image side: boxes from about 15 % to 45 % of it.
DIGIT_SCALE = (0.16, 0.45)


def build_data(out_dir: str | Path, quick: bool = True, seed: int = 0, progress=None, name: str = "detect") -> Path:
    """96×96 scenes with 2-4 digits each, COCO boxes and instance masks."""
    return build_dataset(out_dir, name=name, splits=DATA_SIZES[quick], image_size=IMAGE_SIZE,
                         objects_per_image=OBJECTS_PER_IMAGE, digit_scale=DIGIT_SCALE, seed=seed, progress=progress)


def default_config(quick: bool = True) -> TrainConfig:
    return TrainConfig(task="detect", model="yolo", epochs=20 if quick else 40, batch_size=32, optimizer="adam",
                       lr=0.002, patience=6)


#: Optimizer steps a run on data of one's own trains at least, epochs raised to reach them
#: (:mod:`visionrt.train.schedule`; 180 for the other tasks): 24 photos at 96 px reach test mAP50
#: 0.31 after 180 steps (the training photos themselves only 0.27), 0.65 after 420, 0.78 after
#: 600. At most the built-in quick run's earliest early stop (7 epochs of 62 steps), which stays.
MIN_STEPS = 420


#: Default ``score_threshold`` of predictions per architecture: about the best F1 on held-out
#: scenes. YOLO's scores are confidence (trained towards the box's IoU) × class probability, so
#: they run lower than the two-stage detectors' softmax scores; SSD's too (one softmax per default
#: box over the classes and the background; its F1 on the quick val split: 0.80 from 0.2 to 0.35).
SCORE_THRESHOLDS = {"yolo": 0.25, "yolo_raw": 0.25, "fasterrcnn": 0.5, "maskrcnn": 0.5, "keypoint_rcnn": 0.5, "ssd": 0.3, "ssd_raw": 0.3}
#: The architectures whose NMS runs in the runtime (their outputs are the candidates).
RUNTIME_NMS = ("yolo_raw", "ssd_raw")


def default_postprocess(arch: str, settings: NmsSettings = NmsSettings()) -> dict:
    """The manifest's ``postprocess`` for ``arch``: NMS in the graph or in the runtime, its
    parameters (``nms_score_threshold`` is the floor of what the model returns: evaluation uses
    every detection above it), the default ``score_threshold`` of predictions (the resize policy
    is the manifest input's ``resize``)."""
    return {"nms": "runtime" if arch in RUNTIME_NMS else "graph", "nms_score_threshold": settings.score_threshold,
            "iou_threshold": settings.iou_threshold, "max_detections": settings.max_detections,
            "pre_nms_top_k": settings.pre_nms_top_k, "score_threshold": SCORE_THRESHOLDS[arch]}


def nms_settings(postprocess: dict | None) -> NmsSettings:
    """The NMS a manifest's ``postprocess`` asks for (the defaults before training wrote one)."""
    if not postprocess:
        return NmsSettings()
    return NmsSettings(postprocess["nms_score_threshold"], postprocess["iou_threshold"],
                       postprocess["max_detections"], postprocess["pre_nms_top_k"])


def yolo(nms_in_graph: bool) -> Builder:
    """The builder of YOLO with NMS in the graph, or returning its candidates (NMS in the runtime)."""
    return lambda kwargs, classes, postprocess: YOLO(len(classes), YOLOConfig(**kwargs, nms_in_graph=nms_in_graph),
                                                     nms_settings(postprocess))


register_model("detect", "yolo")(yolo(nms_in_graph=True))
register_model("detect", "yolo_raw")(yolo(nms_in_graph=False))


@register_model("detect", "fasterrcnn")
def fasterrcnn(kwargs: dict, classes: list[str], postprocess: dict | None) -> nn.Module:
    return FasterRCNN(len(classes), FasterRCNNConfig(**kwargs), nms_settings(postprocess))


def ssd(nms_in_graph: bool) -> Builder:
    """The builder of SSD with NMS in the graph, or returning its candidates (NMS in the runtime)."""
    return lambda kwargs, classes, postprocess: SSD(len(classes), SSDConfig(**kwargs, nms_in_graph=nms_in_graph),
                                                    nms_settings(postprocess))


#: SSD's quick run: box mAP50 0.859 on the built-in test split (0.624 after 12 epochs).
SSD_QUICK = {"epochs": 30, "lr": 0.003, "batch_size": 16}
register_model("detect", "ssd", quick=SSD_QUICK)(ssd(nms_in_graph=True))
register_model("detect", "ssd_raw", quick=SSD_QUICK)(ssd(nms_in_graph=False))


@dataclasses.dataclass
class Split:
    """One split: images fitted to the input (:class:`LazyImages`, uint8 ``[N, H, W, 3]``), per image
    ``boxes [G, 4]`` (x1, y1, x2, y2 input pixels), ``labels [G]`` (class indices) and the COCO
    annotations (crowd regions left out), and the runtime's evaluation targets (original pixels,
    crowd regions in)."""

    images: LazyImages
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    annotations: list[list[dict]]
    targets: np.ndarray


def load_split(data_dir: str | Path, split: str, spec: InputSpec) -> tuple[Split, list[str]]:
    """``split`` of a COCO dataset, its images fitted to ``spec`` and its boxes mapped with them."""
    data = load_coco(data_dir, split)
    targets, classes = runtime_detect.coco_targets(data.coco)
    boxes, labels, annotations = [], [], []
    for target in targets:
        found = training_annotations(target["annotations"])
        xywh = np.array([a["bbox"] for a in found], np.float64).reshape(-1, 4)
        xyxy = fit(target["image"]["height"], target["image"]["width"], spec).to_input(
            np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))
        boxes.append(torch.from_numpy(xyxy.astype(np.float32)))
        labels.append(torch.tensor([a["category_id"] - 1 for a in found], dtype=torch.int64))
        annotations.append(found)
    return Split(LazyImages(data.image_paths, spec), boxes, labels, annotations, targets), classes


def zoom(image: torch.Tensor, target: dict[str, torch.Tensor], scale: float,
         generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A float ``[3, H, W]`` image and its target zoomed by ``scale`` (> 1 in, < 1 out, the border
    edge-replicated) on a random window that holds every box whole (the zoom in is limited so that
    one can): boxes scaled with it, masks resampled (nearest)."""
    _, h, w = image.shape
    boxes = target["boxes"]
    if len(boxes):
        spans = (boxes[:, 2:].max(0).values - boxes[:, :2].min(0).values).clamp(min=1e-3)
        scale = min(scale, w / float(spans[0]), h / float(spans[1]))
    corner = []
    for axis, side in ((0, w), (1, h)):  # the window's corner: inside the image, or covering it
        low, high = sorted((0.0, side - side / scale))
        if len(boxes):
            low = max(low, float(boxes[:, axis + 2].max()) - side / scale)
            high = max(low, min(high, float(boxes[:, axis].min())))
        corner.append(low + (high - low) * float(torch.rand(1, generator=generator)))
    x0, y0 = corner
    theta = torch.tensor([[[1 / scale, 0, 2 * x0 / w + 1 / scale - 1], [0, 1 / scale, 2 * y0 / h + 1 / scale - 1]]])
    grid = F.affine_grid(theta, [1, 3, h, w], align_corners=False)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    zoomed = {**target, "boxes": ((boxes - torch.tensor([x0, y0, x0, y0])) * scale).clamp(min=0)
              .minimum(torch.tensor([w, h, w, h], dtype=boxes.dtype))}
    if "masks" in target and len(target["masks"]):
        zoomed["masks"] = F.grid_sample(target["masks"][:, None], grid.expand(len(target["masks"]), -1, -1, -1),
                                        mode="nearest", align_corners=False)[:, 0]
    return out, zoomed


#: Scale jitter of detection training on data of one's own (zoom factors in 1 ± this).
SCALE_JITTER = 0.25


def scale_jitter(data_dir: str | Path, config: TrainConfig | None) -> float:
    """``config.scale_jitter`` where set, else :data:`SCALE_JITTER` except on the built-in digits
    (their scenes already vary the digits' scale, and the quick runs are tuned without it)."""
    if config is not None and config.scale_jitter is not None:
        return config.scale_jitter
    return 0.0 if is_builtin_digits(data_dir) else SCALE_JITTER


def augment(images: torch.Tensor, targets: list[dict[str, torch.Tensor]], generator: torch.Generator,
            flip: bool = False, jitter: float = 0.0,
            max_shift: int = 16) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Training augmentation of uint8 ``[N, H, W, 3]`` images and their targets: with ``flip``, half
    of them (at random) are mirrored left-right with their boxes and masks (not the built-in digits:
    a mirrored digit is no digit); with ``jitter``, each is zoomed by a factor in ``1 ± jitter``
    (:func:`zoom`); each is translated by up to ``max_shift`` px (edge-replicated), never so far
    that an object leaves it, and its colour channels are permuted."""
    n, h, w, _ = images.shape
    flipped = flip_choice(n, generator, flip)
    x = mirror(images, flipped).permute(0, 3, 1, 2).float()
    targets = [{**t, "boxes": mirror_boxes(t["boxes"], w),
                **({"masks": t["masks"].flip(2)} if "masks" in t else {})} if f else t
               for t, f in zip(targets, flipped.tolist())]
    if jitter:
        scales = 1 + jitter * (2 * torch.rand(n, generator=generator) - 1)
        zoomed = [zoom(x[i], target, float(scale), generator) for i, (target, scale) in enumerate(zip(targets, scales))]
        x, targets = torch.stack([image for image, _ in zoomed]), [target for _, target in zoomed]
    padded = F.pad(x, [max_shift] * 4, mode="replicate")
    out, moved = [], []
    for i, target in enumerate(targets):
        boxes = target["boxes"]
        low, high = torch.full((2,), -max_shift), torch.full((2,), max_shift)
        if len(boxes):  # from -min(x1, y1) to (W, H) - max(x2, y2)
            low = torch.maximum(low, (-boxes[:, :2].min(0).values).ceil().long())
            high = torch.minimum(high, (torch.tensor([w, h]) - boxes[:, 2:].max(0).values).floor().long())
        dx, dy = (int(torch.randint(int(lo), int(max(lo, hi)) + 1, (1,), generator=generator))
                  for lo, hi in zip(low, high))
        channels = torch.randperm(3, generator=generator)
        out.append(padded[i, channels, max_shift - dy:max_shift - dy + h, max_shift - dx:max_shift - dx + w])
        shifted = {**target, "boxes": boxes + torch.tensor([dx, dy, dx, dy], dtype=boxes.dtype)}
        if "masks" in target:
            shifted["masks"] = torch.roll(target["masks"], (dy, dx), dims=(1, 2))  # objects stay inside
        moved.append(shifted)
    return torch.stack(out).permute(0, 2, 3, 1).to(torch.uint8), moved


class Task(TrainTask):
    """Several objects per image (the built-in digits on real backgrounds, or a COCO dataset);
    metric COCO box mAP@[.5:.95] (mAP50 beside it)."""

    name = "detect"
    metric = "map"
    runtime = runtime_detect  # post-processing and metrics: the runtime's own
    image_size = IMAGE_SIZE
    resize = "letterbox"

    def __init__(self, data_dir: str | Path, config: TrainConfig | None = None):
        self.spec = self.fitted_input(config)
        self.splits = {}
        for split in ("train", "val", "test"):
            self.splits[split], self.classes = load_split(data_dir, split, self.spec)
        self.mean, self.std = channel_stats(self.splits["train"].images.sample())
        self.flip = self.mirrors(data_dir, config)
        self.jitter = scale_jitter(data_dir, config)
        self.arch = "yolo"

    def __len__(self) -> int:
        return len(self.splits["train"].images)

    def build_model(self, config: TrainConfig) -> nn.Module:
        self.arch = config.model
        return super().build_model(config)

    def targets(self, split: str, indices: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image ``boxes`` and ``labels`` (detection)."""
        data = self.splits[split]
        return [{"boxes": data.boxes[i], "labels": data.labels[i]} for i in indices.tolist()]

    def train_loss(self, model: nn.Module, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images, targets = augment(self.splits["train"].images[indices], self.targets("train", indices), generator,
                                  self.flip, self.jitter)
        return sum(model(to_input(images, self.mean, self.std), targets, generator).values())

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str, batch_size: int = 64) -> dict[str, np.ndarray]:
        """The model's outputs for a whole split, by manifest output name."""
        images = self.splits[split].images
        model.eval()
        batches = [model(to_input(images[i:i + batch_size], self.mean, self.std))
                   for i in range(0, len(images), batch_size)]
        return {o.name: torch.cat([b[k] for b in batches]).numpy() for k, o in enumerate(self.outputs())}

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        manifest = Manifest(self.name, {"arch": self.arch}, self.classes, self.input_spec(), self.outputs(),
                            self.postprocess_defaults())
        metrics = self.runtime.evaluate(self.predict(model, split), self.splits[split].targets, manifest)
        return {**metrics, "images": len(self.splits[split].images)}

    def baseline(self, split: str) -> Baseline:
        return Baseline(f"{self.metric}50", 0.0, "no objects")  # detect: map50; instance: mask_map50

    def outputs(self) -> list[OutputSpec]:
        if self.arch in RUNTIME_NMS:
            return runtime_detect.candidate_outputs(len(self.classes))
        return runtime_detect.detection_outputs()

    def postprocess_defaults(self) -> dict:
        return default_postprocess(self.arch)
