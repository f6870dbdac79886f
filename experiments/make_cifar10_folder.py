"""Make the CIFAR-10 image folder of configs/cifar10_jpeg_resnet20*.py from the official binary release, no pickle:

    python -m experiments.make_cifar10_folder --archive cifar-10-binary.tar.gz [--out data/cifar10-jpeg]

Reads ``cifar-10-binary.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html), or the ``cifar-10-batches-bin/``
folder it unpacks to: data_batch_1..5.bin (train) and test_batch.bin (test), each record one label byte and 3072
bytes (the R, G and B planes of a 32x32 image), and batches.meta.txt (the class names, one a line, in label order).
Writes ``<out>/train/<class>/NNNN.jpg`` and ``<out>/test/<class>/NNNN.jpg``, the layout the image-folder loader
(selectivity_jax/data/image_folder.py) reads: a directory, or an archive when --out ends in .tar.gz, .tgz or .tar.

Choices, matching the public JPEG copy the results in docs/results.md were trained on (same layout and numbering;
its quantization tables are Pillow's at quality 75 with 4:2:0 chroma subsampling; byte-identical files cannot be
promised without its source): Pillow's JPEG encoder at --quality 75, 4:2:0; files numbered 0000, 0001, .. within
each class, in the release's record order (data_batch_1 first). The loader numbers classes by their sorted folder
names, so the class names must sort in label order (CIFAR-10's do).

Everything is read and checked before anything is written; an existing --out is refused. The output is built under
a hidden temporary name beside --out and renamed at the end, so --out is complete or absent; on an error the
temporary output (and any parent folder this command made) is removed. A kill or SIGTERM can leave
``.<name>.partial-*`` beside --out: delete it.
"""

from experiments import cli  # noqa: I001 - first: installs the SIGTERM handler before slow imports
import gzip
import io
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator

import numpy as np
from absl import flags
from PIL import Image

from selectivity_jax.data.cifar10 import parse_records

flags.DEFINE_string("archive", None, "The official CIFAR-10 binary release: cifar-10-binary.tar.gz, or the "
                    "cifar-10-batches-bin folder it unpacks to.")
flags.DEFINE_string("out", "data/cifar10-jpeg", "The image folder to write (must not exist): a directory, or an "
                    "archive if it ends in .tar.gz, .tgz or .tar.")
flags.DEFINE_integer("quality", 75, "JPEG quality (1-100).")
flags.mark_flag_as_required("archive")
FLAGS = flags.FLAGS

SPLIT_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
META_FILE = "batches.meta.txt"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
RELEASE_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
Splits = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (uint8 [N, 32, 32, 3] images, int32 [N] labels)


def read_release(path: str) -> dict[str, bytes]:
    """The bytes of the release's 7 files by base name, from its .tar.gz or its unpacked folder; ValueError or
    FileNotFoundError naming what is missing or unreadable."""
    wanted = {*SPLIT_FILES["train"], *SPLIT_FILES["test"], META_FILE}
    if not os.path.exists(path):
        raise FileNotFoundError(f"--archive: {path} does not exist (download cifar-10-binary.tar.gz from "
                                f"{RELEASE_URL})")
    found: dict[str, bytes] = {}
    if os.path.isdir(path):
        for name in wanted & set(os.listdir(path)):
            with open(os.path.join(path, name), "rb") as f:
                found[name] = f.read()
    else:
        try:
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    name = os.path.basename(member.name)
                    if member.isfile() and name in wanted and name not in found:
                        found[name] = archive.extractfile(member).read()
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise ValueError(f"cannot read {path} (truncated, or not a .tar.gz?): {error}") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not the CIFAR-10 binary release ({RELEASE_URL})")
    return found


def class_names(meta: bytes, num_labels: int) -> tuple[str, ...]:
    """The class names of batches.meta.txt, checked to be usable as folder names that sort in label order."""
    names = tuple(line.strip() for line in meta.decode("utf-8", "replace").splitlines() if line.strip())
    if len(names) < num_labels:
        raise ValueError(f"the labels go up to {num_labels - 1}, but {META_FILE} names {len(names)} classes")
    if len(set(names)) != len(names) or any(n.startswith(".") or "/" in n or "\\" in n for n in names):
        raise ValueError(f"{META_FILE}: class names {list(names)} are not distinct folder names")
    if list(names) != sorted(names):
        raise ValueError(f"{META_FILE}: class names {list(names)} are not in sorted order, so the image-folder "
                         "loader (classes by sorted folder name) would number them differently from the labels")
    return names


