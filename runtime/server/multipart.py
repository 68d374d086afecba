"""The files of a ``multipart/form-data`` body (RFC 7578), split in one pass over the bytes.

The predict endpoint only needs each file part's bytes, in order: splitting on the boundary
(C-speed ``bytes.split``) costs a fraction of a streaming form parser that spools each file to
a temporary file (Starlette's, over python-multipart: a fifth of the server's Python time at
eight images a request, benchmarks/README.md). The Content-Type's boundary is read with
python-multipart's ``parse_options_header``; the body is already bounded by ``--max-body-mb``.
"""
from __future__ import annotations

import re

from python_multipart.multipart import parse_options_header

from ..errors import InputError

_FIX = "send a multipart/form-data body as browsers and HTTP clients write it"
#: A file part's header line: ``Content-Disposition: form-data; name="..."; filename="..."``.
_FILE_PART = re.compile(rb'(?i)content-disposition\s*:[^\r\n]*;\s*filename\*?\s*=')


def form_files(body: bytes, content_type: str) -> list[bytes]:
    """The contents of the parts with a ``filename`` (file fields), in order; :class:`InputError`
    for a form without a boundary, a part without a header, or a form that is not closed."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InputError("the multipart form has no boundary in its Content-Type", fix=_FIX)
    parts = body.split(b"--" + boundary)
    if len(parts) < 2 or not parts[-1].startswith(b"--"):
        raise InputError("the multipart form is not closed by its final boundary", fix=_FIX)
    files = []
    for part in parts[1:-1]:
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"\r\n") or not content.endswith(b"\r\n"):
            raise InputError("a part of the multipart form is malformed (no header, or no line end)", fix=_FIX)
        if _FILE_PART.search(head):
            files.append(content[:-2])
    return files
