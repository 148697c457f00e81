from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import Limits, load_upload
from core.errors import DatasetError
from tests.core.data.files import image_bytes, two_class_zip, write_zip


def error(path: Path, **kwargs: object) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        load_upload(path, name="t", **kwargs)  # type: ignore[arg-type]
    return info.value


def test_class_folders_become_sorted_classes(tmp_path: Path) -> None:
    dataset = load_upload(two_class_zip(tmp_path / "d.zip"), name="t")
    info = dataset.info
    assert (info.format, info.task, info.num_examples) == ("image_zip", "classification", 3)
    assert (info.input_shape, info.class_names, info.num_classes) == ((3, 4, 1), ["cat", "dog"], 2)
    assert dataset.x.dtype == np.float32 and dataset.x.shape == (3, 3, 4, 1)
    np.testing.assert_array_equal(dataset.y, [0, 0, 1])
    np.testing.assert_allclose(dataset.x[0], 0.0)
    np.testing.assert_allclose(dataset.x[1], 1.0)
    np.testing.assert_allclose(dataset.x[2], 0.2, atol=1e-6)  # 51 / 255, resized from 6×5


def test_image_size_overrides_the_first_image(tmp_path: Path) -> None:
    dataset = load_upload(two_class_zip(tmp_path / "d.zip"), name="t", image_size=(7, 2))
    assert dataset.x.shape == (3, 7, 2, 1)


def test_any_colour_image_makes_every_image_rgb(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "d.zip",
        {
            "a/grey.png": image_bytes(value=102),
            "b/red.jpg": image_bytes(mode="RGB", format="JPEG", size=(4, 3), value=0),
            "b/alpha.png": image_bytes(mode="RGBA", value=255),
        },
    )
    dataset = load_upload(path, name="t")
    assert dataset.info.input_shape == (3, 4, 3)
    np.testing.assert_allclose(dataset.x[0], 0.4, atol=1e-6)  # grey repeated over R, G, B
    np.testing.assert_allclose(dataset.x[1], 1.0)  # alpha dropped, not composited


def test_palette_with_transparency_and_16_bit_grey(tmp_path: Path) -> None:
    palette = Image.new("P", (4, 3), 1)
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.info["transparency"] = 0
    deep = Image.fromarray(np.full((3, 4), 65535, dtype=np.uint16))
    members = {}
    for name, image in (("p/pal.png", palette), ("q/deep.png", deep)):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        members[name] = buffer.getvalue()
    dataset = load_upload(write_zip(tmp_path / "d.zip", members), name="t")
    assert dataset.info.input_shape == (3, 4, 3)
    np.testing.assert_allclose(dataset.x, 1.0)


def test_wrapper_folder_and_os_junk_are_ignored(tmp_path: Path) -> None:
    png = image_bytes()
    path = write_zip(
        tmp_path / "d.zip",
        {
            "photos/": b"",
            "photos/cat/a.png": png,
            "photos/dog/b.png": png,
            "photos/dog/.DS_Store": b"junk",
            "__MACOSX/photos/cat/._a.png": b"junk",
        },
    )
    assert load_upload(path, name="t").info.class_names == ["cat", "dog"]


@pytest.mark.parametrize("name", ["../evil/a.png", "cat/../../a.png", "/abs/a.png", "C:/a.png"])
def test_unsafe_member_paths(tmp_path: Path, name: str) -> None:
    path = write_zip(tmp_path / "d.zip", {"cat/a.png": image_bytes(), name: image_bytes()})
    exc = error(path)
    assert exc.kind == "invalid"
    assert exc.where == f"member {name!r}" and exc.where in str(exc)


def test_symlink_member(tmp_path: Path) -> None:
    path = tmp_path / "d.zip"
    link = zipfile.ZipInfo("dog/link.png")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cat/a.png", image_bytes())
        archive.writestr(link, "/etc/passwd")
    exc = error(path)
    assert exc.kind == "invalid" and "'dog/link.png'" in str(exc) and "link" in str(exc)


def test_non_image_file_is_named(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "d.zip", {"cat/a.png": image_bytes(), "dog/notes.txt": b"hello"})
    exc = error(path)
    assert exc.kind == "invalid" and exc.where == "member 'dog/notes.txt'"
    assert "'dog/notes.txt'" in str(exc)


