"""How a failed request is answered, whichever protocol carried it: the HTTP status and the
metrics' failure reason of each exception, and its one-line message (HTTP's ``{"error": ...}``
answer, :func:`error_response`; gRPC's status details)."""
from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from ..errors import InputError, VisionRTError
from .batcher import DeadlineExceeded, QueueFull, ShuttingDown
from .limits import BodyTooLarge
from .repository import UnknownModel

log = logging.getLogger(__name__)

#: Seconds a client is told to wait before retrying after a 503.
RETRY_AFTER_S = 1

#: exception -> (HTTP status, failure reason for the metrics); the first matching class wins
FAILURES: tuple[tuple[type[BaseException], int, str], ...] = (
    (BodyTooLarge, 413, "too_large"),
    (UnknownModel, 404, "bad_input"),
    (InputError, 400, "bad_input"),
    (QueueFull, 503, "queue_full"),
    (ShuttingDown, 503, "queue_full"),
    (DeadlineExceeded, 504, "timeout"),
    (ClientDisconnect, 499, "disconnected"),
)


def failure(err: BaseException) -> tuple[int, str]:
    """(HTTP status, metrics failure reason) of ``err``; 500 ``internal`` for anything unforeseen."""
    for kind, status, reason in FAILURES:
        if isinstance(err, kind):
            return status, reason
    return 500, "internal"


def error_message(err: BaseException) -> str:
    """The one-line message of a failed request (logged when it is an internal error)."""
    message = str(err) if isinstance(err, VisionRTError) else f"internal error: {type(err).__name__}: {err}"
    if failure(err)[0] == 500:
        log.error("request failed: %s", message, exc_info=not isinstance(err, VisionRTError))
    return message


def error_response(err: BaseException) -> JSONResponse:
    """The HTTP answer to ``err``: its status, ``{"error": message}``, and ``Retry-After`` with a 503."""
    status, _ = failure(err)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": error_message(err)}, status_code=status, headers=headers)
