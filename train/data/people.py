"""Scenes of one to three articulated figures over a real photo: the ``keypoints`` task's data.

Each figure is drawn as the ``pose`` task's (:mod:`~visionrt.train.data.figures`: same body,
proportions, joint limits and paint order), smaller, at its own random place; a figure may
overlap those drawn before it (their boxes' IoU at most ``max_overlap``). A joint covered by a
later figure, or by another part of its own body, is marked hidden (COCO visibility 1); the
others are visible (2). Each person's ``bbox`` is its whole figure's extent (hidden parts
included, as a person box is annotated); its mask is the part of it left visible.

Every scene is drawn from its own RNG seeded by ``(seed, split, index)`` as in
:mod:`~visionrt.train.data.scenes`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DatasetError
from .figures import PROPORTIONS, SUPERSAMPLE, _composite, _draw, _parts, _place, _pose, _visibility
from .scenes import (Scene, SceneObject, check_count_range, check_fraction_range, check_image_size, random_background,
                     scene_rng)

#: Random positions tried per figure before it is left out of a crowded scene.
PLACEMENT_TRIES = 20


@dataclass(frozen=True)
class PeopleConfig:
    """How multi-person scenes look.

    image_size: (height, width) in pixels.
    people: inclusive range of figures per scene (fewer where no position satisfies ``max_overlap``).
    figure_scale: inclusive range of a figure's standing height as a fraction of the shorter side.
    max_tilt: each figure leans by up to this many degrees either way.
    max_overlap: largest IoU of a new figure's box with an earlier one's.
    """

    image_size: tuple[int, int] = (96, 96)
    people: tuple[int, int] = (1, 3)
    figure_scale: tuple[float, float] = (0.45, 0.8)
    max_tilt: float = 20.0
    max_overlap: float = 0.3

    def __post_init__(self):
        check_image_size(self.image_size, 32, " for figures")
        check_count_range("people", self.people)
        check_fraction_range("figure_scale", self.figure_scale)
        if not 0 <= self.max_overlap <= 1:
            raise DatasetError(f"max_overlap {self.max_overlap} is not in [0, 1]")


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two ``(x, y, w, h)`` boxes."""
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


def make_people(config: PeopleConfig, seed: int, split: str, index: int) -> Scene:
    """People scene ``index`` of ``split``: 1-3 objects (category 0, "person") with 14 keypoints each."""
    rng = scene_rng(seed, split, index)
    height, width = config.image_size
    image = random_background(rng, height, width)
    people = []  # (keypoints [14, 3], full mask [H, W], owner map at SUPERSAMPLE)
    for _ in range(rng.integers(config.people[0], config.people[1] + 1)):
        size = {k: v * rng.uniform(0.9, 1.1) for k, v in PROPORTIONS.items()}
        pose = _pose(rng, size, config.max_tilt)
        for _ in range(PLACEMENT_TRIES):
            joints, scale = _place(rng, pose, size, config)
            parts = _parts(rng, size, scale)
            owner = _draw(joints, parts, height, width)
            mask = owner[SUPERSAMPLE // 2::SUPERSAMPLE, SUPERSAMPLE // 2::SUPERSAMPLE] > 0
            if mask.any() and all(_iou(_box(mask), _box(m)) <= config.max_overlap for _, m, _ in people):
                break
        else:
            continue
        image = _composite(image, owner, parts)
        for keypoints, _, _ in people:  # joints of earlier people this one covers are hidden
            xy = np.minimum((keypoints[:, :2] * SUPERSAMPLE).astype(int), [width * SUPERSAMPLE - 1,
                                                                          height * SUPERSAMPLE - 1])
            keypoints[owner[xy[:, 1], xy[:, 0]] > 0, 2] = 1.0
        people.append((np.concatenate([joints, _visibility(joints, owner, parts)[:, None]], 1), mask, owner))
    objects, seen = [], np.zeros((height, width), bool)
    for keypoints, mask, _ in reversed(people):  # the visible part of each: what later ones leave
        objects.append(SceneObject(category=0, bbox=_box(mask), mask=mask & ~seen,
                                   keypoints=keypoints.astype(np.float32)))
        seen |= mask
    return Scene(image=image, semantic=seen.astype(np.uint8), objects=objects[::-1])
