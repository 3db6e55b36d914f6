"""Reading one image file into a float tensor, with errors that say which file and what to do."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageLoadError(ValueError):
    """An image file exists but cannot be decoded (corrupt, truncated, or not an image)."""


def _broken(path: Path, err: BaseException) -> ImageLoadError:
    return ImageLoadError(
        f"cannot read image file '{path}': {type(err).__name__}: {err}. The file is corrupt, "
        f"truncated or not an image; replace or delete it.")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"image file '{path}' does not exist; check the path")
    if path.is_dir():
        raise IsADirectoryError(f"'{path}' is a folder, not an image file")


def read_header(path: str | os.PathLike) -> tuple[str, tuple[int, int]]:
    """Open an image without decoding its pixels: returns (PIL mode, (H, W)).

    Raises ImageLoadError when the file is not a readable image.
    """
    path = Path(path)
    _check_exists(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            mode = img.mode
            # EXIF only for JPEG: PNG's getexif() decodes the whole file to look for a trailing chunk.
            orientation = img.getexif().get(0x0112, 1) if img.format in ("JPEG", "MPO") else 1
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise _broken(path, err) from err
    if orientation in (5, 6, 7, 8):  # EXIF rotations by 90 degrees swap height and width
        h, w = w, h
    return mode, (h, w)


def is_gray_mode(mode: str) -> bool:
    """True for PIL modes with a single colour channel (alpha aside)."""
    return mode in _GRAY_MODES


def _to_array(img: Image.Image, in_chans: int) -> np.ndarray:
    """PIL image -> float32 array (H, W, C) in [0, 1] with C = in_chans (1, 3 or 4)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16-bit / float grayscale
        a = np.asarray(img, dtype=np.float32)
        a = np.clip(a if img.mode == "F" else a / 65535.0, 0.0, 1.0)[..., None]
        return np.repeat(a, in_chans, axis=2) if in_chans != 1 else a
    if in_chans == 4:
        return np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels are shown on white by most viewers: composite onto white.
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
        if in_chans == 1:  # ITU-R 601-2 luma, as PIL's convert("L")
            return (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        return rgb
    target = "L" if in_chans == 1 else "RGB"
    a = np.asarray(img.convert(target), dtype=np.float32) / 255.0
    return a[..., None] if a.ndim == 2 else a


def load_image(path: str | os.PathLike, in_chans: int | None = None,
               size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Read an image file into a float32 tensor (C, H, W) with values in [0, 1].

    in_chans: 1 (grayscale), 3 (RGB) or 4 (RGBA); None keeps 1 for grayscale files, else 3.
      Colour is converted to gray with the ITU-R 601-2 luma weights; gray is repeated to RGB;
      transparency is composited onto white. EXIF orientation is applied.
    size: resize to (H, W) (an int means square) with bilinear, antialiased interpolation.
    Raises FileNotFoundError for a missing file and ImageLoadError (a ValueError) for a file
    that cannot be decoded.
    """
    path = Path(path)
    _check_exists(path)
    if in_chans not in (None, 1, 3, 4):
        raise ValueError(f"in_chans must be 1, 3 or 4 (or None), got {in_chans}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. PIL's "palette images with transparency" note
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                if in_chans is None:
                    in_chans = 1 if is_gray_mode(img.mode) else 3
                arr = _to_array(img, in_chans)
    except Exception as err:  # any decoder failure: PIL raises many exception types
        raise _broken(path, err) from err
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))  # (C, H, W)
    if size is not None:
        from .transforms import Resize
        x = Resize(size)(x)
    return x
