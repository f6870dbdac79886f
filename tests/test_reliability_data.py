"""Reliability of image-folder data (issue 27): the cache of decoded arrays sees every change of the files it was
decoded from, and every Pillow mode decodes to the right uint8 RGB or is refused with the file's name and mode."""

import hashlib
import io
import os
import pathlib
import re
import signal
import struct
import time
import warnings
import zlib

import ml_collections
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from selectivity_jax.data import image_folder, load_image_folder, load_image_folder_splits, load_splits
from selectivity_jax.data.image_folder import decode_image, to_rgb
from test_data import _tar, _write_tree

# --- the cache sees every change ----------------------------------------------------------------------------------


def _stored_png(path: pathlib.Path, pixels: np.ndarray) -> None:
    """Writes an uncompressed PNG: its size depends only on the image's shape, not on its pixels."""
    Image.fromarray(pixels).save(path, format="PNG", compress_level=0)


def _stored_tree(root: pathlib.Path) -> pathlib.Path:
    """`test_data._write_tree`'s tree (3 classes, 4 train and 2 test images each), re-saved uncompressed."""
    _write_tree(root)
    for path in root.rglob("*.png"):
        _stored_png(path, np.asarray(Image.open(path)))
    return root


def _config(root: pathlib.Path, cache: pathlib.Path) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(name="image_folder", root=str(root), cache_dir=str(cache), num_val=0))


def _load(root: pathlib.Path, cache: pathlib.Path) -> dict:
    """{split: (images, labels, class names)} through load_splits with a cache dir."""
    splits = load_splits(_config(root, cache), seed=0)
    return {name: (*getattr(splits, name), splits.class_names) for name in ("train", "test")}


def _assert_equal(actual: dict, expected: dict) -> None:
    for split in ("train", "test"):
        assert actual[split][2] == expected[split][2]
        np.testing.assert_array_equal(actual[split][0], expected[split][0])
        np.testing.assert_array_equal(actual[split][1], expected[split][1])


def _same(a: dict, b: dict) -> bool:
    return all(a[s][2] == b[s][2] and a[s][0].shape == b[s][0].shape and np.array_equal(a[s][0], b[s][0])
               and np.array_equal(a[s][1], b[s][1]) for s in ("train", "test"))


def _new_pixels(path: pathlib.Path) -> np.ndarray:
    return 255 - np.asarray(Image.open(path))


def _edit_new_mtime(root: pathlib.Path) -> None:
    path = root / "train" / "ant" / "00.png"
    before = path.stat()
    _stored_png(path, _new_pixels(path))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))


def _edit_same_size_and_mtime(root: pathlib.Path) -> None:
    """New pixels, the same size, the mtime set back: only the status-change time (ctime) tells."""
    path = root / "train" / "ant" / "00.png"
    before = path.stat()
    _stored_png(path, _new_pixels(path))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    while path.stat().st_ctime_ns == before.st_ctime_ns:  # the clock's tick may not have passed yet
        time.sleep(0.01)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _add(root: pathlib.Path) -> None:
    _stored_png(root / "train" / "bee" / "09.png", np.full((8, 8, 3), 7, np.uint8))


def _remove(root: pathlib.Path) -> None:
    (root / "test" / "cat" / "01.png").unlink()


def _rename(root: pathlib.Path) -> None:
    (root / "train" / "ant" / "00.png").rename(root / "train" / "ant" / "zz.png")  # sorts last now


def _move_between_classes(root: pathlib.Path) -> None:
    (root / "train" / "ant" / "00.png").rename(root / "train" / "bee" / "ant_00.png")


def _rename_class(root: pathlib.Path) -> None:
    for split in ("train", "test"):
        (root / split / "cat").rename(root / split / "cow")


@pytest.mark.parametrize("edit", [_edit_new_mtime, _edit_same_size_and_mtime, _add, _remove, _rename,
                                  _move_between_classes, _rename_class], ids=lambda edit: edit.__name__.strip("_"))
def test_directory_cache_sees_the_edit(tmp_path, edit):
    root, cache = _stored_tree(tmp_path / "tree"), tmp_path / "cache"
    before = _load(root, cache)
    _assert_equal(before, load_image_folder_splits(root))
    edit(root)
    after = _load(root, cache)
    _assert_equal(after, load_image_folder_splits(root))  # what an uncached read gives now
    assert not _same(after, before)


def test_directory_cache_sees_an_empty_class_folder(tmp_path):
    root, cache = _stored_tree(tmp_path / "tree"), tmp_path / "cache"
    _load(root, cache)
    (root / "train" / "dog").mkdir()
    with pytest.raises(ValueError, match="hold no images"):
        _load(root, cache)


