"""``visionrt serve``: an ASGI inference server over the Predictor (needs the ``serve`` extra).

* :mod:`.repository` loads the models named on the command line (and nothing else);
* :mod:`.batcher` merges concurrent requests per model into batches;
* :mod:`.protocol` speaks the Open Inference Protocol (KServe v2) as Triton does; :mod:`.grpc_service`
  serves it over gRPC too (``--grpc-port``, the ``grpc`` extra);
* :mod:`.task_endpoint` turns encoded images into task results (``/v1/models/{m}/predict``);
* :mod:`.metrics` counts and times everything for Prometheus and ``/v2/models/{m}/stats``;
* :mod:`.auth` decides who may use the server (API keys, TLS files, CORS origins);
* :mod:`.limits` bounds request bodies; :mod:`.multipart` splits uploaded forms;
* :mod:`.app` wires the routes; :mod:`.cli` is ``serve``; :mod:`.workers` runs ``--workers N`` processes.
"""
