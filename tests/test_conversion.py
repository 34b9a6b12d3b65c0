"""One conversion path from file paths, PIL images and arrays to the sources the Fuser uses
(util.images.to_rgb8, ddfm.load_source): one rule per dtype and per image mode, the same for a
file and for the PIL image or array holding the same pixels; everything else is refused in one
ImageError line naming the input."""
import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from ddfm import Fuser, load_source
from util.images import ImageError, array_to_rgb8, peek_size, read_rgb, to_rgb8

RNG = np.random.default_rng(26)
GREY8 = RNG.integers(0, 256, (40, 48), dtype=np.uint8)
RGB8 = RNG.integers(0, 256, (40, 48, 3), dtype=np.uint8)
GREY16 = RNG.integers(0, 65536, (40, 48)).astype(np.uint16)


def refusal(image, name="ir") -> str:
    with pytest.raises(ImageError) as exc:
        load_source(image, name)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{name}: ")
    return message


def grey_of(rgb):
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    return rgb[..., 0]


def test_uint8_is_used_as_is():
    assert np.array_equal(grey_of(to_rgb8(GREY8)), GREY8)
    assert np.array_equal(to_rgb8(RGB8), RGB8)
    rgba = np.concatenate([RGB8, np.full((40, 48, 1), 9, np.uint8)], axis=2)
    assert np.array_equal(to_rgb8(rgba), RGB8)  # alpha dropped, as for RGBA files
    assert np.array_equal(grey_of(to_rgb8(GREY8[..., None])), GREY8)


def test_uint16_is_scaled_as_16_bit_files_are(tmp_path):
    """The same 16 bits as an array, a PIL image (I;16) and a PNG file give the same source:
    round(v / 257), so v = 257 k reads back as k exactly."""
    path = tmp_path / "grey16.png"
    Image.fromarray(GREY16).save(path)
    expected = np.round(GREY16 / 257.0).astype(np.uint8)
    from_file = load_source(path)
    assert np.array_equal(grey_of(from_file.rgb), expected)
    for image in (GREY16, Image.fromarray(GREY16)):
        source = load_source(image)
        assert np.array_equal(source.rgb, from_file.rgb) and np.array_equal(source.gray, from_file.gray)
    exact = (GREY8.astype(np.uint16) * 257)
    assert np.array_equal(grey_of(to_rgb8(exact)), GREY8)
    assert np.array_equal(to_rgb8(RGB8.astype(np.uint16) * 257), RGB8)


def test_other_integers_must_hold_8_bit_values():
    assert np.array_equal(grey_of(to_rgb8(GREY8.astype(np.int64))), GREY8)
    message = refusal(GREY8.astype(np.int32) * 4)
    assert "int32 values 0..1020 outside 0..255" in message and "uint16" in message
    assert "outside 0..255" in refusal(GREY8.astype(np.int16) - 1)


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_floats_are_refused_with_the_conversion_to_use(scale):
    """No fixed scale: 0..1 data read as 0..255 would be silently black."""
    message = refusal((GREY8 / 255.0 * scale).astype(np.float32))
    assert "floating-point float32 array, refused" in message
    assert "np.round(x * 255).astype(np.uint8)" in message


def test_a_nan_is_blamed_on_the_input_not_the_sampler():
    grey = GREY8.astype(np.float64)
    grey[3, 4] = np.nan
    message = refusal(grey, "vis")
    assert "NaN or infinite" in message and "seed" not in message


def test_float_pil_images_and_float_files_get_the_same_rule(tmp_path):
    image = Image.fromarray(GREY8.astype(np.float32))
    assert image.mode == "F"
    path = tmp_path / "float.tif"
    image.save(path)
    assert "floating-point image, refused" in refusal(image)
    assert "floating-point image, refused" in refusal(path, str(path))


@pytest.mark.parametrize("array, words", [
    (GREY8 > 100, "bool array, refused"),
    (GREY8.astype(np.complex64), "complex complex64 array"),
    (GREY8.astype(object), "object array, refused"),
    (np.zeros((2, 40, 48), np.uint8), "shape (2, 40, 48)"),
    (np.zeros((40, 48, 2), np.uint8), "shape (40, 48, 2)"),
    (np.zeros((0, 48), np.uint8), "empty array"),
])
def test_unusable_arrays_are_refused(array, words):
    assert words in refusal(array)


