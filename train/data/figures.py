"""Articulated figures with 14 joints over real photos: the scenes of the ``pose`` task.

A figure is a 2-D kinematic tree (pelvis -> neck -> head top; shoulders -> elbows ->
wrists; hips -> knees -> ankles) with human proportions jittered per figure and joint
angles drawn within human-like limits. It faces the viewer, so the person's left side is
on the image's right, as in LSP and COCO. Body parts are drawn one by one with a dark
outline (head and forearms in a skin tone, torso and upper arms in a shirt colour, legs in
a trouser colour), each arm in front of or behind the torso: a joint hidden behind a part it
does not belong to is marked hidden (COCO visibility 1), every other joint visible (2).
Edges are anti-aliased (drawn at 3× and averaged down).

Every scene is drawn from its own RNG seeded by ``(seed, split, index)`` as in
:mod:`~visionrt.train.data.scenes`; backgrounds are the same random photo crops.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .errors import DatasetError
from .scenes import Scene, SceneObject, check_fraction_range, check_image_size, random_background, scene_rng

#: The 14 joints of LSP / DeepPose, in COCO-style names; ``head`` is the top of the head.
JOINTS = ("head", "neck", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
          "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
#: Limbs as pairs of joint indices (0-based; COCO's ``skeleton`` is these + 1).
SKELETON = ((0, 1), (1, 2), (1, 3), (2, 4), (4, 6), (3, 5), (5, 7), (2, 8), (3, 9), (8, 9),
            (8, 10), (10, 12), (9, 11), (11, 13))
#: The joints whose distance is the torso diameter of PCK (DeepPose's PDJ, LSP's PCK).
TORSO = ("left_shoulder", "right_hip")
#: The one COCO category of the pose scenes.
FIGURE_CATEGORIES = ({"id": 1, "name": "person", "supercategory": "person", "keypoints": list(JOINTS),
                      "skeleton": [[a + 1, b + 1] for a, b in SKELETON]},)

SUPERSAMPLE = 3
J = {name: i for i, name in enumerate(JOINTS)}
#: Body proportions in units of the standing height (head top to ankles), jittered ±10 %.
PROPORTIONS = {"head": 0.16, "torso": 0.31, "upper_arm": 0.17, "forearm": 0.16, "thigh": 0.26, "shin": 0.25,
               "shoulder": 0.11, "hip": 0.07, "arm_width": 0.055, "leg_width": 0.075}
#: Joint angle ranges in degrees (0 = pointing down along the torso, positive = away from
#: the body's midline; the lower joint's angle is relative to the upper limb).
ANGLES = {"shoulder": (-30.0, 165.0), "elbow": (-140.0, 40.0), "hip": (-25.0, 65.0), "knee": (-100.0, 20.0),
          "neck": (-25.0, 25.0)}


@dataclass(frozen=True)
class FigureConfig:
    """How pose scenes look.

    image_size: (height, width) in pixels.
    figure_scale: inclusive range of the figure's standing height (head top to ankles) as a
        fraction of the image's shorter side; a pose that would not fit is shrunk until it does.
    max_tilt: the whole figure leans by up to this many degrees either way.
    """

    image_size: tuple[int, int] = (64, 64)
    figure_scale: tuple[float, float] = (0.75, 1.0)
    max_tilt: float = 20.0

    def __post_init__(self):
        check_image_size(self.image_size, 32, " for a figure")
        check_fraction_range("figure_scale", self.figure_scale)
        if not 0 <= self.max_tilt <= 90:
            raise DatasetError(f"max_tilt {self.max_tilt} is not in [0, 90] degrees")


@dataclass(frozen=True)
class Part:
    """One body part, ``size`` in pixels: a ``"limb"`` (a segment of thickness ``size`` with round
    ends between its two joints), the ``"torso"`` (the quadrilateral of its four joints) or the
    ``"head"`` (a disc of radius ``size`` whose top is its first joint, towards its second)."""

    kind: str
    joints: tuple[int, ...]
    size: float
    colour: np.ndarray


def make_figure(config: FigureConfig, seed: int, split: str, index: int) -> Scene:
    """Figure scene ``index`` of ``split``: one object (category 0, "person") with 14 keypoints."""
    rng = scene_rng(seed, split, index)
    height, width = config.image_size
    image = random_background(rng, height, width)
    size = {k: v * rng.uniform(0.9, 1.1) for k, v in PROPORTIONS.items()}
    joints = _pose(rng, size, config.max_tilt)
    joints, scale = _place(rng, joints, size, config)
    parts = _parts(rng, size, scale)
    owner = _draw(joints, parts, height, width)
    image = _composite(image, owner, parts)
    owner_1x = owner[SUPERSAMPLE // 2::SUPERSAMPLE, SUPERSAMPLE // 2::SUPERSAMPLE]
    mask = owner_1x > 0
    keypoints = np.concatenate([joints, _visibility(joints, owner, parts)[:, None]], 1).astype(np.float32)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    bbox = (float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))
    return Scene(image=image, semantic=mask.astype(np.uint8),
                 objects=[SceneObject(category=0, bbox=bbox, mask=mask, keypoints=keypoints)])


def _direction(angle: float, side: float) -> np.ndarray:
    """Unit vector ``angle`` degrees from straight down (image y grows downwards), turned
    towards ``side`` (+1: image right, the person's left; -1: image left)."""
    a = np.radians(angle)
    return np.array([side * np.sin(a), np.cos(a)])


def _pose(rng: np.random.Generator, size: dict, max_tilt: float) -> np.ndarray:
    """Joint positions ``[14, 2]`` in units of the standing height, pelvis at the origin."""
    uniform = lambda name: rng.uniform(*ANGLES[name])
    joints = np.zeros((len(JOINTS), 2))
    joints[J["neck"]] = (0.0, -size["torso"])
    joints[J["head"]] = joints[J["neck"]] - size["head"] * _direction(uniform("neck"), 1.0)
    for side, name in ((1.0, "left"), (-1.0, "right")):
        shoulder = joints[J["neck"]] + (side * size["shoulder"], 0.02)
        shoulder_angle, hip_angle = uniform("shoulder"), uniform("hip")
        elbow = shoulder + size["upper_arm"] * _direction(shoulder_angle, side)
        wrist = elbow + size["forearm"] * _direction(shoulder_angle + uniform("elbow"), side)
        hip = np.array([side * size["hip"], 0.0])
        knee = hip + size["thigh"] * _direction(hip_angle, side)
        ankle = knee + size["shin"] * _direction(hip_angle + uniform("knee"), side)
        for joint, xy in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist), ("hip", hip),
                          ("knee", knee), ("ankle", ankle)):
            joints[J[f"{name}_{joint}"]] = xy
    tilt = np.radians(rng.uniform(-max_tilt, max_tilt))
    rotation = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
    return joints @ rotation.T


