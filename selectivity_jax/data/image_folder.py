"""Image-folder data sets: ``<root>/<split>/<class>/<image>``, as a directory or inside a tar archive.

Classes are the sorted class directory names of a split (labels 0..C-1), files are sorted by name within a class,
images are decoded to 8-bit RGB with Pillow (`to_rgb`: every mode a JPEG or PNG decodes to, 16-bit grey scaled to
8 bits, alpha dropped; modes with no faithful conversion refused). A ``.tar`` / ``.tar.gz`` / ``.tgz`` archive with
the same layout (optionally under one top-level folder) is read in a single streaming pass, without extracting it to
disk; its compression (none, gzip, bzip2, xz) is told by its first bytes, and an archive cut short anywhere is an
error. `content_key` names what a cache of the decoded arrays was decoded from.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_PIL_FORMATS = ("JPEG", "PNG")  # only these decoders are tried: saves Pillow's format probing
FolderSplit = tuple[np.ndarray, np.ndarray, tuple[str, ...]]  # (uint8 images, int32 labels, class names)


def is_image_file(name: str) -> bool:
    """Whether a file name is an image this module reads (by extension; hidden files excluded)."""
    base = os.path.basename(name)
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


# In every cache key of decoded images (`content_key`): raise it whenever decode_image's output changes.
DECODER_VERSION = 2
# Modes Pillow converts to RGB exactly (palette lookup, grey replicated, CMYK by Pillow's formula without ICC
# profiles), alpha and transparency dropped with the colour kept as stored (as torchvision's loader does). JPEG's
# YCbCr is converted to RGB by the JPEG decoder itself.
_VIA_PILLOW = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK"})
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})  # grey 0..65535, scaled (not clipped) to 0..255
_REFUSED_WHY = {"I": "32-bit integers without a declared range", "F": "floating point without a declared scale"}


def _declared_maximum(image: Image.Image) -> int | None:
    """65535 for a 16-bit grey PNG that Pillow opened as 32-bit 'I' (older Pillow), else None (range unknown).

    Reads the decoder's raw mode from ``image.tile``, so call it before ``load()``, which empties the tile list.
    """
    if image.mode != "I" or image.format != "PNG" or not image.tile:
        return None
    args = image.tile[0][3]
    rawmode = args if isinstance(args, str) else (args[0] if args else "")
    return 65535 if str(rawmode).startswith("I;16") else None


def to_rgb(image: Image.Image, name: str, declared_maximum: int | None = None) -> Image.Image:
    """``image`` as 8-bit RGB, or a ValueError naming ``name`` and the mode where no faithful conversion exists.

    16-bit grey (and 'I' with ``declared_maximum`` 65535) becomes round(v / 257), replicated to 3 channels; alpha
    and transparency are dropped; 'F', 'I' of unknown range and modes not in ``_VIA_PILLOW`` are refused.
    """
    mode = image.mode
    if mode in _VIA_PILLOW:
        if mode in ("P", "PA"):  # through RGBA: Pillow warns when a palette with alpha goes straight to RGB
            image = image.convert("RGBA")
        return image if image.mode == "RGB" else image.convert("RGB")
    if mode in _SIXTEEN_BIT or (mode == "I" and declared_maximum == 65535):
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"image {name}: mode {mode!r} holds values outside its declared range 0..65535")
        grey = ((values + 128) // 257).astype(np.uint8)  # round(v / 257): no ties, 257 being odd
        return Image.fromarray(grey, "L").convert("RGB")
    why = _REFUSED_WHY.get(mode, "no faithful conversion to 8-bit RGB")
    raise ValueError(f"image {name}: Pillow mode {mode!r} ({why}) is not read; save it as 8-bit RGB or grey")


def decode_image(data: bytes, name: str, image_size: int | None = None) -> np.ndarray:
    """Decodes image bytes to uint8 RGB [H, W, 3] (`to_rgb`); resized (bilinear) to image_size x image_size if it
    differs."""
    try:
        image = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
        declared_maximum = _declared_maximum(image)
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as error:  # not an image, truncated, too large
        raise ValueError(f"cannot decode image {name}: {error}") from error
    image = to_rgb(image, name, declared_maximum)
    if image_size is not None and image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(image, np.uint8)


def _directory_entries(root: str, splits: Sequence[str]) -> Iterator[tuple[str, str, str | None, str]]:
    """Yields (split, class, file name or None for a class directory, path) for the wanted splits of a directory."""
    for split in splits:
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            found = sorted(e.name for e in os.scandir(root) if e.is_dir())
            raise FileNotFoundError(f"split {split!r} not found in {root} (splits there: {found})")
        for class_entry in os.scandir(split_dir):
            if class_entry.is_dir() and not class_entry.name.startswith("."):
                yield split, class_entry.name, None, class_entry.path
                for file_entry in os.scandir(class_entry.path):
                    if file_entry.is_file() and is_image_file(file_entry.name):
                        yield split, class_entry.name, file_entry.name, file_entry.path


def _archive_location(name: str, splits: Sequence[str]) -> tuple[str, str, str | None] | None:
    """(split, class, file or None) for an archive member path ``[top/]split/class[/file]``, else None."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    for depth in (0, 1):  # no top-level folder, or one
        rest = parts[depth:]
        if len(rest) == 2 and rest[0] in splits and not rest[1].startswith("."):
            return rest[0], rest[1], None
        if len(rest) == 3 and rest[0] in splits and not rest[1].startswith(".") and is_image_file(rest[2]):
            return rest[0], rest[1], rest[2]
    return None


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """``raw`` itself, or a reader of its gzip / bzip2 / xz content (told by the magic bytes, not the suffix).

    Python's readers of these formats raise EOFError when the compressed stream ends before its end marker, which
    tarfile's own stream mode does not notice (it would end the archive early at a truncated header).
    """
    magic = raw.peek(6)[:6]
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