def parse_release(files: dict[str, bytes]) -> tuple[Splits, tuple[str, ...]]:
    """The train and test images and labels, in record order, and the class names; ValueError for records of the
    wrong size, labels without a class name, or a class missing from a split."""
    splits: Splits = {}
    for split, names in SPLIT_FILES.items():
        parts = []
        for name in names:
            try:
                parts.append(parse_records(files[name]))
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
        splits[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    num_labels = max(int(labels.max(initial=-1)) for _, labels in splits.values()) + 1
    classes = class_names(files[META_FILE], num_labels)
    for split, (_, labels) in splits.items():
        absent = [classes[c] for c in range(len(classes)) if not np.any(labels == c)]
        if absent:
            raise ValueError(f"split {split} has no image of the classes {absent}: the loader would number the "
                             "classes differently from the labels")
    return splits, classes


def jpeg(image: np.ndarray, quality: int) -> bytes:
    """One uint8 [32, 32, 3] image as JPEG bytes (Pillow, 4:2:0 chroma subsampling)."""
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    return buffer.getvalue()


def image_files(splits: Splits, classes: tuple[str, ...]) -> Iterator[tuple[str, np.ndarray]]:
    """(``<split>/<class>/NNNN.jpg``, image) for every image, numbered per class in record order."""
    for split, (images, labels) in splits.items():
        width = max(4, len(str(int(np.bincount(labels).max()) - 1)))
        for label, name in enumerate(classes):
            for number, index in enumerate(np.flatnonzero(labels == label)):
                yield f"{split}/{name}/{number:0{width}d}.jpg", images[index]


def _write(target: str, archive_mode: str | None, files: Iterator[tuple[str, bytes]]) -> None:
    """Writes ``files`` (relative path, bytes) into the directory ``target``, or with ``archive_mode`` ('w' or
    'w:gz') into the tar archive ``target``."""
    if archive_mode is None:
        for relative, data in files:
            path = os.path.join(target, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        return
    folders: set[str] = set()
    with tarfile.open(target, archive_mode) as archive:
        for relative, data in files:
            parts = relative.split("/")
            for depth in (1, 2):
                folder = "/".join(parts[:depth])
                if folder not in folders:
                    folders.add(folder)
                    archive.addfile(_tar_info(folder + "/", tarfile.DIRTYPE, 0, 0o755))
            archive.addfile(_tar_info(relative, tarfile.REGTYPE, len(data), 0o644), io.BytesIO(data))


def _tar_info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, int(time.time())
    return info


def _make_parents(folder: str) -> list[str]:
    """Creates ``folder`` and its missing parents; returns those created, deepest first."""
    created = []
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    return created


def _encoded(splits: Splits, classes: tuple[str, ...], quality: int,
             log: Callable[[str], None]) -> Iterator[tuple[str, bytes]]:
    """The JPEG files of `image_files`, with a progress line every 10,000 images and at the end of each split."""
    done = {split: 0 for split in splits}
    for relative, image in image_files(splits, classes):
        split = relative.split("/", 1)[0]
        yield relative, jpeg(image, quality)
        done[split] += 1
        total = len(splits[split][1])
        if done[split] % 10_000 == 0 or done[split] == total:
            log(f"{split}: {done[split]}/{total} images written")


def make_folder(archive: str, out: str, quality: int = 75, log: Callable[[str], None] = print) -> dict[str, int]:
    """Reads the CIFAR-10 binary release ``archive`` and writes the image folder ``out`` (see the module's
    docstring); returns the number of images per split."""
    if not 1 <= quality <= 100:
        raise ValueError(f"--quality={quality}: JPEG quality is 1..100")
    out = out.rstrip("/") or out
    if os.path.lexists(out):
        raise ValueError(f"--out: {out} exists; remove it or choose another --out (nothing is overwritten)")
    splits, classes = parse_release(read_release(archive))
    counts = {split: len(labels) for split, (_, labels) in splits.items()}
    log(f"read {archive}: {', '.join(f'{s} {n} images' for s, n in counts.items())}, {len(classes)} classes")
    archive_mode = ("w" if out.endswith(".tar") else "w:gz") if out.endswith(ARCHIVE_SUFFIXES) else None
    parent = os.path.dirname(os.path.abspath(out))
    created = _make_parents(parent)
    temporary = _temporary(parent, f".{os.path.basename(out)}.partial-", archive_mode is None)
    try:
        _write(temporary, archive_mode, _encoded(splits, classes, quality, log))
        if os.path.lexists(out):
            raise ValueError(f"--out: {out} appeared while this command ran; the images are not written")
        os.rename(temporary, out)
    except BaseException:
        _remove(temporary, created)
        raise
    log(f"wrote {out}: {', '.join(f'{s} {n}' for s, n in counts.items())} JPEG images (quality {quality})")
    return counts


def _temporary(parent: str, prefix: str, folder: bool) -> str:
    """A new empty folder or file in ``parent``, with the permissions of one made by open() or os.mkdir()
    (tempfile's are private to the user)."""
    mask = os.umask(0)
    os.umask(mask)
    if folder:
        path = tempfile.mkdtemp(prefix=prefix, dir=parent)
        os.chmod(path, 0o777 & ~mask)
    else:
        handle, path = tempfile.mkstemp(prefix=prefix, dir=parent)
        os.close(handle)
        os.chmod(path, 0o666 & ~mask)
    return path


def _remove(temporary: str, created: list[str]) -> None:
    """Removes the temporary output and the parent folders this command created, if empty."""
    if os.path.isdir(temporary):
        shutil.rmtree(temporary, ignore_errors=True)
    elif os.path.lexists(temporary):
        os.unlink(temporary)
    for folder in created:
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)


def main(argv):
    cli.no_extra_arguments(argv)
    cli.run_reporting_errors(lambda: make_folder(FLAGS.archive, FLAGS.out, FLAGS.quality))


if __name__ == "__main__":
    cli.run(main)
