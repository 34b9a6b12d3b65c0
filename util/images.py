"""Image files in and out: reading sources as the release reads them, atomic PNG writes.

Everything that touches image files lives here; the sampler and the EM step only see tensors.
"""
from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from util.fileio import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# the formats those names hold (Pillow's names; MPO is a camera JPEG with extra frames, DIB a
# BMP variant): a file of another format (GIF, WebP, ...) is refused by every reader alike
READ_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "DIB", "TIFF")

# ITU-R BT.601 luma weights, the ones OpenCV's COLOR_BGR2GRAY uses.
_LUMA_R, _LUMA_G, _LUMA_B = np.float32(0.299), np.float32(0.587), np.float32(0.114)


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file and the fix."""


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 RGB array, turned upright by its EXIF
    orientation (as the release's ``cv2.imread`` does).

    Grey, palette and alpha images are converted to RGB (alpha dropped, as OpenCV's
    ``imread`` does). Raises :class:`ImageError` with a one-line reason on any failure,
    running out of memory while decoding included.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.format not in READ_FORMATS:
                raise ImageError(f"{path}: {im.format} image, not read (PNG, JPEG, BMP and TIFF are); "
                                 "convert it to PNG")
            im.load()
            return pil_to_rgb8(im, str(path))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except PermissionError:
        raise ImageError(f"{path}: cannot read the file (permission denied); make it readable") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image; give an image file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: {_unidentified_reason(path)}") from None
    except MemoryError:
        raise ImageError(f"{path}: {_size_text(path)}not enough memory to decode it; use a smaller "
                         "image or free memory") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(f"{path}: symbolic link that loops back on itself; point it at an "
                             "image or remove it") from None
        raise ImageError(f"{path}: cannot decode image ({_one_line(exc)}); re-export it as 8-bit "
                         "PNG or JPEG") from None
    except Exception as exc:  # PIL raises many types for corrupt files
        raise ImageError(f"{path}: cannot decode image ({_one_line(exc)}); "
                         "re-export it as 8-bit PNG or JPEG") from None


def _one_line(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())}"[:300]


def _size_text(path: Path) -> str:
    """``"WxH px, "`` from the file's header (as stored), or nothing when it cannot be read."""
    try:
        with Image.open(path) as im:
            return f"{im.size[0]}x{im.size[1]} px, "
    except Exception:
        return ""