def _archive_entries(root: str, splits: Sequence[str]) -> Iterator[tuple[str, str, str | None, bytes | None]]:
    """Yields (split, class, file or None, bytes or None) for the wanted splits of a tar archive, in one pass.

    Raises EOFError for an archive cut short anywhere, also between two members: a tar archive ends with two zero
    blocks after its last member, and a compressed one with its format's end marker.
    """
    with open(root, "rb") as raw:
        stream = _decompressed(raw)
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                location = _archive_location(member.name, splits)
                if location is None:
                    continue
                split, class_name, file_name = location
                if member.isdir() and file_name is None:
                    yield split, class_name, None, None
                elif member.isfile() and file_name is not None:
                    yield split, class_name, file_name, archive.extractfile(member).read()
            end_of_members = archive.offset
        while stream.read(1 << 20):  # to the end: a compressed stream checks its end marker and checksum here
            pass
        if stream.tell() - end_of_members < 2 * tarfile.BLOCKSIZE:
            raise EOFError(f"the archive ends at byte {stream.tell()} without tar's end-of-archive blocks")


def is_archive(root: str | os.PathLike) -> bool:
    """Whether ``root`` names a tar archive (by suffix) rather than a directory."""
    return os.fspath(root).lower().endswith(ARCHIVE_SUFFIXES)


