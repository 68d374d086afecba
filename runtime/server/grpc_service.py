"""The Open Inference Protocol's gRPC service (KServe v2 ``GRPCInferenceService``, as Triton serves
it) beside HTTP, in the same event loop, over the same models and batchers (needs the ``grpc``
extra: grpcio and the generated stubs ``tritonclient.grpc`` ships).

RPCs: ``ServerLive``, ``ServerReady``, ``ModelReady``, ``ServerMetadata``, ``ModelMetadata``,
``ModelConfig``, ``ModelInfer`` and Triton's ``ModelStreamInfer`` (``tritonclient.grpc``'s
``start_stream`` / ``async_stream_infer``: the requests of a stream run concurrently, so they batch,
and each is answered as it completes, a failure as that response's ``error_message`` while the stream
goes on); the others answer ``UNIMPLEMENTED``. Tensors travel as
``raw_input_contents`` / ``raw_output_contents`` (what ``tritonclient.grpc`` sends) or, for inputs,
the typed ``contents`` fields. Errors carry the HTTP answer's one-line message with the matching
status: 400 ``INVALID_ARGUMENT``, 404 ``NOT_FOUND``, 503 ``UNAVAILABLE``, 504 ``DEADLINE_EXCEEDED``,
500 ``INTERNAL``; a message over ``--max-body-mb`` is refused by gRPC (``RESOURCE_EXHAUSTED``).
The API keys and TLS certificate of HTTP apply here too (:mod:`.auth`: metadata ``authorization:
Bearer <key>``, else ``UNAUTHENTICATED``).
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from ..errors import InputError, VisionRTError
from . import auth, protocol
from .batcher import Rows
from .failures import error_message, failure

if TYPE_CHECKING:
    from .app import Server

#: HTTP status of :func:`.failures.failure` -> gRPC status.
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          499: grpc.StatusCode.CANCELLED, 503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED,
          500: grpc.StatusCode.INTERNAL}
#: The typed ``InferTensorContents`` field of each datatype (FP16 travels raw only).
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def parse_infer_request(request: service_pb2.ModelInferRequest) -> protocol.InferRequest:
    """A ``ModelInferRequest`` -> the HTTP route's :class:`~.protocol.InferRequest` (each input checked
    by :func:`~.protocol.decode_input`, so the messages are HTTP's)."""
    raw = request.raw_input_contents
    if not request.inputs:
        raise InputError("the request needs an 'inputs' list of tensors")
    if raw and len(raw) != len(request.inputs):
        raise InputError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs",
                         fix="send one raw_input_contents per input, in input order")
    inputs, datatypes = {}, {}
    for i, tensor in enumerate(request.inputs):
        header: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if raw:
            header["parameters"] = {"binary_data_size": len(raw[i])}
        elif tensor.datatype in _CONTENTS:
            header["data"] = list(getattr(tensor.contents, _CONTENTS[tensor.datatype]))
        name, array, _ = protocol.decode_input(header, memoryview(raw[i]) if raw else memoryview(b""))
        if name in inputs:
            raise InputError(f"input '{name}' is given twice")
        inputs[name], datatypes[name] = array, tensor.datatype
    outputs = {output.name: True for output in request.outputs} or None
    return protocol.InferRequest(request.id or None, inputs, datatypes, outputs, True)