def _unidentified_reason(path: Path) -> str:
    """Why Pillow could not even identify ``path``: empty, floating-point TIFF, or not an image."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes); copy or export it again"
        with open(path, "rb") as fh:
            header = fh.read(8)
            if header[:4] in (b"II*\x00", b"MM\x00*"):
                from PIL.TiffImagePlugin import ImageFileDirectory_v2
                ifd = ImageFileDirectory_v2(header)
                fh.seek(ifd.next)
                ifd.load(fh)
                if 3 in tuple(np.atleast_1d(ifd.get(339, 1))):  # SampleFormat 3: IEEE float
                    return ("floating-point TIFF, refused (no fixed 0..255 scale); "
                            "save it as 8- or 16-bit integer PNG or TIFF")
    except Exception:  # the header itself is damaged: fall through to the generic reason
        pass
    return "not an image Pillow can read (unknown or damaged format); re-export it as 8-bit PNG or JPEG"


EXIF_ORIENTATION = 0x0112


def upright(im: Image.Image) -> Image.Image:
    """``im`` turned by its EXIF orientation tag (2..8), as ``cv2.imread`` turns files (checked
    against opencv-python-headless 4.10.0.84 on all eight orientations); ``im`` itself when it
    has none."""
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION)
    except Exception:  # a damaged EXIF block: used as stored, as OpenCV does
        return im
    if orientation not in range(2, 9):
        return im
    return ImageOps.exif_transpose(im)


def pil_to_rgb8(im: Image.Image, name: str = "image") -> np.ndarray:
    """A PIL image (a decoded file or one given to the API: the same rule) as (H, W, 3) uint8
    RGB, upright by its EXIF orientation. 16-bit grey (I;16*, I) is scaled as round(v / 257);
    floating-point (F) is refused; other modes are converted by Pillow."""
    try:
        return _to_rgb8(upright(im), name)
    except MemoryError:
        raise ImageError(f"{name}: {im.width}x{im.height} px, not enough memory to convert it; use "
                         "a smaller image or free memory") from None


def _to_rgb8(im: Image.Image, name: str) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale the full 16-bit range to 8 bits (v / 257, rounded) so that
        # a 16-bit export of an 8-bit image reads back as the same 8-bit values. (16-bit RGB
        # reaches here as "RGB": Pillow keeps the high byte, v >> 8, equal on such exports.)
        arr = np.asarray(im).astype(np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageError(f"{name}: 32-bit integer image with values {arr.min():.0f}..{arr.max():.0f} "
                             "outside 0..65535; save it as 8- or 16-bit PNG or TIFF")
        arr = np.round(arr / 257.0).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if im.mode == "F":
        raise ImageError(f"{name}: floating-point image, refused (no fixed 0..255 scale); "
                         "save it as 8- or 16-bit integer PNG or TIFF")
    if im.mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy()
    if im.mode in ("RGBA", "LA", "P", "PA", "L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "La", "RGBa"):
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    raise ImageError(f"{name}: unsupported image mode {im.mode!r}; save it as 8-bit PNG or JPEG")


# --------------------------------------------------------------------------------------------
# One conversion path: file paths, PIL images and arrays to (H, W, 3) uint8 RGB
# --------------------------------------------------------------------------------------------

# what an array's dtype means; the one rule per dtype (docs/robustness.md repeats it)
ARRAY_RULES = {
    "uint8": "used as is",
    "uint16": "16-bit: scaled as round(v / 257), as 16-bit files are",
    "other integers": "values must lie in 0..255 (used as is)",
    "float": "refused: no fixed scale (0..1 or 0..255?); convert to uint8 first",
    "bool, complex, object, str": "refused",
}
_FLOAT_FIX = ("pass uint8: np.round(x * 255).astype(np.uint8) for 0..1 data, "
              "np.round(x).astype(np.uint8) for 0..255 data")


def to_rgb8(image, name: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB from a file path, a PIL image or a numpy array (or anything with
    ``__array__``, such as a CPU tensor), by one rule per kind: files and PIL images by their
    mode (:func:`read_rgb`, :func:`pil_to_rgb8`: upright by EXIF orientation, 16-bit grey
    scaled by 1/257, floating point refused), arrays by their dtype (:data:`ARRAY_RULES`).
    Anything else, or data that breaks its rule, is one :class:`ImageError` line naming
    ``name``."""
    if isinstance(image, (str, os.PathLike)):
        return read_rgb(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb8(image, name)
    if isinstance(image, np.ndarray) or (hasattr(image, "__array__") and not isinstance(image, (bytes, list, tuple))):
        try:
            array = np.asarray(image)
        except Exception as exc:
            raise ImageError(f"{name}: cannot be read as an array ({_one_line(exc)}); pass a numpy "
                             "array, a PIL image or a file path") from None
        return array_to_rgb8(array, name)
    raise ImageError(f"{name}: expected a file path, a PIL image or a numpy array, got "
                     f"{type(image).__name__}")


def array_to_rgb8(array: np.ndarray, name: str = "image") -> np.ndarray:
    """An (H, W) grey, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA (alpha dropped) array as
    (H, W, 3) uint8 RGB, by its dtype's rule (:data:`ARRAY_RULES`)."""
    kind = array.dtype.kind
    if kind == "f" or kind == "c":
        bad = "" if np.isfinite(array).all() else " holding NaN or infinite values"
        what = "complex" if kind == "c" else "floating-point"
        raise ImageError(f"{name}: {what} {array.dtype} array{bad}, refused (no fixed 0..255 scale); "
                         f"{_FLOAT_FIX}")
    if kind not in "ui":
        raise ImageError(f"{name}: {array.dtype} array, refused; pass uint8 (or uint16) pixel values")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))):
        raise ImageError(f"{name}: expected an (H, W) grey or (H, W, 3) RGB array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{name}: empty array of shape {array.shape}; pass an image")
    if array.ndim == 2:
        array = array[..., None]
    array = array[..., :3] if array.shape[2] >= 3 else np.repeat(array, 3, axis=2)
    if array.dtype == np.uint8:
        return np.array(array, order="C", copy=True)  # never a view of the caller's array
    if array.dtype == np.uint16:
        return np.round(array / 257.0).astype(np.uint8)
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        raise ImageError(f"{name}: {array.dtype} values {low}..{high} outside 0..255; pass uint8 "
                         "pixel values, or uint16 for 16-bit data")
    return array.astype(np.uint8)


def peek_size(path: str | os.PathLike):
    """(height, width) from the file's header without decoding the pixels; None when the file
    cannot be opened (reading it later gives the reason). The size is the upright one, as
    :func:`read_rgb` returns it."""
    try:
        with Image.open(path) as im:
            turned = im.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8)  # a quarter turn
            return (im.size[0], im.size[1]) if turned else (im.size[1], im.size[0])
    except Exception:
        return None


