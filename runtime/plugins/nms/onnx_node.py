"""The ``visionrt::EfficientNms`` node: batched multi-class NMS with fixed-size outputs (see README.md).

It replaces ONNX NonMaxSuppression, whose output size depends on the data, together with the
gather/top-K tail that turns its selection into detections; the portable ONNX carries that
composition as a model-local function of the same name (``export/trt_flavour.py``).
"""
from __future__ import annotations

from ...errors import PluginError
from ..op import Attribute, PluginOp, Port
from .reference import efficient_nms

#: Most candidates per image that enter NMS (``pre_nms_top_k``); the kernel sorts them in one thread block.
MAX_NMS_CANDIDATES = 4096
#: Most detections per image (``max_output_boxes``, the ``K`` of the outputs).
MAX_NMS_OUTPUT_BOXES = 1024


def _evaluate(boxes, scores, *, score_threshold: float, iou_threshold: float, max_output_boxes: int,
              pre_nms_top_k: int, class_agnostic: int):
    return efficient_nms(boxes, scores, score_threshold, iou_threshold, max_output_boxes, pre_nms_top_k,
                         bool(class_agnostic))


def _check(attributes) -> None:
    if attributes["max_output_boxes"] > attributes["pre_nms_top_k"]:
        raise PluginError(f"EfficientNms: max_output_boxes {attributes['max_output_boxes']} exceeds "
                          f"pre_nms_top_k {attributes['pre_nms_top_k']}; no more boxes can come out than go in",
                          fix="raise pre_nms_top_k or lower max_output_boxes")


EFFICIENT_NMS = PluginOp(
    name="EfficientNms",
    folder="nms",
    replaces="NonMaxSuppression (+ gather/TopK to fixed-size detections)",
    inputs=(Port("boxes", "T", "[B, N, 4]", "two opposite corners per box, e.g. (x1, y1, x2, y2)"),
            Port("scores", "T", "[B, N, C]", "score of every box for every class")),
    outputs=(Port("num_detections", "int32", "[B, 1]", "detections kept per image"),
             Port("detection_boxes", "T", "[B, K, 4]", "kept boxes as given, best first, zero-padded"),
             Port("detection_scores", "T", "[B, K]", "their scores, descending, zero-padded"),
             Port("detection_classes", "int32", "[B, K]", "their classes, zero-padded")),
    attributes=(
        Attribute("score_threshold", float, None, "candidates score strictly above it (-inf: all)"),
        Attribute("iou_threshold", float, None, "suppress when IoU is strictly above it", low=0.0, high=1.0),
        Attribute("max_output_boxes", int, None, "K, detections per image", low=1, high=MAX_NMS_OUTPUT_BOXES),
        Attribute("pre_nms_top_k", int, MAX_NMS_CANDIDATES, "best candidates per image entering NMS",
                  low=1, high=MAX_NMS_CANDIDATES),
        Attribute("class_agnostic", bool, 0, "1: boxes of any class suppress each other"),
    ),
    evaluate=_evaluate,
    check=_check,
    limits=("max_output_boxes <= pre_nms_top_k", "boxes shared by all classes ([B, N, 4])"),
)


def portable_functions(opset: int) -> list:
    """``visionrt::EfficientNms`` in standard ONNX ops, as model-local functions (``onnx.FunctionProto``).

    Overload ``""`` is class-aware, ``"class_agnostic"`` class-agnostic; ``opset`` is the
    model's default-domain opset (18 or later). The composition: TopK keeps the
    ``pre_nms_top_k`` best of the ``N * C`` scores (the rest become -inf), NonMaxSuppression
    (per class with ``K`` per class; or one class over the ``N * C`` (box, class) pairs)
    selects, and a TopK over the selected scores (ties: lower flat index, as NMS and TopK
    order them) gives the fixed-size outputs.
    """
    return [_portable_function(opset, agnostic) for agnostic in (False, True)]