def _place(rng: np.random.Generator, joints: np.ndarray, size: dict, config: FigureConfig):
    """Scale to pixels and move to a random position with the whole figure inside the image.

    Returns joints ``[14, 2]`` in pixels (continuous: pixel column i spans [i, i + 1)) and the
    scale in pixels per height unit."""
    height, width = config.image_size
    margin = 0.6 * size["head"] + size["leg_width"]  # head disc and limb thickness beyond the joints
    low, high = joints.min(0) - margin, joints.max(0) + margin
    scale = min(rng.uniform(*config.figure_scale) * min(height, width),
                (width - 2) / (high[0] - low[0]), (height - 2) / (high[1] - low[1]))
    extent = (high - low) * scale
    offset = rng.uniform(1, np.array([width, height]) - 1 - extent + 1e-9)
    return (joints - low) * scale + offset, scale


def _parts(rng: np.random.Generator, size: dict, scale: float) -> list[Part]:
    """Body parts in paint order (back to front): arms behind the torso, legs, torso, neck,
    head, arms in front. Widths in pixels."""
    skin = np.array([rng.uniform(90, 255), 0, 0])
    skin[1], skin[2] = skin[0] * rng.uniform(0.6, 0.85), skin[0] * rng.uniform(0.4, 0.7)
    shirt, trousers = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    shade = lambda colour: np.clip(colour * rng.uniform(0.85, 1.15), 0, 255)
    arm, leg = size["arm_width"] * scale, size["leg_width"] * scale
    limb = lambda name, a, b, width, colour: Part("limb", (J[f"{name}_{a}"], J[f"{name}_{b}"]), width, shade(colour))
    arms, legs = {}, []
    for name in ("left", "right"):
        arms[name] = [limb(name, "shoulder", "elbow", arm, shirt), limb(name, "elbow", "wrist", 0.85 * arm, skin)]
        legs.append([limb(name, "hip", "knee", leg, trousers), limb(name, "knee", "ankle", 0.85 * leg, trousers)])
    in_front = {name: rng.random() < 0.7 for name in arms}
    order = list(rng.permutation(2))
    corners = (J["left_shoulder"], J["right_shoulder"], J["right_hip"], J["left_hip"])
    body = [Part("torso", corners, 0.0, shade(shirt)),
            Part("limb", (J["neck"], J["head"]), 0.8 * arm, shade(skin)),
            Part("head", (J["head"], J["neck"]), 0.42 * size["head"] * scale, shade(skin))]
    return ([p for name in arms if not in_front[name] for p in arms[name]]
            + [p for i in order for p in legs[i]] + body
            + [p for name in arms if in_front[name] for p in arms[name]])