def rgb_to_gray_float(rgb: np.ndarray) -> np.ndarray:
    """Grey as OpenCV's float ``COLOR_BGR2GRAY`` followed by ``np.round``, in float32.

    OpenCV's SIMD path evaluates ``fma(R, 0.299f, fma(B, 0.114f, G * 0.587f))`` in float32
    (checked against opencv-python 4.8 on every pixel of random images), and ``np.round``
    rounds halves to even; both matter on the pixels whose luma is exactly k + 0.5 (PET/SPECT
    pseudo-colour has many). The fused multiply-adds are emulated exactly: 8-bit values times
    a float32 constant plus a float32 are exact in float64, then rounded once to float32.
    """
    rgb = rgb.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    inner = (b.astype(np.float64) * float(_LUMA_B) + (g * _LUMA_G).astype(np.float64)).astype(np.float32)
    grey = (r.astype(np.float64) * float(_LUMA_R) + inner.astype(np.float64)).astype(np.float32)
    return np.round(grey).astype(np.float32)


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Read an image as the release and the reference evaluator do: (H, W) float32 in 0..255,
    grey = round(0.299 R + 0.587 G + 0.114 B)."""
    return rgb_to_gray_float(read_rgb(path))


def write_png_atomic(path: str | os.PathLike, array: np.ndarray, inputs=()) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG via a temporary file in the same folder,
    renamed into place only when complete, so a crash never leaves a partial PNG (the folder is
    made as needed). The path is checked as every output is (:func:`util.outputs.check_output_path`:
    never onto a link, device or FIFO, never on or inside one of ``inputs``)."""
    if array.dtype != np.uint8:
        raise TypeError(f"write_png_atomic expects uint8, got {array.dtype}")
    with atomic_path(path, inputs) as tmp:  # see util.fileio: named before it exists, pid-distinct
        with open(tmp, "wb") as fh:
            Image.fromarray(array).save(fh, format="PNG")


