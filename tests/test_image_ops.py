"""The image adapter on real pictures: identification, every operation, every output format.

Sources are made here with known pixels (``tests.media``), so each test checks where the
colours land, the exact sizes and what the encoded bytes decode to."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageOps

from gql_media.adapters import image_ops
from gql_media.adapters.image_ops import (
    AutoOrient,
    Crop,
    ImageWatermark,
    Operation,
    Output,
    ProcessedImage,
    Resize,
    Rotate,
    TextWatermark,
    Thumbnail,
    Variant,
)
from gql_media.errors import ErrorCode, MediaError
from tests.media import (
    animated_gif,
    animation,
    blank_png,
    damaged_png,
    encoded,
    gif_with_broken_frame,
    jpeg,
    png_with_alpha,
    quadrants,
)

MAX_PIXELS = 50_000_000
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
GREY = (40, 40, 40)
# quadrants() as a viewer shows it after each EXIF orientation: top-left, top-right,
# bottom-left, bottom-right
ORIENTED = {
    1: (RED, GREEN, BLUE, WHITE),
    3: (WHITE, BLUE, GREEN, RED),
    6: (BLUE, RED, WHITE, GREEN),
    8: (GREEN, WHITE, RED, BLUE),
}


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def process(
    source: Path,
    *operations: Operation,
    output: Output | None = None,
    max_pixels: int = MAX_PIXELS,
) -> tuple[ProcessedImage, Image.Image]:
    """One variant of ``source``, and its bytes decoded."""
    variant = Variant("out", operations, output or Output())
    [result] = image_ops.process_image(source, [variant], max_pixels)
    image = decode(result.data)
    assert (result.width, result.height) == image.size
    return result, image


def corners(image: Image.Image, inset: int = 4) -> list[tuple[int, ...]]:
    """RGB just inside the top-left, top-right, bottom-left and bottom-right corners."""
    rgb = image.convert("RGB")
    right, bottom = image.width - 1 - inset, image.height - 1 - inset
    points = ((inset, inset), (right, inset), (inset, bottom), (right, bottom))
    return [rgb.getpixel(point) for point in points]  # type: ignore[misc]


def assert_near(actual: object, expected: Sequence[int], tolerance: int = 6) -> None:
    assert isinstance(actual, tuple), actual
    assert len(actual) >= len(expected), (actual, expected)
    close = all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=False))
    assert close, f"{actual} is not within {tolerance} of {expected}"


def assert_corners(
    image: Image.Image, expected: Sequence[Sequence[int]], tolerance: int = 6
) -> None:
    for actual, colour in zip(corners(image), expected, strict=True):
        assert_near(actual, colour, tolerance)


@contextmanager
def fails_with(code: ErrorCode) -> Iterator[None]:
    with pytest.raises(MediaError) as caught:
        yield
    assert caught.value.code == code, caught.value


@pytest.fixture
def landscape(tmp_path: Path) -> Path:
    """400x200 quadrants, lossless: red, green / blue, white."""
    return write(tmp_path, "landscape.png", encoded(quadrants(400, 200), "PNG"))


# identification


@pytest.mark.parametrize(
    ("fmt", "name", "content_type"),
    [
        ("JPEG", "photo.png", "image/jpeg"),
        ("PNG", "x.jpg", "image/png"),
        ("GIF", "x.webp", "image/gif"),
        ("WEBP", "x.gif", "image/webp"),
        ("AVIF", "x.png", "image/avif"),
        ("TIFF", "x.jpg", "image/tiff"),
        ("BMP", "x", "image/bmp"),
    ],
)
def test_probe_identifies_the_format_by_content(
    tmp_path: Path, fmt: str, name: str, content_type: str
) -> None:
    path = write(tmp_path, name, encoded(quadrants(40, 30), fmt))

    info = image_ops.probe_image(path, MAX_PIXELS)

    assert (info.format, info.content_type) == (fmt, content_type)
    assert (info.width, info.height, info.frames, info.orientation) == (40, 30, 1, 1)


@pytest.mark.parametrize(
    ("orientation", "size"),
    [(None, (640, 480)), (1, (640, 480)), (3, (640, 480)), (6, (480, 640)), (8, (480, 640))],
)
def test_probe_reports_the_displayed_size(
    tmp_path: Path, orientation: int | None, size: tuple[int, int]
) -> None:
    path = write(tmp_path, "photo.jpg", jpeg(640, 480, orientation))

    info = image_ops.probe_image(path, MAX_PIXELS)

    assert (info.width, info.height) == size
    assert info.orientation == (orientation or 1)


def test_probe_counts_the_frames_of_an_animation(tmp_path: Path) -> None:
    path = write(tmp_path, "anim.gif", animated_gif(frames=5, size=(30, 20)))

    info = image_ops.probe_image(path, MAX_PIXELS)

    assert (info.format, info.frames, info.width, info.height) == ("GIF", 5, 30, 20)


@pytest.mark.parametrize(
    "data",
    [b"just some text\n" * 20, b"", b"%PDF-1.7\n", b"\x00\x00\x00\x18ftypheic"],
    ids=["text", "empty", "pdf", "heic"],
)
def test_probe_refuses_what_is_not_a_supported_image(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, "picture.png", data)
    with fails_with(ErrorCode.UNSUPPORTED_MEDIA_TYPE):
        image_ops.probe_image(path, MAX_PIXELS)


def _damaged() -> list[object]:
    png = encoded(quadrants(300, 200), "PNG")
    photo = jpeg(640, 480)
    garbage = bytes(range(256)) * 4
    return [
        pytest.param(b"\x89PNG\r\n\x1a\n" + garbage, id="png-signature-then-garbage"),
        pytest.param(png[: len(png) // 2], id="truncated-png"),
        pytest.param(photo[: len(photo) // 2], id="truncated-jpeg"),
        pytest.param(b"GIF89a" + garbage, id="gif-signature-then-garbage"),
        # sound headers (signature, IHDR, IEND with correct CRCs), an IDAT that is no zlib
        # stream: a decode that failed once must not come back as a black picture
        pytest.param(damaged_png(300, 200), id="png-idat-not-zlib"),
        pytest.param(gif_with_broken_frame(5, broken=2), id="gif-broken-middle-frame"),
    ]


@pytest.mark.parametrize("data", _damaged())
def test_damaged_images_are_corrupt(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, "damaged", data)
    with fails_with(ErrorCode.MEDIA_CORRUPT):
        image_ops.probe_image(path, MAX_PIXELS)
    with fails_with(ErrorCode.MEDIA_CORRUPT):
        image_ops.process_image(path, [Variant("thumb", (Thumbnail(64),))], MAX_PIXELS)


def test_the_pixel_limit_is_decided_from_the_header(tmp_path: Path) -> None:
    # only a header: decoding it would find no pixel data at all
    path = write(tmp_path, "huge.png", blank_png(30_000, 30_000, pixel_data=False))
    with fails_with(ErrorCode.TOO_MANY_PIXELS):
        image_ops.probe_image(path, MAX_PIXELS)
    with fails_with(ErrorCode.TOO_MANY_PIXELS):
        image_ops.process_image(path, [Variant("thumb", (Thumbnail(64),))], MAX_PIXELS)


def test_the_pixel_limit_is_inclusive(tmp_path: Path) -> None:
    path = write(tmp_path, "small.png", encoded(quadrants(100, 100), "PNG"))

    assert image_ops.probe_image(path, max_pixels=10_000).width == 100
    with fails_with(ErrorCode.TOO_MANY_PIXELS):
        image_ops.probe_image(path, max_pixels=9_999)


@pytest.mark.parametrize(
    ("side", "max_pixels"),
    [
        (20_000, MAX_PIXELS),  # past Pillow's own bomb limit too
        (20_000, 10**9),  # a generous limit still meets Pillow's
        (10_000, MAX_PIXELS),  # where Pillow only warns
    ],
)
def test_a_decompression_bomb_is_refused(tmp_path: Path, side: int, max_pixels: int) -> None:
    data = blank_png(side, side)
    assert len(data) < 100_000
    path = write(tmp_path, "bomb.png", data)
    with fails_with(ErrorCode.TOO_MANY_PIXELS):
        image_ops.probe_image(path, max_pixels)


def test_an_operation_may_not_exceed_the_pixel_limit(landscape: Path) -> None:
    grow = Resize(4000, 2000, fit="fill", upscale=True)
    with fails_with(ErrorCode.TOO_MANY_PIXELS):
        process(landscape, grow, max_pixels=1_000_000)
    with fails_with(ErrorCode.TOO_MANY_PIXELS):
        process(landscape, Rotate(45), max_pixels=100_000)


# resizing


@pytest.mark.parametrize(
    ("resize", "size"),
    [
        (Resize(100, 100, "contain"), (100, 100)),
        (Resize(100, 100, "cover"), (100, 100)),
        (Resize(100, 100, "fill"), (100, 100)),
        (Resize(100, 100, "inside"), (100, 50)),
        (Resize(100, None, "contain"), (100, 50)),
        (Resize(None, 50, "inside"), (100, 50)),
        (Resize(None, 100, "cover"), (200, 100)),
        (Resize(100, None, "fill"), (100, 200)),
        # never enlarged unless asked
        (Resize(800, 800, "cover"), (400, 200)),
        (Resize(800, 800, "fill"), (400, 200)),
        (Resize(800, 800, "inside"), (400, 200)),
        (Resize(800, None, "contain"), (400, 200)),
        (Resize(800, 800, "cover", upscale=True), (800, 800)),
        (Resize(800, 800, "fill", upscale=True), (800, 800)),
        (Resize(800, None, "contain", upscale=True), (800, 400)),
        # inside never enlarges, even when asked
        (Resize(800, 800, "inside", upscale=True), (400, 200)),
    ],
    ids=repr,
)
def test_resize_sizes(landscape: Path, resize: Resize, size: tuple[int, int]) -> None:
    result, image = process(landscape, resize)
    assert image.size == size
    assert result.content_type == "image/png"


def test_contain_letterboxes_into_the_box_with_transparent_padding(landscape: Path) -> None:
    _, image = process(landscape, Resize(100, 100, "contain"))

    assert image.mode == "RGBA"
    # the 100x50 picture sits in the middle; bands of 25 above and below are transparent
    assert image.getchannel("A").getbbox() == (0, 25, 100, 75)
    assert image.getpixel((50, 5)) == (0, 0, 0, 0)
    assert image.getpixel((50, 94)) == (0, 0, 0, 0)
    for point, colour in (((10, 35), RED), ((90, 35), GREEN), ((10, 65), BLUE), ((90, 65), WHITE)):
        assert_near(image.getpixel(point), (*colour, 255))


def test_contain_pads_a_small_picture_without_enlarging_it(landscape: Path) -> None:
    _, image = process(landscape, Resize(800, 800, "contain"))

    assert image.size == (800, 800)
    assert image.getchannel("A").getbbox() == (200, 300, 600, 500)
    picture = image.crop((200, 300, 600, 500)).convert("RGB")
    assert picture.tobytes() == quadrants(400, 200).tobytes()


def test_cover_fills_the_box_and_crops_the_centre(landscape: Path) -> None:
    # 400x200 scales to 200x100, then 50 columns go on each side
    _, image = process(landscape, Resize(100, 100, "cover"))

    assert image.size == (100, 100)
    assert_corners(image, (RED, GREEN, BLUE, WHITE))
    # the quadrants meet in the middle only if the crop was centred
    assert_near(image.getpixel((44, 25)), RED)
    assert_near(image.getpixel((56, 25)), GREEN)
    assert_near(image.getpixel((44, 75)), BLUE)
    assert_near(image.getpixel((56, 75)), WHITE)


def test_cover_crops_tall_pictures_top_and_bottom(tmp_path: Path) -> None:
    tall = write(tmp_path, "tall.png", encoded(quadrants(100, 400), "PNG"))

    _, image = process(tall, Resize(100, 100, "cover"))

    assert image.size == (100, 100)
    assert_corners(image, (RED, GREEN, BLUE, WHITE))
    assert_near(image.getpixel((25, 44)), RED)
    assert_near(image.getpixel((25, 56)), BLUE)


def test_fill_stretches_to_the_box(landscape: Path) -> None:
    # a quarter of the width, three quarters of the height
    _, image = process(landscape, Resize(100, 150, "fill"))

    assert image.size == (100, 150)
    assert_corners(image, (RED, GREEN, BLUE, WHITE))
    assert_near(image.getpixel((44, 70)), RED)
    assert_near(image.getpixel((56, 70)), GREEN)
    assert_near(image.getpixel((44, 80)), BLUE)


def test_thumbnail_keeps_the_aspect_and_never_enlarges(tmp_path: Path, landscape: Path) -> None:
    assert process(landscape, Thumbnail(100))[1].size == (100, 50)
    assert process(landscape, Thumbnail(1000))[1].size == (400, 200)

    portrait = write(tmp_path, "portrait.jpg", jpeg(640, 480, orientation=6))
    _, image = process(portrait, Thumbnail(64))
    assert image.size == (48, 64)
    assert_corners(image, ORIENTED[6], tolerance=12)


@pytest.mark.parametrize(
    ("left", "top", "colour"),
    [(0, 0, RED), (200, 0, GREEN), (0, 100, BLUE), (200, 100, WHITE)],
)
def test_crop_picks_the_quadrant(
    landscape: Path, left: int, top: int, colour: tuple[int, int, int]
) -> None:
    _, image = process(landscape, Crop(left, top, 200, 100))

    assert image.size == (200, 100)
    assert image.convert("RGB").getcolors() == [(200 * 100, colour)]


def test_crop_after_resize_works_on_the_resized_picture(landscape: Path) -> None:
    _, image = process(landscape, Resize(200, 100), Crop(100, 50, 100, 50))

    assert image.size == (100, 50)
    assert_near(image.convert("RGB").getpixel((50, 25)), WHITE)


@pytest.mark.parametrize(
    "crop",
    [
        Crop(400, 0, 10, 10),
        Crop(0, 200, 10, 10),
        Crop(1000, 1000, 5, 5),
        Crop(350, 150, 100, 100),  # overhangs the bottom-right corner
        Crop(0, 0, 401, 200),
    ],
    ids=repr,
)
def test_a_crop_outside_the_picture_fails(landscape: Path, crop: Crop) -> None:
    with fails_with(ErrorCode.PROCESSING_FAILED):
        process(landscape, crop)


@pytest.mark.parametrize(
    ("degrees", "size", "expected"),
    [
        (90, (200, 400), (BLUE, RED, WHITE, GREEN)),
        (-270, (200, 400), (BLUE, RED, WHITE, GREEN)),
        (180, (400, 200), (WHITE, BLUE, GREEN, RED)),
        (270, (200, 400), (GREEN, WHITE, RED, BLUE)),
        (-90, (200, 400), (GREEN, WHITE, RED, BLUE)),
        (360, (400, 200), (RED, GREEN, BLUE, WHITE)),
    ],
)
def test_rotate_quarter_turns_clockwise(
    landscape: Path,
    degrees: float,
    size: tuple[int, int],
    expected: Sequence[tuple[int, int, int]],
) -> None:
    _, image = process(landscape, Rotate(degrees))

    assert image.size == size
    assert_corners(image, expected, tolerance=0)


def test_rotate_by_an_angle_grows_the_canvas_and_fills_it(landscape: Path) -> None:
    _, image = process(landscape, Rotate(30, background="#0000ff"))

    # 400x200 turned 30°: 400 cos 30 + 200 sin 30 by 400 sin 30 + 200 cos 30
    assert abs(image.width - 446.4) <= 2
    assert abs(image.height - 373.2) <= 2
    assert image.mode == "RGB"
    for colour in corners(image, inset=0):
        assert colour == BLUE
    # the middles of the red and blue quadrants, (-100, -50) and (-100, 50) from the centre,
    # turned 30° clockwise about it
    middle_x, middle_y = image.width / 2, image.height / 2
    assert_near(image.getpixel((round(middle_x - 61.6), round(middle_y - 93.3))), RED, 2)
    assert_near(image.getpixel((round(middle_x - 111.6), round(middle_y - 6.7))), BLUE, 2)


def test_rotate_fills_with_transparency_by_default(landscape: Path) -> None:
    _, image = process(landscape, Rotate(30))

    assert image.mode == "RGBA"
    assert image.getpixel((0, 0)) == (0, 0, 0, 0)
    assert image.getpixel((image.width // 2, image.height // 2))[3] == 255  # type: ignore[index]


def test_rotate_without_expand_keeps_the_canvas(landscape: Path) -> None:
    _, image = process(landscape, Rotate(30, expand=False, background="white"))

    assert image.size == (400, 200)
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((0, 199)) == WHITE


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("operations", [(), (AutoOrient(),)], ids=["implicit", "autoOrient"])
def test_jpegs_are_turned_the_way_a_viewer_shows_them(
    tmp_path: Path, orientation: int, operations: tuple[Operation, ...]
) -> None:
    path = write(tmp_path, "photo.jpg", jpeg(64, 48, orientation))

    result, image = process(path, *operations)

    assert result.content_type == "image/jpeg"
    assert image.size == ((48, 64) if orientation in (6, 8) else (64, 48))
    assert_corners(image, ORIENTED[orientation])
    # the output carries no orientation that would turn it again
    assert image.getexif().get(0x0112, 1) == 1


# watermarks


def _changed(before: Image.Image, after: Image.Image) -> tuple[int, int, int, int] | None:
    return ImageChops.difference(before.convert("RGB"), after.convert("RGB")).getbbox()


@pytest.mark.parametrize(
    ("position", "region"),
    [
        ("bottom-right", (200, 200, 400 - 16, 300 - 16)),
        ("top-left", (16, 16, 200, 100)),
        ("top", (100, 16, 300, 100)),
        ("center", (100, 100, 300, 200)),
    ],
)
def test_text_watermark_changes_only_its_corner(
    tmp_path: Path, position: image_ops.Position, region: tuple[int, int, int, int]
) -> None:
    source = write(tmp_path, "grey.png", encoded(Image.new("RGB", (400, 300), GREY), "PNG"))
    _, plain = process(source)

    mark = TextWatermark("Sample", position=position, margin=16, opacity=1.0)
    _, marked = process(source, mark)

    changed = _changed(plain, marked)
    assert changed is not None
    left, top, right, bottom = changed
    assert region[0] <= left < right <= region[2], changed
    assert region[1] <= top < bottom <= region[3], changed
    # text about 5% of the height: 15 px, give or take the font's descent
    assert 6 <= bottom - top <= 24, changed


def test_text_watermark_opacity_blends(tmp_path: Path) -> None:
    source = write(tmp_path, "black.png", encoded(Image.new("RGB", (400, 300)), "PNG"))

    _, solid = process(source, TextWatermark("M", opacity=1.0, scale=0.3))
    _, faint = process(source, TextWatermark("M", opacity=0.5, scale=0.3))

    assert solid.convert("L").getextrema() == (0, 255)
    faint_low, faint_high = faint.convert("L").getextrema()
    assert faint_low == 0
    assert abs(int(faint_high) - 128) <= 2  # type: ignore[arg-type]


@pytest.fixture
def blue_canvas(tmp_path: Path) -> Path:
    return write(tmp_path, "blue.png", encoded(Image.new("RGB", (500, 400), BLUE), "PNG"))


@pytest.fixture
def red_mark(tmp_path: Path) -> Path:
    """Opaque red on the left half, transparent on the right."""
    return write(tmp_path, "mark.png", png_with_alpha(200, 100))


@pytest.mark.parametrize(
    ("opacity", "colour"),
    [(1.0, RED), (0.5, (128, 0, 127))],
)
def test_image_watermark_blends_by_its_opacity(
    blue_canvas: Path, red_mark: Path, opacity: float, colour: tuple[int, int, int]
) -> None:
    mark = ImageWatermark(red_mark, position="top-left", margin=10, opacity=opacity, scale=0.2)

    _, image = process(blue_canvas, mark)

    # the mark is scaled to 100x50 (a fifth of 500) and placed at (10, 10)
    assert_near(image.getpixel((30, 35)), colour, tolerance=2)
    assert image.getpixel((95, 35)) == BLUE  # its transparent half
    changed = _changed(Image.new("RGB", (500, 400), BLUE), image)
    assert changed is not None
    assert changed[:2] == (10, 10)
    assert changed[3] == 60
    assert 58 <= changed[2] <= 66  # the red half, plus resampling ringing


@pytest.mark.parametrize(
    ("position", "margin", "origin"),
    [
        ("bottom-right", 20, (500 - 100 - 20, 400 - 50 - 20)),
        ("top-right", 0, (400, 0)),
        ("bottom-left", 5, (5, 400 - 50 - 5)),
        ("center", 16, (200, 175)),
        ("left", 30, (30, 175)),
    ],
)
def test_image_watermark_placement(
    blue_canvas: Path,
    red_mark: Path,
    position: image_ops.Position,
    margin: int,
    origin: tuple[int, int],
) -> None:
    mark = ImageWatermark(red_mark, position=position, margin=margin, opacity=1.0, scale=0.2)

    _, image = process(blue_canvas, mark)

    changed = _changed(Image.new("RGB", (500, 400), BLUE), image)
    assert changed is not None
    assert changed[:2] == origin
    assert changed[3] == origin[1] + 50
    assert_near(image.getpixel((origin[0] + 20, origin[1] + 25)), RED, tolerance=1)


def test_image_watermark_must_be_an_image(blue_canvas: Path, tmp_path: Path) -> None:
    notes = write(tmp_path, "notes.txt", b"not a picture")
    with fails_with(ErrorCode.UNSUPPORTED_MEDIA_TYPE):
        process(blue_canvas, ImageWatermark(notes))


# outputs


@pytest.fixture
def half_transparent(tmp_path: Path) -> Path:
    return write(tmp_path, "alpha.png", png_with_alpha(200, 100))


def test_jpeg_output_flattens_transparency_onto_white(half_transparent: Path) -> None:
    result, image = process(half_transparent, output=Output("JPEG"))

    assert (result.content_type, image.format, image.mode) == ("image/jpeg", "JPEG", "RGB")
    assert_near(image.getpixel((20, 50)), RED, tolerance=3)
    assert_near(image.getpixel((180, 50)), WHITE, tolerance=1)


@pytest.mark.parametrize(
    ("fmt", "content_type", "tolerance"),
    [("PNG", "image/png", 0), ("WEBP", "image/webp", 3), ("AVIF", "image/avif", 3)],
)
def test_alpha_survives_formats_that_have_it(
    half_transparent: Path, fmt: str, content_type: str, tolerance: int
) -> None:
    result, image = process(half_transparent, output=Output(fmt))

    assert (result.content_type, image.format, image.mode) == (content_type, fmt, "RGBA")
    assert image.size == (200, 100)
    assert_near(image.getpixel((20, 50)), (*RED, 255), tolerance)
    assert image.getpixel((180, 50))[3] == 0  # type: ignore[index]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("JPEG", "JPEG"),
        ("PNG", "PNG"),
        ("WEBP", "WEBP"),
        ("AVIF", "AVIF"),
        ("GIF", "PNG"),
        ("BMP", "PNG"),
        ("TIFF", "PNG"),
    ],
)
def test_the_output_defaults_to_the_source_format(tmp_path: Path, fmt: str, expected: str) -> None:
    path = write(tmp_path, "source", encoded(quadrants(64, 48), fmt))

    result, image = process(path)

    assert image.format == expected
    assert result.content_type == image_ops.content_type_for(expected)
    assert_corners(image, (RED, GREEN, BLUE, WHITE), tolerance=8)


@pytest.fixture
def gradient(tmp_path: Path) -> Path:
    """Smooth tones, where quality shows in the size."""
    ramp = Image.linear_gradient("L").resize((600, 400))
    picture = Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.ROTATE_180), ramp))
    return write(tmp_path, "gradient.png", encoded(picture, "PNG"))


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "AVIF"])
def test_lower_quality_gives_fewer_bytes(gradient: Path, fmt: str) -> None:
    low, low_image = process(gradient, output=Output(fmt, quality=10))
    high, high_image = process(gradient, output=Output(fmt, quality=95))

    assert len(low.data) < len(high.data)
    assert low_image.format == high_image.format == fmt
    assert low_image.size == high_image.size == (600, 400)


def test_progressive_jpeg(gradient: Path) -> None:
    _, progressive = process(gradient, output=Output("JPEG", progressive=True))
    _, baseline = process(gradient, output=Output("JPEG"))

    assert progressive.info.get("progressive") or progressive.info.get("progression")
    assert not (baseline.info.get("progressive") or baseline.info.get("progression"))


XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF'
    b' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description'
    b' xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="Jane Doe"/></rdf:RDF></x:xmpmeta>'
)


@pytest.fixture
def tagged_photo(tmp_path: Path) -> Path:
    """A JPEG stored sideways (orientation 6) with an artist, a GPS position, XMP and a
    comment."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x013B] = "Jane Doe"
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 1.5)}
    data = encoded(
        quadrants(64, 48), "JPEG", quality=95, exif=exif, xmp=XMP, comment=b"secret place"
    )
    return write(tmp_path, "tagged.jpg", data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "AVIF"])