@pytest.mark.parametrize("name, same_size", [("tree.tar.gz", False), ("tree.tar", True)])
def test_archive_cache_sees_a_replaced_archive(tmp_path, name, same_size):
    """An archive replaced under the same name with its mtime set back (and, uncompressed, the same size)."""
    tree, cache = _stored_tree(tmp_path / "tree"), tmp_path / "cache"
    archive = _tar(tree, tmp_path / name, "top")
    before_stat = archive.stat()
    before = _load(archive, cache)
    _assert_equal(before, load_image_folder_splits(tree))
    path = tree / "test" / "bee" / "01.png"
    mtime = path.stat().st_mtime_ns
    _stored_png(path, _new_pixels(path))
    os.utime(path, ns=(mtime, mtime))  # the same member header: only the member's bytes differ
    _tar(tree, archive, "top")
    os.utime(archive, ns=(before_stat.st_atime_ns, before_stat.st_mtime_ns))
    if same_size:  # every member the same size: the uncompressed archive is too
        assert archive.stat().st_size == before_stat.st_size
    after = _load(archive, cache)
    _assert_equal(after, load_image_folder_splits(tree))
    assert not _same(after, before)


@pytest.mark.parametrize("kind", ["directory", "archive"])
def test_warm_cache_is_reused_without_decoding(tmp_path, monkeypatch, kind):
    tree = _stored_tree(tmp_path / "tree")
    root = tree if kind == "directory" else _tar(tree, tmp_path / "tree.tar.gz", None)
    calls = []
    decode = image_folder.decode_image
    monkeypatch.setattr(image_folder, "decode_image", lambda *args, **kw: calls.append(1) or decode(*args, **kw))
    first = _load(root, tmp_path / "cache")
    assert len(calls) == 18
    (tree / "train" / "ant" / "notes.txt").write_text("edited: not an image, not read")
    _assert_equal(_load(root, tmp_path / "cache"), first)
    assert len(calls) == 18  # nothing decoded again
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def test_cache_under_the_old_key_is_never_read_nor_deleted(tmp_path):
    """The key before issue 27 hashed the root's path, size and mtime only: a file there is stale by design."""
    root, cache = _stored_tree(tmp_path / "tree"), tmp_path / "cache"
    stat = os.stat(root)
    identity = f"{os.path.abspath(root)}|{stat.st_size}|{stat.st_mtime_ns}|None"
    old = cache / f"image_folder_tree_{hashlib.sha1(identity.encode()).hexdigest()[:12]}.npz"
    cache.mkdir()
    zeros = np.zeros((2, 8, 8, 3), np.uint8)
    np.savez(old, train_images=zeros, train_labels=np.array([0, 1], np.int32), test_images=zeros,
             test_labels=np.array([0, 1], np.int32), class_names=np.asarray(["x", "y"]))
    content = old.read_bytes()
    _assert_equal(_load(root, cache), load_image_folder_splits(root))
    assert old.read_bytes() == content


# --- every Pillow mode decodes right, or is refused ---------------------------------------------------------------

RNG = np.random.default_rng(0)
GREY16 = np.array([[0, 1, 128, 129, 255, 256, 257], [32767, 32768, 51200, 65278, 65279, 65534, 65535]], np.uint16)
PALETTE = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90], [200, 210, 220]], np.uint8)
INDICES = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(values, np.uint8)[..., None], 3, axis=-1)


def _scaled16(values: np.ndarray) -> np.ndarray:
    """The 8-bit value of 16-bit grey: round(v / 257), computed in float64."""
    return _grey(np.round(values.astype(np.float64) / 257))


