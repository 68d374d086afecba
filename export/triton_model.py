"""A Triton Inference Server python-backend model that runs visionrt's own pre/post-processing.

``visionrt export-triton`` copies this file as ``<model>/1/model.py``; it is not imported by
visionrt itself. Its ``mode`` (a ``parameters`` entry of ``config.pbtxt``) picks the role:

- ``predict``: encoded images in (``IMAGE``, BYTES ``[N, 1]``), the task's results out as JSON
  (``RESULT``, BYTES ``[N, 1]``, each ``result.to_dict()``): a :class:`Predictor` on the
  ONNX file copied beside this file, so the results equal ``visionrt predict``;
  the other modes are its steps (``Pipeline.preprocess``, ``Predictor.infer``, ``Pipeline.postprocess``):
- ``preprocess``: ``IMAGE`` in; the model input (float32 ``[N, C, H, W]``, named as in the
  manifest) and ``ORIGINAL_SIZE`` (int32 ``[N, 2]``, height and width) out;
- ``postprocess``: the model's outputs and ``ORIGINAL_SIZE`` in, ``RESULT`` out; an imported
  model's own outputs are first mapped onto its task's contract as the manifest's output layout
  says (:func:`visionrt.runtime.output_adapters.adapt`, as every visionrt runner does);
- ``infer``: the model input in, the ONNX file's own outputs out, through onnxruntime (a
  stand-in for Triton's onnxruntime backend where a Triton lacks it).

The visionrt runtime (``pip install visionrt``: numpy, onnxruntime, pillow) must be importable
in the Python environment Triton's python backend runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: The model directory (manifest + ONNX) sits in this folder, beside model.py.
MODEL_DIR = "visionrt_model"


class TritonPythonModel:
    """Triton's python-backend entry point: ``initialize``, ``execute``, ``finalize``."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils
        from visionrt.runtime.manifest import ModelDir

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        self.mode = config["parameters"]["mode"]["string_value"]
        self.output_names = [o["name"] for o in config["output"]]
        self.input_names = [i["name"] for i in config["input"]]
        model_dir = ModelDir.open(Path(__file__).resolve().parent / MODEL_DIR)
        self.manifest = model_dir.manifest
        threads = int(config["parameters"].get("threads", {}).get("string_value", "0"))
        if self.mode == "predict":
            from visionrt.runtime.predictor import Predictor

            self.pipeline = self.predictor = Predictor(model_dir, threads=threads)
        elif self.mode == "infer":  # what Triton's onnxruntime backend serves: the file's own outputs
            from visionrt.runtime.backends import open_runner
            from visionrt.runtime.output_adapters import AdaptedRunner

            runner = open_runner(model_dir, "onnxruntime", threads=threads)
            self.runner = (runner.runner if isinstance(runner, AdaptedRunner) else runner).activate()
        else:
            from visionrt.runtime.predictor import Pipeline

            self.pipeline = Pipeline(model_dir)

    def execute(self, requests: list) -> list:
        """One response per request; a request whose images fail gets an error naming why, the
        others still get their results."""
        run = getattr(self, f"_{self.mode}")
        responses = []
        for request in requests:
            try:
                outputs = run(request)
            except Exception as err:  # noqa: BLE001: the client gets the cause, the model keeps serving
                responses.append(self.pb.InferenceResponse(error=self.pb.TritonError(f"{type(err).__name__}: {err}")))
                continue
            responses.append(self.pb.InferenceResponse(
                output_tensors=[self.pb.Tensor(name, outputs[name]) for name in self.output_names]))
        return responses

    def finalize(self) -> None:
        if hasattr(self, "predictor"):
            self.predictor.close()
        if hasattr(self, "runner"):
            self.runner.deactivate()

    # modes ---------------------------------------------------------------------------------
    def _images(self, request) -> list[bytes]:
        return [bytes(item) for item in self._input(request, "IMAGE").reshape(-1)]

    def _input(self, request, name: str) -> np.ndarray:
        return self.pb.get_input_tensor_by_name(request, name).as_numpy()

    def _predict(self, request) -> dict[str, np.ndarray]:
        return {"RESULT": _json_rows(self.predictor.predict(self._images(request)))}

    def _preprocess(self, request) -> dict[str, np.ndarray]:
        decoded, sizes = zip(*(self.pipeline.decode(image) for image in self._images(request)))
        return {self.manifest.input.name: self.pipeline.preprocess(list(decoded)),
                "ORIGINAL_SIZE": np.array(sizes, dtype=np.int32)}

    def _postprocess(self, request) -> dict[str, np.ndarray]:
        from visionrt.runtime.output_adapters import adapt
        from visionrt.runtime.preprocess import fit

        outputs = {name: self._input(request, name) for name in self.input_names if name != "ORIGINAL_SIZE"}
        sizes = [tuple(int(v) for v in row) for row in self._input(request, "ORIGINAL_SIZE")]
        spec = self.manifest.input  # the input size the batch was fed at (normalised boxes are scaled by it)
        height, width = (spec.height, spec.width) if spec.height else fit(*sizes[0], spec).size
        outputs = adapt(outputs, self.manifest.postprocess, height, width)
        return {"RESULT": _json_rows(self.pipeline.postprocess(outputs, sizes))}

    def _infer(self, request) -> dict[str, np.ndarray]:
        return self.runner.infer({self.manifest.input.name: self._input(request, self.manifest.input.name)})


def _json_rows(results: list) -> np.ndarray:
    """Task results -> BYTES ``[N, 1]``: each result's ``to_dict()`` as UTF-8 JSON."""
    return np.array([[json.dumps(r.to_dict()).encode("utf-8")] for r in results], dtype=np.object_)