def test_metadata_is_stripped_by_default(tagged_photo: Path, fmt: str) -> None:
    result, image = process(tagged_photo, output=Output(fmt))

    assert dict(image.getexif()) == {}
    assert not {"exif", "xmp", "comment"} & set(image.info)
    for secret in (b"Jane Doe", b"secret place"):
        assert secret not in result.data
    assert image.size == (48, 64)
    assert_corners(image, ORIENTED[6])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_metadata_is_kept_when_asked_with_orientation_reset(tagged_photo: Path, fmt: str) -> None:
    _, image = process(tagged_photo, output=Output(fmt, strip_metadata=False))

    exif = image.getexif()
    assert exif[0x013B] == "Jane Doe"
    assert exif.get_ifd(0x8825)[1] == "N"
    assert exif[0x0112] == 1
    # already upright: a viewer that honours EXIF shows it as stored
    assert image.size == ImageOps.exif_transpose(image).size == (48, 64)
    assert_corners(image, ORIENTED[6])


def test_sixteen_bit_greyscale_keeps_its_tone(tmp_path: Path) -> None:
    deep = Image.new("I;16", (20, 20), 30_000)  # 30000 / 65535 of white: 117 of 255
    path = write(tmp_path, "deep.png", encoded(deep, "PNG"))

    _, image = process(path)

    assert image.mode == "L"
    assert abs(image.getpixel((10, 10)) - 117) <= 1  # type: ignore[operator]