def _saved(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _raw_png(samples: np.ndarray, color_type: int, depth: int, extra: bytes = b"") -> bytes:
    """A PNG written by hand (16-bit colour, 2-bit grey, a grey tRNS: what Pillow cannot write) from [H, W, C]
    samples."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    height, width = samples.shape[:2]
    if depth in (8, 16):
        rows = [row.astype(">u2" if depth == 16 else np.uint8).tobytes() for row in samples]
    else:  # depth 2, one channel, width a multiple of 4
        quads = samples.reshape(height, width // 4, 4).astype(np.uint8)
        rows = [(q[:, 0] << 6 | q[:, 1] << 4 | q[:, 2] << 2 | q[:, 3]).tobytes() for q in quads]
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra
            + chunk(b"IDAT", zlib.compress(b"".join(b"\0" + row for row in rows))) + chunk(b"IEND", b""))


def _trns(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + b"tRNS" + data + struct.pack(">I", zlib.crc32(b"tRNS" + data))


def _palette_image() -> Image.Image:
    image = Image.frombytes("P", INDICES.shape[::-1], INDICES.tobytes())
    image.putpalette(PALETTE.ravel().tolist())
    return image


def _frombytes(mode: str, values: np.ndarray) -> Image.Image:
    return Image.frombytes(mode, values.shape[1::-1], np.ascontiguousarray(values).tobytes())


BITS = RNG.random((3, 8)) > 0.5
GREY = RNG.integers(0, 256, (3, 5), dtype=np.uint8)
RGBA = RNG.integers(0, 256, (3, 5, 4), dtype=np.uint8)
CMYK = RNG.integers(0, 256, (4, 6, 4), dtype=np.uint8)
RGB16 = RNG.integers(0, 65536, (2, 4, 4), dtype=np.uint16)
GREY2 = RNG.integers(0, 4, (2, 8))
CMYK_JPEG = _saved(_frombytes("CMYK", CMYK), "JPEG", quality=95)


def _cmyk_expected() -> np.ndarray:
    """Pillow's CMYK -> RGB formula (no ICC profile) on the samples as the JPEG stores them (lossy)."""
    c, m, y, k = np.moveaxis(np.asarray(Image.open(io.BytesIO(CMYK_JPEG)), np.float64), -1, 0)
    return np.round(np.stack([(255 - c) * (255 - k), (255 - m) * (255 - k), (255 - y) * (255 - k)], -1) / 255)

# (case, the mode Pillow opens the file in, file bytes, expected uint8 RGB). Alpha and transparency are dropped.
FILE_CASES = [
    ("1", "1", lambda: _saved(Image.fromarray(BITS)), lambda: _grey(np.where(BITS, 255, 0))),
    ("L", "L", lambda: _saved(Image.fromarray(GREY)), lambda: _grey(GREY)),
    ("L 2-bit", "L", lambda: _raw_png(GREY2[..., None], 0, 2), lambda: _grey(GREY2 * 85)),
    ("L tRNS", "L", lambda: _raw_png(GREY[..., None], 0, 8, _trns(bytes([0, GREY[0, 0]]))), lambda: _grey(GREY)),
    ("LA", "LA", lambda: _saved(_frombytes("LA", RGBA[..., :2])), lambda: _grey(RGBA[..., 0])),
    ("RGB", "RGB", lambda: _saved(_frombytes("RGB", RGBA[..., :3])), lambda: RGBA[..., :3]),
    ("RGB tRNS", "RGB", lambda: _saved(_frombytes("RGB", RGBA[..., :3]), transparency=tuple(RGBA[0, 0, :3].tolist())),
     lambda: RGBA[..., :3]),
    ("RGBA", "RGBA", lambda: _saved(_frombytes("RGBA", RGBA)), lambda: RGBA[..., :3]),
    ("P", "P", lambda: _saved(_palette_image()), lambda: PALETTE[INDICES]),
    ("P transparent index", "P", lambda: _saved(_palette_image(), transparency=1), lambda: PALETTE[INDICES]),
    ("P alpha per entry", "P", lambda: _saved(_palette_image(), transparency=bytes([255, 0, 128, 255])),
     lambda: PALETTE[INDICES]),
    ("CMYK JPEG", "CMYK", lambda: CMYK_JPEG, _cmyk_expected),
    ("I;16", "I;16", lambda: _saved(Image.fromarray(GREY16)), lambda: _scaled16(GREY16)),
    ("I;16 tRNS", "I;16", lambda: _raw_png(GREY16[..., None], 0, 16, _trns(b"\xff\xff")), lambda: _scaled16(GREY16)),
    ("RGB 16-bit", "RGB", lambda: _raw_png(RGB16[..., :3], 2, 16), lambda: RGB16[..., :3] >> 8),  # Pillow: high byte
    ("RGBA 16-bit", "RGBA", lambda: _raw_png(RGB16, 6, 16), lambda: RGB16[..., :3] >> 8),
    ("LA 16-bit", "RGBA", lambda: _raw_png(RGB16[..., :2], 4, 16), lambda: _grey(RGB16[..., 0] >> 8)),
]


@pytest.mark.parametrize("case, mode, data, expected", FILE_CASES, ids=[case[0] for case in FILE_CASES])
def test_file_modes_decode_to_the_right_rgb(case, mode, data, expected):
    data = data()
    assert Image.open(io.BytesIO(data)).mode == mode  # the case holds the mode it names
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's warnings too (a palette with alpha straight to RGB warns)
        decoded = decode_image(data, case)
    assert decoded.dtype == np.uint8 and decoded.shape == expected().shape
    np.testing.assert_array_equal(decoded, expected())


def _pa_image() -> Image.Image:
    image = _frombytes("PA", np.stack([INDICES, np.full_like(INDICES, 9)], -1))
    image.putpalette(PALETTE.ravel().tolist())
    return image


# Images made in memory (modes no JPEG or PNG opens in): (case, image, declared maximum, expected uint8 RGB).
MEMORY_CASES = [
    ("I;16B", lambda: _frombytes("I;16B", GREY16.astype(">u2")), None, lambda: _scaled16(GREY16)),
    ("I;16L", lambda: _frombytes("I;16L", GREY16.astype("<u2")), None, lambda: _scaled16(GREY16)),
    ("I declared 16-bit", lambda: _frombytes("I", GREY16.astype(np.int32)), 65535, lambda: _scaled16(GREY16)),
    ("RGBX", lambda: _frombytes("RGBX", RGBA), None, lambda: RGBA[..., :3]),
    ("PA", _pa_image, None, lambda: PALETTE[INDICES]),
]


@pytest.mark.parametrize("case, image, maximum, expected", MEMORY_CASES, ids=[case[0] for case in MEMORY_CASES])
def test_memory_modes_convert_to_the_right_rgb(case, image, maximum, expected):
    converted = np.asarray(to_rgb(image(), case, maximum))
    assert converted.dtype == np.uint8
    np.testing.assert_array_equal(converted, expected())


REFUSED = [
    ("F", lambda: _frombytes("F", RNG.random((2, 3)).astype(np.float32)), None, "floating point"),
    ("I", lambda: _frombytes("I", GREY16.astype(np.int32)), None, "without a declared range"),
    ("I", lambda: _frombytes("I", np.array([[0, 70000]], np.int32)), 65535, "outside its declared range"),
    ("La", lambda: Image.new("La", (2, 2)), None, "no faithful conversion"),
    ("RGBa", lambda: Image.new("RGBa", (2, 2)), None, "no faithful conversion"),
    ("LAB", lambda: Image.new("LAB", (2, 2)), None, "no faithful conversion"),
    ("HSV", lambda: Image.new("HSV", (2, 2)), None, "no faithful conversion"),
    ("YCbCr", lambda: Image.new("YCbCr", (2, 2)), None, "no faithful conversion"),  # a JPEG opens as RGB
]


@pytest.mark.parametrize("mode, image, maximum, why", REFUSED, ids=[f"{c[0]}-{c[3]}" for c in REFUSED])
def test_modes_without_a_faithful_conversion_are_refused(mode, image, maximum, why):
    with pytest.raises(ValueError, match=rf"some/dir/x\.png.*'{mode}'.*{why}"):
        to_rgb(image(), "some/dir/x.png", maximum)


def _sixteen_bit_folder(root: pathlib.Path) -> pathlib.Path:
    for name in ("a", "b"):
        (root / "train" / name).mkdir(parents=True)
        Image.fromarray(GREY16).save(root / "train" / name / "x.png")
    return root


def test_16_bit_png_folder_is_scaled_not_white(tmp_path):
    images, _, _ = load_image_folder(_sixteen_bit_folder(tmp_path), "train")
    np.testing.assert_array_equal(images, np.stack([_scaled16(GREY16)] * 2))


def test_16_bit_png_opened_as_32_bit_int_by_older_pillow(tmp_path, monkeypatch):
    """Older Pillow versions open 16-bit grey PNGs as 'I': the PNG's declared depth gives the range."""
    monkeypatch.setitem(PngImagePlugin._MODES, (16, 0), ("I", "I;16B"))
    root = _sixteen_bit_folder(tmp_path)
    assert Image.open(root / "train" / "a" / "x.png").mode == "I"
    images, _, _ = load_image_folder(root, "train")
    np.testing.assert_array_equal(images, np.stack([_scaled16(GREY16)] * 2))


def test_refused_image_is_one_error_line(tmp_path, monkeypatch, capsys):
    """A refused image reaches a command's user as one ``error:`` line naming the file, exit status 2."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        from experiments.cli import run_reporting_errors  # installs its SIGTERM handler: restored below
    finally:
        signal.signal(signal.SIGTERM, handler)
    monkeypatch.setitem(PngImagePlugin._MODES, (16, 0), ("I", "I;16B"))
    monkeypatch.setattr(image_folder, "_declared_maximum", lambda image: None)  # an 'I' image of unknown range
    root = _sixteen_bit_folder(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_errors(lambda: load_image_folder(root, "train"))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: image \S*train/[ab]/x\.png: Pillow mode 'I' ", lines[0]), lines
