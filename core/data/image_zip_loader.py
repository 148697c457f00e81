"""image_zip uploads: one folder per class holding PNG or JPEG images.

Layout: `<class>/<image>` (images may sit deeper inside a class folder). A single
wrapper folder around all the class folders, as made by zipping a directory, is
stripped. Class names are the folder names, sorted; examples are ordered by class, then
by path.

Shapes and channels:
  - Every image is resized (bilinear) to `image_size` (height, width), by default the
    size of the first image in that order.
  - Channels: if every image is greyscale (modes 1, L, LA, I;16, I, F) the dataset has 1
    channel; if any image has colour (RGB, RGBA, P, CMYK, …) the whole dataset is RGB
    with 3 channels and greyscale images are repeated across R, G and B. Alpha is
    dropped, not composited; palette images are expanded to RGB. A dataset therefore
    never mixes shapes and never loses colour because of one greyscale image.
  - Pixels are scaled to [0, 1]: 8-bit by 1/255, 16-bit greyscale by 1/65535.
  - JPEG EXIF orientation is applied, so the pixels are the ones a viewer shows.
"""

from __future__ import annotations

import io
import threading
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.data.assemble import build_dataset
from core.data.dataset import Dataset
from core.data.limits import LoadRequest, check_limit
from core.data.zip_archive import open_archive, read_member, safe_members
from core.errors import DatasetError

_GREY_MODES = {"1", "L", "LA", "I", "F"}  # plus the I;16 family, see _is_grey
_FORMATS = ["PNG", "JPEG"]
# PIL's decompression-bomb guard is one module-level setting; this lock keeps two
# threads loading with different limits from seeing each other's value.
_PIL_GUARD_LOCK = threading.Lock()


def load_image_zip(path: Path, request: LoadRequest) -> Dataset:
    """Load a zip of class folders of PNG/JPEG images (see the module docstring).

    Args:
      path: the uploaded file.
      request: image_size (height, width) and limits; task must be classification.
    Returns:
      Dataset with x float32 [n, height, width, channels] in [0, 1] (channels 1 or 3)
      and y int32 [n] indexing class_names (the sorted folder names).
    """
    limits = request.limits
    if request.task == "regression":
        raise DatasetError(
            "image_zip datasets are classification (one folder per class); use npz for "
            "image regression",
            where="task",
        )
    with open_archive(path, limits, kind="image_zip") as archive:
        images = _class_members(safe_members(archive, limits))
        check_limit(len(images), limits.max_rows, what="the number of images", where="image_zip")
        class_names = sorted({label for label, _ in images})
        if len(class_names) < 2:
            raise DatasetError(
                f"image_zip: found one class folder ({class_names[0]!r}); put each class's "
                "images in its own folder, with at least two classes",
                where=f"folder {class_names[0]!r}",
            )
        # Pass 1 reads headers only: formats, sizes and modes are all checked before
        # any pixel data is decoded or the output array is allocated.
        headers = [_read_header(archive, info, limits.max_image_pixels) for _, info in images]
        height, width = request.image_size or (headers[0][1][1], headers[0][1][0])
        if height < 1 or width < 1:
            raise DatasetError(f"image_size {[height, width]} must be positive", where="image_size")
        check_limit(
            height * width,
            limits.max_image_pixels,
            what="the pixel count (height × width)",
            where="image_size",
            fix="choose a smaller image_size",
        )
        channels = 1 if all(_is_grey(mode) for mode, _ in headers) else 3
        check_limit(
            len(images) * height * width * channels,
            limits.max_elements,
            what="the number of pixel values",
            where="image_zip",
            fix="choose a smaller image_size or upload fewer images",
        )
        x = np.empty((len(images), height, width, channels), dtype=np.float32)
        for i, (_, info) in enumerate(images):
            x[i] = _decode(archive, info, (width, height), limits.max_image_pixels)
    index_of = {name: index for index, name in enumerate(class_names)}
    y = np.array([index_of[label] for label, _ in images], dtype=np.int32)
    return build_dataset(
        x, y, request=request, format="image_zip", task="classification", class_names=class_names
    )


