"""Two-stage detectors laid out as torchvision's detection package, one concept per module:

``anchors`` (anchor generator), ``box_coder`` (deltas), ``boxes`` (IoU, clipping), ``matcher``
(IoU matching), ``sampler`` (balanced sampling), ``backbone``, ``rpn`` (head, proposals,
losses), ``poolers`` (RoI max pooling, RoIAlign), ``roi_heads`` (box head, predictor,
per-class NMS, losses), ``mask_head`` (mask branch), composed by ``faster_rcnn`` and ``mask_rcnn``;
and the single-shot SSD: ``default_boxes``, ``ssd_loss`` (matching, hard negatives), ``ssd``.
"""
from .faster_rcnn import FasterRCNN, FasterRCNNConfig
from .mask_rcnn import MaskRCNN, MaskRCNNConfig
from .roi_heads import NmsSettings

__all__ = ["FasterRCNN", "FasterRCNNConfig", "MaskRCNN", "MaskRCNNConfig", "NmsSettings"]