def encode_png(array: np.ndarray) -> bytes:
    """A uint8 (H, W) or (H, W, 3) array as PNG bytes (for :func:`util.fileio.write_all_or_none`,
    which publishes several outputs of one pair together or none of them)."""
    if array.dtype != np.uint8:
        raise TypeError(f"encode_png expects uint8, got {array.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Pairs of source images
# --------------------------------------------------------------------------------------------

class Pair:
    """Two source files of one scene: ``ir`` plays the infrared role, ``vis`` the visible role
    (for medical pairs: the first and the second modality folder)."""
    __slots__ = ("stem", "ir", "vis")

    def __init__(self, stem: str, ir: Path, vis: Path):
        self.stem, self.ir, self.vis = stem, ir, vis

    def __repr__(self):
        return f"Pair({self.stem!r}, {str(self.ir)!r}, {str(self.vis)!r})"


class PairProblem(str):
    """One line of :func:`find_pairs`'s problems, ``"<path>: <reason>"``, that also keeps the
    file it names (``.path``) and the reason alone (``.reason``), so that callers which count by
    name (``evaluate.py``) need not parse the line."""
    path: Path
    reason: str

    def __new__(cls, path: Path, reason: str):
        line = super().__new__(cls, f"{path}: {reason}")
        line.path, line.reason = Path(path), reason
        return line


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def link_problem(path: Path):
    """Why ``path`` is a symbolic link that cannot be read (dangling or looping), else None."""
    if not path.is_symlink() or os.path.exists(path):
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link that loops back on itself; point it at an image or remove it"
    return (f"broken symbolic link (its target {os.readlink(path)} does not exist); point it at "
            "an image or remove it")


def _listed(path: Path) -> bool:
    """An image file of a folder, or a link with an image name that cannot be read
    (listed so that it is reported as a failed pair, not skipped)."""
    if is_image_file(path):
        return True
    return (path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
            and link_problem(path) is not None)


def find_pairs(input_dir: str | os.PathLike, modalities=("ir", "vi")) -> tuple[list[Pair], list[PairProblem]]:
    """Pairs under ``input_dir/<IR>`` and ``input_dir/<VIS>`` (``modalities``), sorted by file name.

    Each image in IR is paired with the file of the same name in VIS (the release's rule); when VIS
    has none, with the single file in B of the same stem (``01.png`` with ``01.jpg``). Returns the
    pairs and one line per problem (a file without a partner, on either side; a file whose stem
    matches several partners; a dangling or looping symbolic link, which is listed like a file
    so that it is reported rather than skipped). Raises
    :class:`ImageError` when the folders themselves are missing or empty.
    """
    root = Path(input_dir)
    ir_name, vis_name = modalities
    dirs = _modality_folders(root, ir_name, vis_name)
    ir_files = sorted((p for p in dirs[0].iterdir() if _listed(p)), key=lambda p: p.name)
    vis_files = sorted((p for p in dirs[1].iterdir() if _listed(p)), key=lambda p: p.name)
    if not ir_files and not vis_files:
        raise ImageError(f"{root}: no images in {ir_name}/ or {vis_name}/; put the pairs there "
                         f"(same file name on both sides)")
    by_name = {p.name: p for p in vis_files}
    by_stem: dict = {}
    for p in vis_files:
        by_stem.setdefault(p.stem, []).append(p)
    pairs, problems, used = [], [], set()
    for ir in ir_files:
        vis = by_name.get(ir.name)
        same_stem = by_stem.get(ir.stem, [])
        if vis is None and len(same_stem) == 1:
            vis = same_stem[0]
        if vis is None and len(same_stem) > 1:
            used.update(same_stem)
            names = " and ".join(p.name for p in same_stem)
            problems.append(PairProblem(ir, f"ambiguous partner, {names} in {dirs[1]} "
                                           f"{'both' if len(same_stem) == 2 else 'all'} match; keep "
                                           "one of them or rename the others"))
            continue
        if vis is None:
            problems.append(_unpaired(ir, dirs[1]))
            continue
        used.add(vis)
        broken = next((PairProblem(p, reason) for p in (ir, vis) if (reason := link_problem(p))), None)
        if broken:
            problems.append(broken)
            continue
        pairs.append(Pair(ir.stem, ir, vis))
    for vis in vis_files:
        if vis not in used:
            problems.append(_unpaired(vis, dirs[0]))
    return _one_pair_per_stem(pairs, problems), problems


def _unpaired(path: Path, other: Path) -> PairProblem:
    """The problem of a file with no partner in folder ``other`` (or an unreadable link)."""
    return PairProblem(path, link_problem(path) or
                       f"no partner named {path.name} in {other}; add it or remove this file")


def _modality_folders(root: Path, ir_name: str, vis_name: str) -> list[Path]:
    """``root/ir_name`` and ``root/vis_name``; ImageError naming what is there when one is missing."""
    if not root.is_dir():
        broken = link_problem(root)
        if broken:
            raise ImageError(f"{root}: --input is a {broken.replace('an image', 'the input folder')}")
        raise ImageError(f"{root}: input folder not found; pass --input DIR holding {ir_name}/ and {vis_name}/")
    dirs = []
    for name in (ir_name, vis_name):
        folder = root / name
        if not folder.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            holds = f" ({root} holds: {', '.join(present)})" if present else ""
            raise ImageError(f"{folder}: modality folder not found{holds}; put the pairs in "
                             f"{root}/{ir_name}/ and {root}/{vis_name}/, or name the two folders "
                             "with --modalities A,B")
        dirs.append(folder)
    return dirs


def _one_pair_per_stem(pairs: list[Pair], problems: list[PairProblem]) -> list[Pair]:
    """Pairs whose output name is already taken are dropped, each with a problem line."""
    stems: dict = {}
    for pair in pairs:
        stems.setdefault(pair.stem, []).append(pair)
    for stem, group in stems.items():
        if len(group) > 1:
            problems.append(PairProblem(group[1].ir, f"same output name '{stem}' as {group[0].ir}; rename one"))
            pairs = [p for p in pairs if p not in group[1:]]
    return pairs


def images_by_stem(folder: str | os.PathLike, broken_links: bool = False) -> dict[str, list[Path]]:
    """The image files of a folder by name stem, sorted (a stem may map to several files);
    with ``broken_links``, dangling or looping links with an image name too (for the caller to
    report with :func:`link_problem` rather than skip)."""
    listed = _listed if broken_links else is_image_file
    out: dict[str, list[Path]] = {}
    for p in sorted(Path(folder).iterdir()):
        if listed(p):
            out.setdefault(p.stem, []).append(p)
    return out


def files_for_stem(images: dict[str, list[Path]], stem: str) -> list[Path] | None:
    """The files of ``images`` (from :func:`images_by_stem`) named like a source of stem
    ``stem``: that stem, else the text before its first dot (the released sample.py names its
    output so)."""
    if stem in images:
        return images[stem]
    return images.get(stem.split(".")[0])