@pytest.mark.parametrize("value, kind", [([[1, 2], [3, 4]], "list"), (b"\x89PNG", "bytes"),
                                         (None, "NoneType"), (3, "int")])
def test_wrong_types_are_one_line_not_a_type_error(value, kind):
    assert refusal(value) == f"ir: expected a file path, a PIL image or a numpy array, got {kind}"


def test_the_fuser_refuses_bad_input_before_fusing():
    fuser = Fuser(diffusion_config=REPO / "configs" / "diffusion_config.yaml", prior="none", steps=2)
    with pytest.raises(ImageError) as exc:
        fuser(GREY8 / 255.0, GREY8)
    assert str(exc.value).startswith("ir: floating-point float64 array")
    assert fuser(GREY8, RGB8).shape == (32, 32)  # cropped to multiples of 32, as released


def orientation_png(path, array, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif.tobytes())


def test_exif_orientation_is_applied_to_files_and_pil_images_alike(tmp_path):
    """Orientation 6 (rotate 90 clockwise), as cv2.imread applies it (checked against
    opencv-python-headless 4.10.0.84 on all eight orientations)."""
    path = tmp_path / "turned.png"
    orientation_png(path, RGB8, 6)
    upright = np.rot90(RGB8, k=-1)
    assert np.array_equal(read_rgb(path), upright)
    with Image.open(path) as im:
        im.load()
        assert np.array_equal(to_rgb8(im), upright)
    assert peek_size(path) == upright.shape[:2]
    plain = tmp_path / "plain.png"
    orientation_png(plain, RGB8, 1)
    assert np.array_equal(read_rgb(plain), RGB8)


@pytest.mark.parametrize("orientation, turn", [(2, lambda a: a[:, ::-1]), (3, lambda a: a[::-1, ::-1]),
                                               (4, lambda a: a[::-1]), (5, lambda a: a.transpose(1, 0, 2)),
                                               (7, lambda a: a[::-1, ::-1].transpose(1, 0, 2)),
                                               (8, lambda a: np.rot90(a))])
def test_every_exif_orientation(tmp_path, orientation, turn):
    path = tmp_path / "o.png"
    orientation_png(path, RGB8, orientation)
    assert np.array_equal(read_rgb(path), turn(RGB8))


def test_running_out_of_memory_while_decoding_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(RGB8).save(path)
    from PIL import ImageFile

    def no_memory(self):
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    with pytest.raises(ImageError) as exc:
        read_rgb(path)
    assert str(exc.value) == (f"{path}: 48x40 px, not enough memory to decode it; use a smaller image "
                              "or free memory")


def test_folders_and_link_loops_given_as_images(tmp_path):
    assert refusal(tmp_path, str(tmp_path)).endswith("is a folder, not an image; give an image file")
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    assert "loops back on itself" in refusal(loop, str(loop))


def test_array_to_rgb8_never_returns_a_view_of_the_caller_array():
    for array in (RGB8, GREY8, RGB8[..., ::-1]):
        assert not np.shares_memory(array_to_rgb8(array), array)


@pytest.mark.parametrize("target", ["loop", "nowhere"])
def test_an_input_folder_link_that_leads_nowhere_is_one_line(tmp_path, target):
    from util.images import find_pairs
    link = tmp_path / "loop"
    link.symlink_to(tmp_path / target)
    with pytest.raises(ImageError) as exc:
        find_pairs(link)
    expected = "symbolic link that loops back" if target == "loop" else "broken symbolic link"
    assert str(exc.value).startswith(f"{link}: --input is a {expected}")
    assert str(exc.value).endswith("point it at the input folder or remove it")


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_formats_sample_py_does_not_list_are_refused_by_path(tmp_path, fmt):
    """The demo and the API read files by the same rule as sample.py, whatever the name says."""
    path = tmp_path / "disguised.png"
    Image.fromarray(RGB8).save(path, format=fmt)
    assert refusal(path, str(path)) == f"{path}: {fmt} image, not read (PNG, JPEG, BMP and TIFF are); convert it to PNG"
    for ok in ("PNG", "JPEG", "BMP", "TIFF"):
        Image.fromarray(RGB8).save(path, format=ok)
        assert load_source(path).rgb.shape == RGB8.shape