# large JPEGs


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6000x4000 quadrants: 24 megapixels."""
    path = tmp_path_factory.mktemp("large") / "large.jpg"
    quadrants(6000, 4000).save(path, "JPEG", quality=80)
    return path


def test_a_thumbnail_of_a_large_jpeg_decodes_at_reduced_scale(large_jpeg: Path) -> None:
    thumbnail_only = [Variant("a", (Thumbnail(512),)), Variant("b", (Thumbnail(256),))]

    decoded = image_ops.decode_upright(large_jpeg, thumbnail_only, MAX_PIXELS)

    assert decoded.width <= 6000 // 4 and decoded.height <= 4000 // 4
    assert decoded.width >= 512 and decoded.height >= 341

    [result] = image_ops.process_image(large_jpeg, thumbnail_only[:1], MAX_PIXELS)
    image = decode(result.data)
    assert image.size == (512, 341)
    assert_corners(image, (RED, GREEN, BLUE, WHITE), tolerance=10)


def test_a_resize_decodes_only_as_large_as_it_needs(large_jpeg: Path) -> None:
    decoded = image_ops.decode_upright(large_jpeg, [Variant("web", (Resize(1000),))], MAX_PIXELS)

    assert decoded.size == (1500, 1000)


@pytest.mark.parametrize(
    "variants",
    [
        [Variant("crop", (Crop(0, 0, 10, 10),))],
        [Variant("thumb", (Thumbnail(512),)), Variant("crop", (Crop(0, 0, 10, 10),))],
        [Variant("copy")],
    ],
    ids=["crop", "thumbnail-and-crop", "no-operation"],
)
def test_a_variant_that_needs_every_pixel_decodes_full_size(
    large_jpeg: Path, variants: list[Variant]
) -> None:
    assert image_ops.decode_upright(large_jpeg, variants, MAX_PIXELS).size == (6000, 4000)


def test_a_large_sideways_jpeg_is_reduced_and_turned(tmp_path: Path) -> None:
    path = write(tmp_path, "sideways.jpg", jpeg(6000, 4000, orientation=6))
    variants = [Variant("thumb", (Thumbnail(512),))]

    decoded = image_ops.decode_upright(path, variants, MAX_PIXELS)
    assert decoded.width <= 4000 // 4 and decoded.height <= 6000 // 4
    assert decoded.height >= 512

    [result] = image_ops.process_image(path, variants, MAX_PIXELS)
    image = decode(result.data)
    assert image.size == (341, 512)
    assert_corners(image, ORIENTED[6], tolerance=10)


# animations

FRAME_COLOURS = (RED, GREEN, BLUE)
FRAME_DURATIONS = (100, 250, 40)


def frames(image: Image.Image) -> list[tuple[tuple[int, ...], int, tuple[int, int]]]:
    """(colour in the middle, duration, size) of every frame."""
    found = []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        image.load()
        middle = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
        assert isinstance(middle, tuple)
        found.append((middle, int(image.info.get("duration", 0)), image.size))
    return found


def assert_frames(image: Image.Image, size: tuple[int, int]) -> None:
    found = frames(image)
    assert len(found) == len(FRAME_COLOURS)
    for (colour, duration, frame_size), expected, expected_duration in zip(
        found, FRAME_COLOURS, FRAME_DURATIONS, strict=True
    ):
        assert_near(colour, expected, tolerance=4)
        assert duration == expected_duration
        assert frame_size == size


@pytest.fixture
def gif(tmp_path: Path) -> Path:
    return write(tmp_path, "anim.gif", animation(FRAME_COLOURS, FRAME_DURATIONS, (120, 80)))


@pytest.mark.parametrize("fmt", [None, "WEBP"])
def test_an_animated_gif_becomes_an_animated_webp(gif: Path, fmt: str | None) -> None:
    result, image = process(gif, output=Output(fmt))

    assert (result.content_type, image.format) == ("image/webp", "WEBP")
    assert getattr(image, "n_frames", 1) == 3
    assert_frames(image, (120, 80))


def test_every_frame_is_resized(gif: Path) -> None:
    result, image = process(gif, Resize(60), output=Output("WEBP"))

    assert (result.width, result.height) == (60, 40)
    assert_frames(image, (60, 40))


def test_every_frame_is_cropped_and_watermarked(gif: Path, red_mark: Path) -> None:
    mark = ImageWatermark(red_mark, position="top-left", margin=0, opacity=1.0, scale=1.0)
    _, image = process(gif, Crop(10, 10, 100, 60), mark, output=Output("PNG"))

    assert getattr(image, "n_frames", 1) == 3
    for index in range(3):
        image.seek(index)
        assert image.size == (100, 60)
        assert_near(image.convert("RGB").getpixel((5, 5)), RED, tolerance=1)  # the mark


def test_an_animated_png_stays_an_animated_png(tmp_path: Path) -> None:
    path = write(tmp_path, "anim.png", animation(FRAME_COLOURS, FRAME_DURATIONS, format="PNG"))
    assert image_ops.probe_image(path, MAX_PIXELS).frames == 3

    result, image = process(path)

    assert (result.content_type, image.format) == ("image/png", "PNG")
    assert_frames(image, (120, 80))


@pytest.mark.parametrize("fmt", ["JPEG", "AVIF"])
def test_a_still_format_takes_the_first_frame(gif: Path, fmt: str) -> None:
    result, image = process(gif, Resize(60), output=Output(fmt))

    assert image.format == fmt
    assert getattr(image, "n_frames", 1) == 1
    assert image.size == (result.width, result.height) == (60, 40)
    assert_near(image.convert("RGB").getpixel((30, 20)), RED, tolerance=4)


# variants and progress


def test_every_variant_in_order_with_progress_up_to_one(landscape: Path) -> None:
    reports: list[float] = []
    variants = [
        Variant("thumb", (Thumbnail(100),), Output("WEBP")),
        Variant("square", (Resize(50, 50, "cover"),), Output("JPEG")),
        Variant("same"),
    ]

    results = image_ops.process_image(landscape, variants, MAX_PIXELS, reports.append)

    assert [(r.name, r.content_type, r.width, r.height) for r in results] == [
        ("thumb", "image/webp", 100, 50),
        ("square", "image/jpeg", 50, 50),
        ("same", "image/png", 400, 200),
    ]
    assert reports == sorted(set(reports))
    assert reports[0] > 0
    assert reports[-1] == 1.0
    assert len(reports) == len(variants) + 1
