"""The Open Inference Protocol (KServe v2) as Triton speaks it, with the binary-data extension.

A request body is a JSON header, optionally followed by raw tensor bytes: the
``Inference-Header-Content-Length`` HTTP header gives the JSON's length, each input with
``parameters.binary_data_size`` takes that many bytes from the rest, in input order.
Responses carry an output as binary when the request asks (``outputs[i].parameters.binary_data``,
or ``parameters.binary_data_output`` for all). Tensors travel row-major (C order); BYTES
elements are each a 4-byte little-endian length and the bytes.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import struct
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..backends import TensorSpec
from ..errors import InputError

if TYPE_CHECKING:
    from .repository import ServedModel

#: v2 datatype -> numpy dtype (BYTES: object arrays of ``bytes``).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
HEADER_LENGTH = "Inference-Header-Content-Length"


def datatype(dtype: str | np.dtype) -> str:
    """numpy dtype (or its name) -> v2 datatype."""
    dtype = np.dtype(dtype)
    for name, candidate in DATATYPES.items():
        if candidate == dtype:
            return name
    if dtype.kind in "SU":
        return "BYTES"
    raise InputError(f"numpy dtype {dtype} has no KServe v2 datatype")


def shape_with_batch(spec: TensorSpec) -> list[int]:
    """A runner's tensor shape with every symbolic axis (the batch first) as -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in spec.shape]


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": datatype(spec.dtype), "shape": shape_with_batch(spec)}


try:
    #: The server's version (``GET /v2``, gRPC ``ServerMetadata``).
    VERSION = importlib.metadata.version("visionrt")
except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "unknown"
#: The protocol extensions this server speaks (``GET /v2``, gRPC ``ServerMetadata``).
EXTENSIONS = ["binary_tensor_data", "statistics", "model_configuration"]


def model_metadata(model: "ServedModel") -> dict[str, Any]:
    """``GET /v2/models/{m}`` (and gRPC ``ModelMetadata``)."""
    return {"name": model.name, "versions": ["1"], "platform": model.backend,
            "inputs": [tensor_metadata(model.input)], "outputs": [tensor_metadata(spec) for spec in model.outputs]}


def model_config(model: "ServedModel", max_queue_delay_ms: float) -> dict[str, Any]:
    """Triton-shaped configuration (dims without the batch axis): ``GET /v2/models/{m}/config``
    (and gRPC ``ModelConfig``)."""
    def dims(spec: TensorSpec) -> dict[str, Any]:
        return {"name": spec.name, "data_type": "TYPE_" + datatype(spec.dtype), "dims": shape_with_batch(spec)[1:]}
    return {"name": model.name, "platform": model.backend, "max_batch_size": model.max_batch_size,
            "input": [dims(model.input)], "output": [dims(s) for s in model.outputs],
            "dynamic_batching": {"max_queue_delay_microseconds": int(max_queue_delay_ms * 1e3)},
            "instance_group": [{"count": len(model.predictors), "kind": "KIND_CPU"}],
            "parameters": {"task": model.manifest.task}}


