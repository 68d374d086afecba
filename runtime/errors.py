"""Errors that name their cause and the fix.

Every error visionrt raises on purpose derives from :class:`VisionRTError`; the CLI prints
it as one line (plus the fix) and exits non-zero, with a traceback only under ``--debug``.
"""
from __future__ import annotations


class VisionRTError(Exception):
    """Base error: ``str(err)`` is the cause, ``err.fix`` what to do about it."""

    exit_code = 2

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.fix = fix

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} ({self.fix})" if self.fix else message


class InputError(VisionRTError):
    """An image or array the model cannot take: missing, not an image, wrong shape or dtype."""


class ArtifactError(VisionRTError):
    """A model directory, manifest, ONNX file or engine that is missing, corrupt or inconsistent."""


class BackendUnavailable(VisionRTError):
    """A backend (or the extra that provides it) is not installed or cannot run on this machine."""


class EngineMismatch(ArtifactError):
    """An engine built for another TensorRT version, flavour or GPU."""


class PluginError(VisionRTError):
    """A custom op that is not registered, cannot compile, or that a backend cannot take."""
