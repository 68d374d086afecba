"""Errors that name their cause and the fix.

Every error visionrt raises on purpose derives from :class:`VisionRTError`; the CLI prints
it as one line (plus the fix) and exits 2, with a traceback only under ``--debug``. For bad input
the Python API raises only these types (never a bare ``ValueError``/``TypeError``/``OSError``)::

    VisionRTError                 catch this for "anything visionrt refused"
    ├── InputError                an image, array, option or path of yours: missing, wrong type or range
    ├── ArtifactError             a model directory, manifest (schema, paths), ONNX file or engine
    │   └── EngineMismatch        an engine built for another TensorRT version, flavour or GPU
    ├── BackendUnavailable        a backend or its extra is not installed, or cannot run here
    └── PluginError               a custom op not registered, not compilable, or refused by a backend

Any other exception is a bug: the CLI prints ``internal error: <type>: <message>`` and exits 1.
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