def content_key(root: str | os.PathLike, splits: Sequence[str] = ("train", "test")) -> str:
    """A hex digest that changes whenever what ``load_image_folder_splits(root, splits)`` returns may change.

    An archive: the SHA-256 of its bytes. A directory: its absolute path and, sorted, every class directory and image
    file of the splits with its size, modification and status-change times (ns), so a file edited, added, removed,
    renamed or moved changes it, also one whose mtime was set back (a write always moves the status-change time).
    Both include ``DECODER_VERSION`` and the splits.
    """
    root = os.fspath(root)
    digest = hashlib.sha256(f"decoder {DECODER_VERSION}, splits {tuple(splits)!r}\n".encode())
    if is_archive(root):
        with open(root, "rb") as file:
            digest.update(hashlib.file_digest(file, "sha256").digest())
        return digest.hexdigest()
    lines = [repr(os.path.abspath(root))]
    for split, class_name, file_name, path in _directory_entries(root, splits):
        if file_name is None:
            lines.append(repr((split, class_name)))
        else:
            stat = os.stat(path)
            lines.append(repr((split, class_name, file_name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)))
    digest.update("\n".join(sorted(lines)).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def count_images(root: str | os.PathLike, splits: Sequence[str] = ("train", "test")) -> dict[str, int]:
    """{split: number of images} of an image folder (directory or tar archive), without decoding any image."""
    root = os.fspath(root)
    entries = _archive_entries(root, splits) if is_archive(root) else _directory_entries(root, splits)
    counts = {split: 0 for split in splits}
    try:
        for split, _, file_name, _ in entries:
            counts[split] += file_name is not None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as error:
        if not is_archive(root):
            raise
        raise ValueError(f"cannot read the archive {root} (truncated, or not a tar archive?): {error}") from error
    return counts


def _collect(entries: Iterable[tuple[str, str, str | None, bytes | str | None]], splits: Sequence[str],
             image_size: int | None, source: str) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Decodes entries into {split: {class: {file name: image}}}, checking that all images share one shape."""
    images: dict[str, dict[str, dict[str, np.ndarray]]] = {split: {} for split in splits}
    first: tuple[str, tuple[int, ...]] | None = None
    for split, class_name, file_name, content in entries:
        of_class = images[split].setdefault(class_name, {})
        if file_name is None:
            continue
        name = f"{source}:{split}/{class_name}/{file_name}"
        if isinstance(content, str):
            with open(content, "rb") as file:
                content = file.read()
        image = decode_image(content, name, image_size)
        if first is None:
            first = (name, image.shape)
        elif image.shape != first[1]:
            raise ValueError(f"image {name} is {image.shape}, but {first[0]} is {first[1]}: pass image_size to "
                             "resize them all")
        of_class[file_name] = image
    return images


def _to_arrays(by_class: dict[str, dict[str, np.ndarray]], split: str, source: str) -> FolderSplit:
    """Stacks {class: {file: image}} into (images, labels, class names): sorted classes, sorted files."""
    class_names = tuple(sorted(by_class))
    if not class_names:
        raise FileNotFoundError(f"split {split!r} not found in {source} (no {split}/<class>/ directories)")
    empty = [name for name in class_names if not by_class[name]]
    if empty:
        raise ValueError(f"class directories {empty} of split {split!r} in {source} hold no images")
    images = [by_class[name][file] for name in class_names for file in sorted(by_class[name])]
    labels = np.repeat(np.arange(len(class_names), dtype=np.int32), [len(by_class[name]) for name in class_names])
    return np.stack(images), labels, class_names


def load_image_folder_splits(root: str | os.PathLike, splits: Sequence[str] = ("train", "test"), *,
                             image_size: int | None = None) -> dict[str, FolderSplit]:
    """Reads several splits of an image folder (directory or tar archive, one pass over it).

    Returns {split: (uint8 images [N, H, W, 3], int32 labels [N], class names)}; each split has its own class
    names (the caller checks that they agree).
    """
    root, splits = os.fspath(root), tuple(splits)
    if not os.path.exists(root):
        raise FileNotFoundError(f"image folder {root} does not exist")
    if is_archive(root):
        entries = _archive_entries(root, splits)
    elif os.path.isdir(root):
        entries = _directory_entries(root, splits)
    else:
        raise ValueError(f"{root} is neither a directory nor a {'/'.join(ARCHIVE_SUFFIXES)} archive")
    try:
        images = _collect(entries, splits, image_size, os.path.basename(root))
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as error:
        if not is_archive(root):
            raise
        raise ValueError(f"cannot read the archive {root} (truncated, or not a tar archive?): {error}") from error
    return {split: _to_arrays(images[split], split, root) for split in splits}


def load_image_folder(root: str | os.PathLike, split: str, *, image_size: int | None = None) -> FolderSplit:
    """Reads one split of an image folder as (uint8 images [N, H, W, 3], int32 labels [N], class names)."""
    return load_image_folder_splits(root, (split,), image_size=image_size)[split]