@dataclasses.dataclass
class InferRequest:
    """A parsed ``/infer`` request: input arrays by name, and which outputs go back in binary."""

    id: str | None
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: dict[str, bool] | None  # name -> binary; None: every output
    binary_by_default: bool


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Decode a request body (:class:`InputError` naming what is wrong)."""
    if header_length is not None:
        try:
            json_size = int(header_length)
        except ValueError:
            raise InputError(f"{HEADER_LENGTH} '{header_length}' is not an integer") from None
        if not 0 < json_size <= len(body):
            raise InputError(f"{HEADER_LENGTH} {json_size} does not fit a body of {len(body)} bytes")
    else:
        json_size = len(body)
    try:
        header = _loads(body[:json_size])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"the request is not valid JSON: {err}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or not header["inputs"]:
        raise InputError("the request needs an 'inputs' list of tensors")
    binary = memoryview(body)[json_size:]
    inputs, datatypes, offset = {}, {}, 0
    for tensor in header["inputs"]:
        name, array, used = decode_input(tensor, binary[offset:])
        if name in inputs:
            raise InputError(f"input '{name}' is given twice")
        inputs[name], datatypes[name] = array, tensor["datatype"]
        offset += used
    if offset != len(binary):
        raise InputError(f"the body has {len(binary) - offset} bytes of binary data no input claims")
    parameters = header.get("parameters") or {}
    outputs = None
    if header.get("outputs") is not None:
        if not isinstance(header["outputs"], list):
            raise InputError("'outputs' must be a list")
        outputs = {o.get("name"): bool((o.get("parameters") or {}).get("binary_data", False))
                   for o in header["outputs"] if isinstance(o, dict)}
    return InferRequest(header.get("id"), inputs, datatypes, outputs,
                        bool(parameters.get("binary_data_output", False)) if isinstance(parameters, dict) else False)


def _loads(text: bytes) -> Any:
    """JSON ``text`` parsed by orjson (a tensor sent as JSON: 2.0 -> 0.34 ms for 3x64x64 values), else
    by the standard library, which also reads the ``NaN`` and ``Infinity`` that Python's ``json``
    writes and integers past 64 bits, and words the error."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def decode_input(tensor: Any, binary: memoryview) -> tuple[str, np.ndarray, int]:
    """One input: ``(name, array, binary bytes used)``."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise InputError("each input needs a 'name', 'datatype' and 'shape'")
    name, kind, shape = tensor["name"], tensor.get("datatype"), tensor.get("shape")
    if kind not in DATATYPES:
        raise InputError(f"input '{name}' has datatype {kind!r}; known: {', '.join(DATATYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise InputError(f"input '{name}' has shape {shape!r}: a list of non-negative integers is needed")
    count = int(np.prod(shape, dtype=np.int64))
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise InputError(f"input '{name}' claims {size!r} bytes of binary data, {len(binary)} remain")
        return name, tensor_from_bytes(bytes(binary[:size]), kind, shape, name), size
    if "data" not in tensor:
        raise InputError(f"input '{name}' has neither 'data' nor binary data")
    try:
        data = np.asarray(tensor["data"], dtype=object if kind == "BYTES" else DATATYPES[kind])
    except (TypeError, ValueError, OverflowError) as err:
        raise InputError(f"input '{name}': data is not {kind}: {err}") from None
    if data.size != count:
        raise InputError(f"input '{name}' has {data.size} values for shape {shape} ({count} needed)")
    if kind == "BYTES":
        data = np.array([v.encode() if isinstance(v, str) else v for v in data.ravel()], dtype=object)
    return name, data.reshape(shape), 0


def tensor_from_bytes(raw: bytes, kind: str, shape: list[int], name: str) -> np.ndarray:
    """A tensor's binary data (little-endian, row-major; BYTES length-prefixed) -> array of ``shape``."""
    count = int(np.prod(shape, dtype=np.int64))
    if kind == "BYTES":
        return decode_bytes(raw, count, name).reshape(shape)
    dtype = DATATYPES[kind]
    if len(raw) != count * dtype.itemsize:
        raise InputError(f"input '{name}' has {len(raw)} bytes of binary data; "
                         f"{count} {kind} values need {count * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def tensor_bytes(array: np.ndarray) -> bytes:
    """An array's binary data as the protocol sends it (the inverse of :func:`tensor_from_bytes`)."""
    if datatype(array.dtype) == "BYTES":
        return encode_bytes(array)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def decode_bytes(raw: bytes, count: int, name: str = "tensor") -> np.ndarray:
    """Length-prefixed BYTES elements -> object array of ``count`` ``bytes``."""
    values, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise InputError(f"input '{name}': BYTES data ends before its {count} elements")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InputError(f"input '{name}': a BYTES element runs past the end of the data")
        values.append(raw[offset:offset + length])
        offset += length
    if offset != len(raw):
        raise InputError(f"input '{name}': {len(raw) - offset} bytes follow its {count} BYTES elements")
    return np.array(values, dtype=object)


def encode_bytes(array: np.ndarray) -> bytes:
    """Object/str/bytes array -> length-prefixed BYTES elements (row-major)."""
    parts = []
    for value in array.ravel():
        value = value.encode() if isinstance(value, str) else bytes(value)
        parts += [struct.pack("<I", len(value)), value]
    return b"".join(parts)


def wanted_outputs(model: str, request: InferRequest, outputs: dict[str, np.ndarray]) -> dict[str, bool]:
    """Output name -> whether it goes back in binary, as the request asks (:class:`InputError` for
    an output the model lacks); ``outputs`` holds every output of the model."""
    wanted = request.outputs if request.outputs is not None else {
        name: request.binary_by_default for name in outputs}
    unknown = sorted(set(wanted) - set(outputs))
    if unknown:
        raise InputError(f"model '{model}' has no output {', '.join(map(str, unknown))}",
                         fix=f"its outputs are: {', '.join(outputs)}")
    return wanted


def encode_infer_response(model: str, request: InferRequest, outputs: dict[str, np.ndarray]) -> tuple[bytes, dict]:
    """The response body and its headers; ``outputs`` holds every output of the model."""
    wanted = wanted_outputs(model, request, outputs)
    tensors, chunks = [], []
    for name, binary in wanted.items():
        array = outputs[name]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype(array.dtype), "shape": list(array.shape)}
        if binary:
            raw = tensor_bytes(array)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = [v.decode(errors="replace") if isinstance(v, bytes) else v
                              for v in array.ravel().tolist()]
        tensors.append(tensor)
    header = {"model_name": model, "model_version": "1", "outputs": tensors}
    if request.id is not None:
        header["id"] = request.id
    body = orjson.dumps(header)  # compact; a NaN or infinity is null, as JSON has no such numbers
    if not chunks:
        return body, {"content-type": "application/json"}
    return body + b"".join(chunks), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(body))}


def check_infer_inputs(model: "ServedModel", request: InferRequest) -> np.ndarray:
    """The model input rows from a v2 request (:class:`InputError` naming any mismatch)."""
    spec = model.input
    if set(request.inputs) != {spec.name}:
        raise InputError(f"model '{model.name}' takes one input '{spec.name}', got {sorted(request.inputs)}")
    array, kind, want_kind = request.inputs[spec.name], request.datatypes[spec.name], datatype(spec.dtype)
    if kind != want_kind:
        raise InputError(f"input '{spec.name}' must be {want_kind}, got {kind}")
    want = shape_with_batch(spec)
    if array.ndim != len(want) or any(w >= 0 and g != w for g, w in zip(array.shape[1:], want[1:])):
        raise InputError(f"input '{spec.name}' has shape {list(array.shape)}, expected {want} (-1: any)")
    if not 1 <= array.shape[0] <= model.max_batch_size:
        raise InputError(f"a batch of {array.shape[0]} is outside [1, {model.max_batch_size}], this model's batch sizes")
    return np.ascontiguousarray(array)
