"""The one image decoder (runtime.images.load_image): limits before work, orientation, modes, errors."""
from __future__ import annotations

import io
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from conftest import require_or_skip
from visionrt.runtime import images
from visionrt.runtime.errors import InputError
from visionrt.runtime.images import load_image

# pytest resets warning filters per test, undoing the one runtime.images installs: PIL's EXIF
# warnings would show up in pytest's summary here (a fresh process prints nothing: tested below).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_file_size_is_checked_before_reading(tmp_path):
    path = tmp_path / "huge.png"
    with open(path, "wb") as f:
        f.truncate(8 * 1024 ** 3)  # sparse: 8 GiB by stat, no disk used; reading it would take 8 GiB of memory
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"8192\.0 MiB: larger than the 64\.0 MiB limit.*max_bytes="):
        load_image(path)
    assert time.perf_counter() - start < 1.0


def test_byte_limit_is_configurable(tmp_path, monkeypatch):
    data = encode(Image.new("RGB", (32, 32)))
    path = tmp_path / "small.png"
    path.write_bytes(data)
    with pytest.raises(InputError, match="MiB limit"):
        load_image(path, max_bytes=len(data) - 1)
    with pytest.raises(InputError, match="image bytes is .* MiB limit"):
        load_image(bytearray(data), max_bytes=len(data) - 1)
    monkeypatch.setattr(images, "MAX_FILE_BYTES", len(data) - 1)
    with pytest.raises(InputError, match="MAX_FILE_BYTES"):
        load_image(path)
    assert load_image(path, max_bytes=len(data)).shape == (32, 32, 3)