def _draw(joints: np.ndarray, parts: list[Part], height: int, width: int) -> np.ndarray:
    """Owner map uint8 ``[S*H, S*W]`` at ``S = SUPERSAMPLE``: 0 background, ``2k + 1`` the outline
    of part k, ``2k + 2`` its fill; later parts cover earlier ones."""
    canvas = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    xy = joints * SUPERSAMPLE - 0.5  # continuous coordinates -> PIL's pixel-centre coordinates
    outline = 0.6 * SUPERSAMPLE
    for k, part in enumerate(parts):
        _shape(draw, part, xy[list(part.joints)], part.size * SUPERSAMPLE, grow=outline, label=2 * k + 1)
        _shape(draw, part, xy[list(part.joints)], part.size * SUPERSAMPLE, grow=0.0, label=2 * k + 2)
    return np.asarray(canvas)


def _shape(draw: ImageDraw.ImageDraw, part: Part, points: np.ndarray, size: float, grow: float, label: int) -> None:
    """Fill ``part``'s shape (its joints at ``points``, its size ``size``, both in canvas pixels),
    grown by ``grow`` pixels all round, with ``label``."""
    if part.kind == "limb":
        width = size + 2 * grow
        draw.line([tuple(p) for p in points], fill=label, width=max(1, round(width)))
        for x, y in points:
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=label)
    elif part.kind == "torso":
        centre = points.mean(0)
        outward = (points - centre) / np.linalg.norm(points - centre, axis=1, keepdims=True)
        draw.polygon([tuple(p) for p in points + grow * outward], fill=label)
    else:  # head
        top, towards = points
        centre = top + (towards - top) / np.linalg.norm(towards - top) * size
        r = size + grow
        draw.ellipse((centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r), fill=label)


def _composite(background: np.ndarray, owner: np.ndarray, parts: list[Part]) -> np.ndarray:
    """Parts over the background, each output pixel the average of its ``S × S`` samples."""
    palette = np.zeros((256, 4), np.uint8)   # RGBA per owner label; 0 (background) transparent
    for k, part in enumerate(parts):
        palette[2 * k + 1] = (*np.rint(part.colour * 0.3), 255)   # outline: a dark shade of the part
        palette[2 * k + 2] = (*np.rint(part.colour), 255)
    labels = Image.fromarray(owner, "L")
    labels.putpalette(palette.tobytes(), "RGBA")
    h, w = background.shape[:2]
    figure = labels.convert("RGBA").resize((w, h), Image.Resampling.BOX)  # coverage becomes alpha
    return np.asarray(Image.alpha_composite(Image.fromarray(background).convert("RGBA"), figure).convert("RGB"))


def _visibility(joints: np.ndarray, owner: np.ndarray, parts: list[Part]) -> np.ndarray:
    """COCO visibility per joint: 1 where the part seen at the joint is not one of its own
    (it is hidden behind another body part), else 2."""
    owns = [set() for _ in JOINTS]
    for k, part in enumerate(parts):
        for j in part.joints:
            owns[j].add(k)
    h, w = owner.shape
    v = np.full(len(JOINTS), 2.0)
    for j, (x, y) in enumerate(joints * SUPERSAMPLE):
        label = int(owner[min(int(y), h - 1), min(int(x), w - 1)])
        if label > 0 and (label - 1) // 2 not in owns[j]:
            v[j] = 1.0
    return v
