"""experiments/make_cifar10_folder.py: a miniature official CIFAR-10 binary release becomes the image folder the
project's loader reads back (pixels within JPEG error of the records, labels and class folders exact); bad input is
one error line, exit 2 and nothing written."""

import io
import os
import pathlib
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from experiments import make_cifar10_folder as make
from selectivity_jax.data import load_image_folder

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    """uint8 [n, 32, 32, 3] images of four 16x16 squares of one colour each, JPEG's macroblocks at 4:2:0: JPEG
    keeps them within a few levels but at the squares' edges (where the decoder blends the chroma)."""
    return np.kron(rng.integers(0, 256, (n, 2, 2, 3)), np.ones((1, 16, 16, 1))).astype(np.uint8)


def _records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The release's format: per image one label byte, then the R, G and B planes (1024 bytes each)."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1).tobytes()


def _release(path: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def release(tmp_path):
    """(the files of a miniature release: 4 train records per batch file, 10 test records; the splits' images and
    labels in record order)."""
    rng = np.random.default_rng(0)
    train = _images(rng, 20), np.arange(20) % 10
    test = _images(rng, 10), np.arange(10)[::-1]
    files = {f"data_batch_{i + 1}.bin": _records(train[0][4 * i:4 * i + 4], train[1][4 * i:4 * i + 4])
             for i in range(5)}
    files["test_batch.bin"] = _records(*test)
    files["batches.meta.txt"] = ("\n".join(CLASSES) + "\n\n").encode()
    return files, {"train": train, "test": test}


def _check_read_back(root: pathlib.Path, splits: dict) -> None:
    for split, (images, labels) in splits.items():
        read, read_labels, read_classes = load_image_folder(root, split)
        assert read_classes == CLASSES
        order = np.argsort(labels, kind="stable")  # the loader: by class, then by file name (record order)
        np.testing.assert_array_equal(read_labels, labels[order])
        error = np.abs(read.astype(int) - images[order].astype(int))  # another image's: about 90 on average
        assert error.mean() < 4.0 and np.median(error) <= 2, (split, error.mean(), np.median(error))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.make_cifar10_folder", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def test_command_writes_the_folder_the_loader_reads(tmp_path, release):
    files, splits = release
    archive = _release(tmp_path / "cifar-10-binary.tar.gz", files)
    out = tmp_path / "data" / "cifar10-jpeg"  # its parent does not exist yet
    done = _run("--archive", str(archive), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "train: 20/20 images written" in done.stdout and f"wrote {out}" in done.stdout
    assert sorted(os.listdir(out)) == ["test", "train"] and sorted(os.listdir(out / "train")) == list(CLASSES)
    assert sorted(os.listdir(out / "train" / "bird")) == ["0000.jpg", "0001.jpg"]
    assert os.listdir(tmp_path / "data") == ["cifar10-jpeg"]  # no temporary left beside it
    (tmp_path / "fresh").mkdir()
    assert out.stat().st_mode & 0o777 == (tmp_path / "fresh").stat().st_mode & 0o777  # not tempfile's 0o700
    _check_read_back(out, splits)


def test_archive_output_and_unpacked_release(tmp_path, release):
    files, splits = release
    unpacked = tmp_path / "cifar-10-batches-bin"
    unpacked.mkdir()
    for name, data in files.items():
        (unpacked / name).write_bytes(data)
    lines = []
    for name in ("cifar10-jpeg.tar.gz", "cifar10-jpeg.tar"):
        counts = make.make_folder(str(unpacked), str(tmp_path / name), log=lines.append)
        assert counts == {"train": 20, "test": 10} and lines[-1].startswith("wrote ")
        _check_read_back(tmp_path / name, splits)
    assert (tmp_path / "cifar10-jpeg.tar.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip
    assert tarfile.open(tmp_path / "cifar10-jpeg.tar", "r:").getmember("train/cat/0001.jpg").size > 0
    assert sorted(os.listdir(tmp_path)) == ["cifar-10-batches-bin", "cifar10-jpeg.tar", "cifar10-jpeg.tar.gz"]


def _without(files: dict, name: str) -> dict:
    return {key: value for key, value in files.items() if key != name}


BAD_RELEASES = {
    "missing batch": (lambda f: _without(f, "data_batch_3.bin"), "lacks data_batch_3.bin"),
    "record size": (lambda f: {**f, "test_batch.bin": f["test_batch.bin"][:-1]}, "test_batch.bin: 30729 bytes"),
    "unnamed label": (lambda f: {**f, "batches.meta.txt": b"a\nb\n"}, "labels go up to 9"),
    "unsorted names": (lambda f: {**f, "batches.meta.txt": "\n".join(CLASSES[::-1]).encode()}, "sorted order"),
    "class absent": (lambda f: {**f, "test_batch.bin": f["test_batch.bin"][:3073 * 9]}, "no image of the classes"),
}


@pytest.mark.parametrize("case", BAD_RELEASES)
def test_bad_release_writes_nothing(tmp_path, release, case):
    change, message = BAD_RELEASES[case]
    archive = _release(tmp_path / "cifar-10-binary.tar.gz", change(release[0]))
    with pytest.raises(ValueError, match=message):
        make.make_folder(str(archive), str(tmp_path / "new" / "cifar10-jpeg"), log=lambda _: None)
    assert os.listdir(tmp_path) == ["cifar-10-binary.tar.gz"]


def test_failure_while_writing_removes_what_it_made(tmp_path, release, monkeypatch):
    archive = _release(tmp_path / "cifar-10-binary.tar.gz", release[0])
    calls = []

    def failing_jpeg(image, quality):
        calls.append(1)
        if len(calls) == 7:
            raise OSError("disk full")
        return b"jpeg"
    monkeypatch.setattr(make, "jpeg", failing_jpeg)
    for out in ("new/cifar10-jpeg", "new/cifar10-jpeg.tar.gz"):
        calls.clear()
        with pytest.raises(OSError, match="disk full"):
            make.make_folder(str(archive), str(tmp_path / out), log=lambda _: None)
        assert os.listdir(tmp_path) == ["cifar-10-binary.tar.gz"]
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="exists"):
        make.make_folder(str(archive), str(tmp_path / "taken"), log=lambda _: None)
    assert os.listdir(tmp_path / "taken") == []


@pytest.mark.parametrize("bad", ["missing", "record size"])
def test_command_bad_input_one_error_line_exit_2(tmp_path, release, bad):
    files = release[0]
    archive = tmp_path / "cifar-10-binary.tar.gz"
    if bad == "record size":
        _release(archive, {**files, "data_batch_1.bin": files["data_batch_1.bin"] + b"\0"})
    before = sorted(os.listdir(tmp_path))
    done = _run("--archive", str(archive), "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert ("does not exist" if bad == "missing" else "data_batch_1.bin") in lines[0]
    assert sorted(os.listdir(tmp_path)) == before


def test_unreadable_archive_and_bad_quality(tmp_path, release):
    (tmp_path / "notes.tar.gz").write_text("not an archive")
    with pytest.raises(ValueError, match="cannot read"):
        make.make_folder(str(tmp_path / "notes.tar.gz"), str(tmp_path / "out"), log=lambda _: None)
    archive = _release(tmp_path / "cifar-10-binary.tar.gz", release[0])
    with pytest.raises(ValueError, match="quality"):
        make.make_folder(str(archive), str(tmp_path / "out"), quality=0, log=lambda _: None)
    assert sorted(os.listdir(tmp_path)) == ["cifar-10-binary.tar.gz", "notes.tar.gz"]