def test_pixel_limit_reads_only_the_header(monkeypatch):
    data = encode(Image.new("L", (3000, 2000)))  # 6 MP, compresses to a few kB

    def no_decoding(self):
        raise AssertionError("pixels were decoded before the limit was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(InputError, match=r"3000×2000 = 6\.0 MP: larger than the 5\.0 MP limit.*max_pixels="):
        load_image(data, max_pixels=5_000_000)
    monkeypatch.setattr(images, "MAX_PIXELS", 5_000_000)
    with pytest.raises(InputError, match="MAX_PIXELS"):
        load_image(data)
    with pytest.raises(InputError, match="MP limit"):
        load_image(np.zeros((3000, 2000, 3), np.uint8))


def test_exif_orientation_is_applied_in_runtime_and_training(tmp_path):
    pixels = np.zeros((8, 16, 3), np.uint8)  # stored 16 wide, 8 high: left half red, right half blue
    pixels[:, :8] = (255, 0, 0)
    pixels[:, 8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer rotates 90° clockwise
    path = tmp_path / "phone.png"
    path.write_bytes(encode(Image.fromarray(pixels), exif=exif))
    shown = load_image(path)
    assert shown.shape == (16, 8, 3)
    assert tuple(shown[0, 0]) == (255, 0, 0) and tuple(shown[-1, 0]) == (0, 0, 255)  # left went to the top
    photos = require_or_skip("visionrt.train.data.photos", reason="training reads images (train extra)")
    np.testing.assert_array_equal(photos.read_png(path), shown)


@pytest.mark.parametrize("dtype, fmt", [("<u2", "PNG"), (">u2", "TIFF"), ("<i4", "TIFF")])
def test_16_bit_gray_is_scaled_not_clipped(dtype, fmt):
    values = np.array([0, 257, 257 * 128, 65535, 1000], np.uint32)
    image = Image.fromarray(np.tile(values, (8, 2)).astype(dtype))
    assert image.mode in ("I;16", "I;16B", "I")
    rgb = load_image(encode(image, fmt))
    np.testing.assert_array_equal(rgb[0, :5, 0], [0, 1, 128, 255, 4])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_transparency_is_composited_on_white():
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.putpixel((0, 0), 0)
    for data in (encode(palette, transparency=0), encode(palette, "GIF", transparency=0)):
        rgb = load_image(data)
        assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[1, 1]) == (200, 10, 10)
    half = Image.new("LA", (8, 8), (0, 128))  # black at half opacity over white -> mid gray
    assert tuple(load_image(encode(half))[0, 0]) == (127, 127, 127)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 64
    from_file, from_array = load_image(encode(Image.fromarray(rgba))), load_image(rgba)
    np.testing.assert_array_equal(from_file, from_array)  # one rule for files and arrays
    assert tuple(from_array[0, 0]) == (255, 191, 191)


@pytest.mark.parametrize("mode, fmt, expected", [
    ("1", "PNG", (255, 255, 255)),
    ("CMYK", "JPEG", None),
    ("L", "BMP", (77, 77, 77)),
    ("RGB", "WEBP", None),
])
def test_other_modes_become_rgb(mode, fmt, expected):
    colour = {"1": 1, "CMYK": (0, 255, 255, 0), "L": 77, "RGB": (200, 30, 30)}[mode]
    rgb = load_image(encode(Image.new(mode, (16, 16), colour), fmt))
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    if expected:
        assert tuple(rgb[0, 0]) == expected
    else:
        assert rgb[0, 0, 0] > 150 and rgb[0, 0, 1] < 80  # red


def test_float_images_are_refused():
    with pytest.raises(InputError, match="floating-point"):
        load_image(encode(Image.new("F", (16, 16), 0.5), "TIFF"))


def test_bytes_like_sources_agree():
    data = encode(Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)))
    expected = load_image(data)
    for source in (bytearray(data), memoryview(data), memoryview(bytearray(data))):
        np.testing.assert_array_equal(load_image(source), expected)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_truncated_files_are_refused(fmt):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    data = encode(Image.fromarray(noise).convert("P") if fmt == "GIF" else Image.fromarray(noise), fmt)
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(data[: len(data) * 2 // 3])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_paths_that_cannot_be_opened(tmp_path):
    with pytest.raises(InputError, match="cannot read image file"):
        load_image("x" * 5000 + ".png")
    with pytest.raises(InputError, match="does not exist"):
        load_image("bad\0name.png")
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path)
    with pytest.raises(InputError, match="cannot read an image from int"):
        load_image(3)


def test_decoding_prints_nothing_and_bombs_are_errors(tmp_path):
    """Run in a fresh interpreter: pytest resets warning filters around each test."""
    corrupt_exif = tmp_path / "exif.jpg"
    corrupt_exif.write_bytes(encode(Image.new("RGB", (16, 16)), "JPEG",
                                    exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff\x12\x01\x03\x00"))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(encode(Image.new("1", (10_000, 10_000))))  # 100 MP: over Pillow's warning threshold
    script = (
        "import sys\n"
        "from visionrt.runtime.images import load_image\n"
        "from visionrt.runtime.errors import InputError\n"
        f"print(load_image({str(corrupt_exif)!r}).shape)\n"
        "try:\n"
        f"    load_image({str(bomb)!r}, max_pixels=200_000_000)\n"
        "except InputError as err:\n"
        "    print('refused:', err)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines()[0] == "(16, 16, 3)"
    assert "refused:" in done.stdout and "MAX_IMAGE_PIXELS" in done.stdout


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=512),
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"RIFF"]).flatmap(
        lambda magic: st.binary(max_size=512).map(lambda rest: magic + rest)),
))
def test_random_bytes_raise_only_input_error(data):
    try:
        load_image(data)
    except InputError:
        pass


@st.composite
def small_images(draw):
    mode = draw(st.sampled_from(["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "CMYK"]))
    fmt = draw(st.sampled_from({"1": ["PNG", "BMP", "TIFF"], "CMYK": ["JPEG", "TIFF"], "I;16": ["PNG", "TIFF"],
                                "LA": ["PNG"], "RGBA": ["PNG", "TIFF", "WEBP"], "P": ["PNG", "BMP", "TIFF", "GIF"]}.get(mode, ["PNG", "BMP", "TIFF", "JPEG"])))
    width, height = draw(st.integers(8, 40)), draw(st.integers(8, 40))
    seed = draw(st.integers(0, 2 ** 16))
    pixels = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 4), np.uint8), "RGBA")
    image = pixels.convert("RGB").convert("P") if mode == "P" else pixels.convert(mode) if mode != "I;16" else \
        Image.fromarray(np.asarray(pixels)[..., 0].astype(np.uint16) * 257)
    return encode(image, fmt), (height, width, 3)


@settings(max_examples=150, deadline=None)
@given(small_images())
def test_valid_small_images_round_trip_shape_and_dtype(case):
    data, shape = case
    rgb = load_image(data)
    assert rgb.shape == shape and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
