"""visionrt's runtime: load a model directory and run it, with no torch.

    from visionrt.runtime import Predictor
    predictor = Predictor("runs/classify")
    print(predictor.predict("digit.png")[0].label)
"""
from .errors import ArtifactError, BackendUnavailable, EngineMismatch, InputError, PluginError, VisionRTError
from .manifest import Manifest, ModelDir
from .predictor import Predictor

__all__ = ["ArtifactError", "BackendUnavailable", "EngineMismatch", "InputError", "Manifest", "ModelDir",
           "PluginError", "Predictor", "VisionRTError"]