def _portable_function(opset: int, agnostic: bool):
    from onnx import AttributeProto, TensorProto, helper

    nodes = []

    def add(op_type, inputs, output, **attributes):
        nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output

    def const(name, value, dtype=TensorProto.INT64):
        return add("Constant", [], name, value=helper.make_tensor(name, dtype, [len(value)], value))

    def attribute(name, ref, kind):  # a 0-d tensor holding a function attribute
        node = helper.make_node("Constant", [], [name])
        node.attribute.append(AttributeProto(name="value_int" if kind == AttributeProto.INT else "value_float",
                                             ref_attr_name=ref, type=kind))
        nodes.append(node)
        return name

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    boxes = add("Cast", ["boxes"], "boxes_f", to=f32)
    scores = add("Cast", ["scores"], "scores_f", to=f32)
    shape = add("Shape", [scores], "shape")                                 # [B, N, C]
    batch = add("Shape", [scores], "batch", start=0, end=1)
    count = add("Shape", [scores], "count", start=1, end=2)
    classes = add("Shape", [scores], "classes", start=2)
    zero_axis, one_axis, four = const("axis0", [0]), const("axis1", [1]), const("four", [4])
    flat = add("Reshape", [scores, const("flat_shape", [0, -1])], "flat")   # [B, N*C], index n*C + c
    neg_inf = add("Constant", [], "neg_inf", value_float=float("-inf"))
    empty = add("Expand", [neg_inf, add("Shape", [flat], "flat_dims")], "empty")

    top_k = add("Unsqueeze", [attribute("top_k0", "pre_nms_top_k", AttributeProto.INT), zero_axis], "top_k1")
    top_k = add("Min", [top_k, add("Shape", [flat], "width", start=1)], "top_k")
    nodes.append(helper.make_node("TopK", [flat, top_k], ["best_scores", "best"], axis=1))
    masked = add("ScatterElements", [empty, "best", "best_scores"], "masked", axis=1)

    if agnostic:  # one class over the (box, class) pairs: box n repeated for every class
        pairs_shape = add("Concat", [shape, four], "pairs_shape", axis=0)
        spread = add("Expand", [add("Unsqueeze", [boxes, const("axis2", [2])], "boxes_1"), pairs_shape], "boxes_c")
        nms_boxes = add("Reshape", [spread, const("pair_boxes_shape", [0, -1, 4])], "nms_boxes")
        nms_scores = add("Unsqueeze", [masked, one_axis], "nms_scores")
    else:
        nms_boxes = boxes
        nms_scores = add("Transpose", [add("Reshape", [masked, shape], "masked_3d")], "nms_scores", perm=[0, 2, 1])
    k_scalar = attribute("k0", "max_output_boxes", AttributeProto.INT)
    selected = add("NonMaxSuppression", [nms_boxes, nms_scores, k_scalar,
                                         attribute("iou", "iou_threshold", AttributeProto.FLOAT),
                                         attribute("threshold", "score_threshold", AttributeProto.FLOAT)], "selected")
    column = {i: add("Gather", [selected, const(f"col{i}", [i])], f"selected_{i}", axis=1) for i in range(3)}
    flat_index = column[2] if agnostic else add("Add", [add("Mul", [column[2], classes], "n_c"), column[1]], "flat_index")
    picked = add("Concat", [column[0], flat_index], "picked", axis=1)       # [M, 2]: (batch, flat index)
    dense = add("ScatterND", [empty, picked, add("GatherND", [masked, picked], "picked_scores")], "dense")

    k = add("Unsqueeze", [k_scalar, zero_axis], "k")
    padding = add("Expand", [neg_inf, add("Concat", [batch, k], "pad_shape", axis=0)], "padding")
    candidates = add("Concat", [dense, padding], "candidates", axis=1)      # at least K columns
    nodes.append(helper.make_node("TopK", [candidates, k], ["top_scores", "top"], axis=1))
    valid = add("Greater", ["top_scores", neg_inf], "valid")
    kept = add("ReduceSum", [add("Cast", [valid], "valid_i", to=i64), one_axis], "kept", keepdims=1)
    add("Cast", [kept], "num_detections", to=TensorProto.INT32)

    box = add("Where", [valid, add("Div", ["top", classes], "top_box"), count], "box")  # padding -> zero row N
    zero_row = add("Expand", [add("Constant", [], "zero", value_float=0.0),
                              add("Concat", [batch, one_axis, four], "zero_row_shape", axis=0)], "zero_row")
    padded_boxes = add("Concat", [boxes, zero_row], "padded_boxes", axis=1)
    box_index = add("Expand", [add("Unsqueeze", [box, const("axis_last", [2])], "box_1"),
                               add("Concat", [batch, k, four], "det_shape", axis=0)], "box_index")
    detection_boxes = add("GatherElements", [padded_boxes, box_index], "detection_boxes_f", axis=1)
    add("CastLike", [detection_boxes, "boxes"], "detection_boxes")
    add("CastLike", [add("Where", [valid, "top_scores", "zero"], "detection_scores_f"), "scores"], "detection_scores")
    classes_of = add("Where", [valid, add("Mod", ["top", classes], "top_class"), const("no_class", [0])], "class")
    add("Cast", [classes_of], "detection_classes", to=TensorProto.INT32)

    function = helper.make_function(
        "visionrt", EFFICIENT_NMS.name, ["boxes", "scores"],
        [p.name for p in EFFICIENT_NMS.outputs], nodes, [helper.make_opsetid("", opset)],
        attributes=[a.name for a in EFFICIENT_NMS.attributes],
        doc_string=f"{EFFICIENT_NMS.name} ({'class-agnostic' if agnostic else 'class-aware'}) in standard ONNX ops")
    function.overload = "class_agnostic" if agnostic else ""
    return function
