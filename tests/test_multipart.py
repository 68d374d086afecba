"""The predict endpoint's multipart reader: the file parts of forms as httpx (and browsers) write
them, in order, and one-line errors for forms that are not."""
from __future__ import annotations

import pytest
from conftest import require_or_skip

require_or_skip("python_multipart", reason="needs the serve extra")
httpx = require_or_skip("httpx")

from visionrt.runtime.errors import InputError  # noqa: E402
from visionrt.runtime.server.multipart import form_files  # noqa: E402


def form(files, data=None) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://form.invalid/", files=files, data=data)
    return request.read(), request.headers["content-type"]


def test_file_parts_in_order_fields_skipped_bytes_untouched():
    tricky = b"\r\n--not-the-boundary\r\n\r\n\x00\xff"
    body, content_type = form([("image", ("a.png", tricky, "image/png")), ("image", ("b.jpg", b"JPEG", "image/jpeg")),
                               ("other", ("c", b"", "application/octet-stream"))], data={"filename": "not a file"})
    assert b'name="filename"' in body  # a field named like the parameter is still not a file
    assert form_files(body, content_type) == [tricky, b"JPEG", b""]


@pytest.mark.parametrize("damage, words", [
    (lambda body, ct: (body, "multipart/form-data"), "no boundary"),
    (lambda body, ct: (body[:-8], ct), "not closed"),
    (lambda body, ct: (body.replace(b"\r\n\r\n", b"\n\n", 1), ct), "malformed"),
])
def test_broken_forms_are_one_line_input_errors(damage, words):
    body, content_type = damage(*form([("image", ("a.png", b"PNG", "image/png"))]))
    with pytest.raises(InputError, match=words) as caught:
        form_files(body, content_type)
    assert "\n" not in str(caught.value)