def _class_members(files: list[zipfile.ZipInfo]) -> list[tuple[str, zipfile.ZipInfo]]:
    """(class name, member) pairs, sorted by class then path."""
    paths = [PurePosixPath(info.filename).parts for info in files]
    if not paths:
        raise DatasetError(
            "image_zip: the archive holds no images; add one folder per class of PNG/JPEG files",
            where="image_zip",
        )
    # Strip wrapper folders shared by every file, as long as a class folder remains.
    strip = 0
    while all(len(p) > strip + 2 and p[strip] == paths[0][strip] for p in paths):
        strip += 1
    pairs = []
    for info, parts in zip(files, paths, strict=True):
        if len(parts) - strip < 2:
            where = f"member {info.filename!r}"
            raise DatasetError(
                f"{where} is not inside a class folder; put every image in a folder named "
                "after its class",
                where=where,
            )
        pairs.append((parts[strip], info))
    return sorted(pairs, key=lambda pair: (pair[0], pair[1].filename))


def _is_grey(mode: str) -> bool:
    return mode in _GREY_MODES or mode.startswith("I;16")


@contextmanager
def _pil_pixel_guard(max_pixels: int, where: str) -> Iterator[None]:
    """Set PIL's decompression-bomb limit to ours, and turn its warning into an error."""
    with _PIL_GUARD_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            # PIL's own message quotes its internal thresholds; ours states the limit.
            raise DatasetError(
                f"{where}: the image has more pixels (width × height) than this service's "
                f"limit of {max_pixels:,}; downscale the image",
                kind="too_large",
                where=where,
            ) from exc
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _open_image(stream: IO[bytes], where: str, max_pixels: int) -> Image.Image:
    try:
        with _pil_pixel_guard(max_pixels, where):
            image = Image.open(stream, formats=_FORMATS)
    except UnidentifiedImageError as exc:
        raise DatasetError(
            f"{where} is not a PNG or JPEG image; class folders may hold only PNG/JPEG "
            "files — remove it or convert it",
            where=where,
        ) from exc
    # Also checked here in case a plugin reports its size only after opening.
    check_limit(
        image.width * image.height,
        max_pixels,
        what="the pixel count",
        where=where,
        fix="downscale the image",
    )
    return image


def _read_header(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_pixels: int
) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) of a member, decoding no pixels."""
    where = f"member {info.filename!r}"
    try:
        with archive.open(info) as member, _open_image(member, where, max_pixels) as image:
            return image.mode, image.size
    except (OSError, SyntaxError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise DatasetError(
            f"{where} cannot be read ({exc}); the archive or image is corrupt", where=where
        ) from exc


def _decode(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    size: tuple[int, int],
    max_pixels: int,
) -> np.ndarray:
    """One member as float32 [height, width, 1 or 3] in [0, 1]; `size` is (width, height).

    A greyscale image comes back with 1 channel; the caller broadcasts it into an RGB
    dataset's 3 channels.
    """
    where = f"member {info.filename!r}"
    data = read_member(archive, info)
    try:
        with _open_image(io.BytesIO(data), where, max_pixels) as image:
            image.load()
            oriented = ImageOps.exif_transpose(image)
            if _is_grey(oriented.mode) and oriented.mode.startswith(("I", "F")):
                scale = 1 / 65535  # 16-bit greyscale PNG
                converted = oriented.convert("F")
            elif _is_grey(oriented.mode):
                scale, converted = 1 / 255, oriented.convert("L")
            else:
                # P/PA may carry transparency, which PIL converts cleanly only via RGBA.
                rgba = oriented.convert("RGBA") if oriented.mode in ("P", "PA") else oriented
                scale, converted = 1 / 255, rgba.convert("RGB")
            if converted.size != size:
                converted = converted.resize(size, Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.float32) * np.float32(scale)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(
            f"{where} cannot be decoded ({exc}); the image is truncated or corrupt — "
            "re-export it as PNG or JPEG",
            where=where,
        ) from exc
    pixels = np.clip(pixels, 0.0, 1.0)
    return pixels[..., None] if pixels.ndim == 2 else pixels
