"""Two-stage detectors laid out as torchvision's detection package, one concept per module:

``anchors`` (anchor generator), ``box_coder`` (deltas), ``boxes`` (IoU, clipping), ``matcher``
(IoU matching), ``sampler`` (balanced sampling), ``backbone``, ``rpn`` (head, proposals,
losses), ``poolers`` (RoI max pooling, RoIAlign), ``roi_heads`` (box head, predictor,
per-class NMS, losses), ``mask_head`` (mask branch), ``keypoint_head`` (keypoint branch), composed by
``faster_rcnn``, ``mask_rcnn`` and ``keypoint_rcnn``;
and the single-shot SSD: ``default_boxes``, ``ssd_loss`` (matching, hard negatives), ``ssd``.
"""
from .faster_rcnn import FasterRCNN, FasterRCNNConfig
from .keypoint_rcnn import KeypointRCNN, KeypointRCNNConfig
from .mask_rcnn import MaskRCNN, MaskRCNNConfig
from .roi_heads import NmsSettings

__all__ = ["FasterRCNN", "FasterRCNNConfig", "KeypointRCNN", "KeypointRCNNConfig", "MaskRCNN", "MaskRCNNConfig", "NmsSettings"]