def test_other_image_formats_are_refused(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "d.zip", {"cat/a.png": image_bytes(), "dog/b.gif": image_bytes(format="GIF")}
    )
    exc = error(path)
    assert exc.kind == "invalid" and "'dog/b.gif'" in str(exc)


def test_truncated_image_is_named(tmp_path: Path) -> None:
    png = image_bytes(size=(64, 64), mode="RGB")
    path = write_zip(tmp_path / "d.zip", {"cat/a.png": png, "dog/b.png": png[: len(png) // 2]})
    exc = error(path)
    assert exc.kind == "invalid" and "'dog/b.png'" in str(exc)


@pytest.mark.parametrize(
    ("members", "where"),
    [
        ({"a.png": image_bytes(), "cat/b.png": image_bytes()}, "member 'a.png'"),
        ({"cat/a.png": image_bytes(), "cat/b.png": image_bytes()}, "folder 'cat'"),
        ({"__MACOSX/x": b""}, "image_zip"),
    ],
    ids=["outside-class-folder", "one-class", "no-images"],
)
def test_bad_layouts(tmp_path: Path, members: dict[str, bytes], where: str) -> None:
    exc = error(write_zip(tmp_path / "d.zip", members))
    assert exc.kind == "invalid" and exc.where == where


def test_regression_task_is_refused(tmp_path: Path) -> None:
    exc = error(two_class_zip(tmp_path / "d.zip"), task="regression")
    assert exc.kind == "invalid" and exc.where == "task"


def test_zip_bomb_ratio(tmp_path: Path) -> None:
    # 1 MiB of zeros deflates to about 1 KiB; the limit is lowered so the test stays small.
    path = write_zip(
        tmp_path / "d.zip",
        {"cat/a.png": image_bytes(), "dog/bomb.png": bytes(1 << 20)},
        compression=zipfile.ZIP_DEFLATED,
    )
    assert path.stat().st_size < 10_000
    exc = error(path, limits=Limits(max_compression_ratio=20))
    assert exc.kind == "too_large" and exc.where == "member 'dog/bomb.png'"
    assert "compression ratio" in str(exc)


def test_decompressed_total_limit(tmp_path: Path) -> None:
    path = two_class_zip(tmp_path / "d.zip")
    exc = error(path, limits=Limits(max_decompressed_bytes=100))
    assert exc.kind == "too_large" and "member '" in str(exc) and "unpacked size" in str(exc)


def test_member_count_limit(tmp_path: Path) -> None:
    exc = error(two_class_zip(tmp_path / "d.zip"), limits=Limits(max_members=2))
    assert exc.kind == "too_large" and exc.where == "image_zip"


def test_image_count_is_a_row_limit(tmp_path: Path) -> None:
    exc = error(two_class_zip(tmp_path / "d.zip"), limits=Limits(max_rows=2))
    assert exc.kind == "too_large" and "images" in str(exc)


def test_pixel_limit_uses_pils_guard_and_restores_it(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    path = write_zip(
        tmp_path / "d.zip",
        {"cat/a.png": image_bytes(), "dog/big.png": image_bytes(size=(100, 100))},
    )
    warned = error(path, limits=Limits(max_image_pixels=6_000))  # PIL warns above the limit
    assert warned.kind == "too_large" and warned.where == "member 'dog/big.png'"
    refused = error(path, limits=Limits(max_image_pixels=100))  # PIL errors above twice it
    assert refused.kind == "too_large" and refused.where == "member 'dog/big.png'"
    assert before == Image.MAX_IMAGE_PIXELS


def test_element_limit(tmp_path: Path) -> None:
    exc = error(two_class_zip(tmp_path / "d.zip"), limits=Limits(max_elements=35))
    assert exc.kind == "too_large" and "pixel values" in str(exc)


def test_requested_image_size_above_the_pixel_limit(tmp_path: Path) -> None:
    path = two_class_zip(tmp_path / "d.zip")
    exc = error(path, image_size=(100, 100), limits=Limits(max_image_pixels=1000))
    assert exc.kind == "too_large" and exc.where == "image_size"


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "d.zip"
    path.write_bytes(b"PK\x03\x04 but then nothing")
    exc = error(path)
    assert exc.kind == "invalid" and "image_zip" in str(exc)
