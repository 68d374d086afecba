"""``visionrt serve``: an ASGI inference server over the Predictor (needs the ``serve`` extra).

* :mod:`.repository` loads the models named on the command line (and nothing else);
* :mod:`.batcher` merges concurrent requests per model into batches;
* :mod:`.protocol` speaks the Open Inference Protocol (KServe v2) as Triton does;
* :mod:`.task_endpoint` turns encoded images into task results (``/v1/models/{m}/predict``);
* :mod:`.metrics` counts and times everything for Prometheus and ``/v2/models/{m}/stats``;
* :mod:`.limits` bounds request bodies; :mod:`.app` wires the routes; :mod:`.cli` is ``serve``.
"""