def infer_response(model: str, request: protocol.InferRequest, outputs: dict) -> service_pb2.ModelInferResponse:
    """The outputs the request asks for (all by default), as raw little-endian bytes."""
    response = service_pb2.ModelInferResponse(model_name=model, model_version="1", id=request.id or "")
    for name in protocol.wanted_outputs(model, request, outputs):
        array = outputs[name]
        response.outputs.add(name=name, datatype=protocol.datatype(array.dtype), shape=array.shape)
        response.raw_output_contents.append(protocol.tensor_bytes(array))
    return response


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The RPCs over a running :class:`~.app.Server` (its models, batchers and metrics)."""

    def __init__(self, server: "Server"):
        self.server = server

    async def _answer(self, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[Any]]) -> Any:
        """``await work()``; a failure aborts the call with its status and one-line message."""
        try:
            return await work()
        except VisionRTError as err:
            await context.abort(_CODES[failure(err)[0]], error_message(err))
        except Exception as err:  # noqa: BLE001 - answered INTERNAL, logged like HTTP's 500
            await context.abort(grpc.StatusCode.INTERNAL, error_message(err))

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.server.ready)

    async def ModelReady(self, request, context):
        async def work():
            self.server.model(request.name, request.version)
            return service_pb2.ModelReadyResponse(ready=self.server.ready)
        return await self._answer(context, work)

    async def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(name="visionrt", version=protocol.VERSION, extensions=protocol.EXTENSIONS)

    async def ModelMetadata(self, request, context):
        async def work():
            metadata = protocol.model_metadata(self.server.model(request.name, request.version))
            return json_format.ParseDict(metadata, service_pb2.ModelMetadataResponse())
        return await self._answer(context, work)

    async def ModelConfig(self, request, context):
        async def work():
            model = self.server.model(request.name, request.version)
            config = protocol.model_config(model, self.server.settings.max_queue_delay_ms)
            config["parameters"] = {key: {"string_value": value} for key, value in config["parameters"].items()}
            return service_pb2.ModelConfigResponse(config=json_format.ParseDict(config, model_config_pb2.ModelConfig()))
        return await self._answer(context, work)

    async def ModelInfer(self, request, context):
        return await self._answer(context, lambda: self._infer(request, context))

    async def ModelStreamInfer(self, request_iterator, context):
        """Each request of the stream runs as it arrives, beside the others; each answer (or its error,
        naming the request's id) is sent as it completes; the stream ends after the last answer."""
        answers: asyncio.Queue = asyncio.Queue()
        running: set[asyncio.Task] = set()

        async def answer(request: service_pb2.ModelInferRequest) -> None:
            try:
                response = service_pb2.ModelStreamInferResponse(infer_response=await self._infer(request, context))
            except Exception as err:  # noqa: BLE001 - this request's answer; the stream goes on
                response = service_pb2.ModelStreamInferResponse(
                    error_message=error_message(err), infer_response=service_pb2.ModelInferResponse(
                        model_name=request.model_name, model_version=request.model_version, id=request.id))
            answers.put_nowait(response)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.ensure_future(answer(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                await asyncio.gather(*running)
            finally:
                answers.put_nowait(None)  # the last answer, or the client went away

        reader = asyncio.ensure_future(read())
        try:
            while (response := await answers.get()) is not None:
                yield response
        finally:
            for task in (reader, *running):
                task.cancel()

    async def _infer(self, request: service_pb2.ModelInferRequest, context) -> service_pb2.ModelInferResponse:
        """One inference through the model's batcher (failures raised as the HTTP route raises them)."""
        model = self.server.model(request.model_name, request.model_version)
        async with self.server.accounting(model):
            deadline = self.server.deadline()
            if context.time_remaining() is not None:
                deadline = min(deadline, time.perf_counter() + context.time_remaining())
            parsed = parse_infer_request(request)
            rows = protocol.check_infer_inputs(model, parsed)
            outputs, _ = await self.server.batchers[model.name].submit(Rows(rows), deadline)
            return infer_response(model.name, parsed, outputs)


async def start(server: "Server", address: str, max_message_bytes: int) -> grpc.aio.Server:
    """Serve :class:`InferenceService` on ``address`` (``host:port``) in the running event loop;
    several processes may listen on one port (``SO_REUSEPORT``, gRPC's default on Linux)."""
    grpc_server = grpc.aio.server(interceptors=auth.grpc_interceptors(server.gate),  # the HTTP API keys
                                  options=[("grpc.max_receive_message_length", max_message_bytes),
                                           ("grpc.max_send_message_length", -1)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(server), grpc_server)
    credentials = auth.grpc_credentials(server.settings.ssl_certfile, server.settings.ssl_keyfile)
    try:
        if credentials is None:
            grpc_server.add_insecure_port(address)
        else:
            grpc_server.add_secure_port(address, credentials)  # TLS whenever HTTP has it
    except RuntimeError as err:
        raise InputError(f"cannot listen for gRPC on {address}: {err}",
                         fix="pass --grpc-port a free port") from None
    await grpc_server.start()
    return grpc_server
