"""The dataset error: a dataset that cannot be built or read, with the fix."""
from __future__ import annotations

from visionrt.runtime.errors import VisionRTError


class DatasetError(VisionRTError):
    """A dataset directory or generator setting that is missing, invalid or inconsistent."""
