"""The dataset error: a dataset that cannot be built or read, with the fix (the runtime's, which reads datasets too)."""
from __future__ import annotations

from ...runtime.datasets import DatasetError

__all__ = ["DatasetError"]
