"""The build cache of the oneDNN convolutions (selectivity_jax/cpu/onednn_conv.py) loads nothing but this user's own
build: a directory created with mode 700, a library and a sha256 record that belong to this user, that no one else can
write and that are no links, bytes that match the record. Anything else is refused with one warning and convolutions
stay on XLA; a damaged build of the user's own is rebuilt once; a build lock held too long ends in the warning; the
cache key changes with every input of the build.

One real compilation (the module's ``built`` library); elsewhere the compiler is replaced by a copy of it. Nothing here
registers handlers with XLA (it refuses a second library's handlers under the same names): `_register` is recorded.
"""

import ctypes
import hashlib
import os
import platform
import re
import shutil
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import filelock
import jax
import jaxlib
import pytest

from selectivity_jax import cpu
from selectivity_jax.cpu import onednn_conv

PREFIX = onednn_conv.onednn_prefix()
needs_build = pytest.mark.skipif(PREFIX is None or shutil.which((onednn_conv._compiler() or [""])[0]) is None,
                                 reason="oneDNN or a C++ compiler is missing: nothing to build")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> bytes:
    """The handlers, compiled once for this module: the library's bytes."""
    target = tmp_path_factory.mktemp("built") / "onednn_conv.so"
    onednn_conv._build(PREFIX, target)
    return target.read_bytes()


@pytest.fixture
def cache(tmp_path, monkeypatch, built):
    """A fresh cache directory (not created yet) whose library path is ``target``; `problem` and the warning
    forgotten before and after. A build writes ``output`` (the module's library unless a test changes it) with mode
    775, as a linker does under umask 002, and is counted in ``compiled``; registrations go to ``registered``."""
    state = SimpleNamespace(dir=tmp_path / "cache", output=built, compiled=[], registered=[])
    monkeypatch.setenv("SELECTIVITY_JAX_CACHE", str(state.dir))
    state.target = onednn_conv._library_path(PREFIX)

    def compile_copy(prefix, output):
        output.write_bytes(state.output)
        output.chmod(0o775)
        state.compiled.append(output)

    monkeypatch.setattr(onednn_conv, "_compile", compile_copy)
    monkeypatch.setattr(onednn_conv, "_register", state.registered.append)
    onednn_conv.problem.cache_clear()
    onednn_conv._warn_once.cache_clear()
    yield state
    onednn_conv.problem.cache_clear()
    onednn_conv._warn_once.cache_clear()


def plant(target: Path, data: bytes, digest: str | None = "of the data") -> None:
    """A library at ``target`` (mode 700, its directory created with mode 700) with the sha256 record of ``data``
    (``digest`` instead where given; no record where None)."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(0o700)
    if digest is not None:
        record = onednn_conv._digest_path(target)
        record.write_text((sha256(data) if digest == "of the data" else digest) + "\n")
        record.chmod(0o600)


def assert_refused_with_one_warning(match: str) -> None:
    """`problem` gives a reason matching ``match``; asking twice warns once; convolutions run on XLA."""
    reason = onednn_conv.problem()
    assert reason is not None and re.search(match, reason), reason
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not onednn_conv.available() and not onednn_conv.available()
        assert not onednn_conv.enabled() and cpu.convolution_kernels() == "xla"
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1 and "convolutions run on XLA" in str(runtime[0].message)


def owned_by_another_user(monkeypatch, path: Path) -> None:
    """``os.lstat`` reports ``path`` as another user's (as a file planted by someone else would be)."""
    real_lstat = os.lstat

    def lstat(name, *args, **kwargs):
        info = real_lstat(name, *args, **kwargs)
        if os.fspath(name) != os.fspath(path):
            return info
        fields = list(info[:10])
        fields[4] = info.st_uid + 1  # st_uid
        return os.stat_result(fields)

    monkeypatch.setattr(os, "lstat", lstat)


@needs_build
def test_own_build_in_a_private_cache_is_loaded(cache):
    """A fresh cache: the directory is created with mode 700, the library is built once, made unwritable to group
    and others (whatever the linker's umask gave it), recorded, loaded and registered; the next process finds it."""
    umask = os.umask(0o022)
    try:
        assert onednn_conv.problem() is None
    finally:
        os.umask(umask)
    assert (cache.dir.stat().st_mode & 0o777) == 0o700
    assert (cache.target.stat().st_mode & 0o777) == 0o700
    assert onednn_conv._digest_path(cache.target).read_text().strip() == sha256(cache.output)
    assert len(cache.compiled) == 1 and [lib._name for lib in cache.registered] == [str(cache.target)]
    onednn_conv.problem.cache_clear()
    assert onednn_conv.problem() is None and len(cache.compiled) == 1


def _group_writable_file(cache, monkeypatch, tmp_path):
    cache.target.chmod(0o720)


def _others_writable_record(cache, monkeypatch, tmp_path):
    onednn_conv._digest_path(cache.target).chmod(0o602)


def _symlink(cache, monkeypatch, tmp_path):
    elsewhere = tmp_path / "elsewhere" / cache.target.name  # a sound library, with the record of its bytes
    elsewhere.parent.mkdir()
    os.replace(cache.target, elsewhere)
    os.symlink(elsewhere, cache.target)


def _directory_writable_by_others(cache, monkeypatch, tmp_path):
    cache.dir.chmod(0o757)


def _file_of_another_user(cache, monkeypatch, tmp_path):
    owned_by_another_user(monkeypatch, cache.target)


def _directory_of_another_user(cache, monkeypatch, tmp_path):
    owned_by_another_user(monkeypatch, cache.dir)


@needs_build
@pytest.mark.parametrize("unsafe, match", [
    (_group_writable_file, r"refused the cache file .*\.so: it is writable by group or others"),
    (_others_writable_record, r"refused the cache file .*\.so\.sha256: it is writable by group or others"),
    (_symlink, r"refused the cache file .*\.so: it is a symbolic link"),
    (_directory_writable_by_others, r"refused the cache directory .*cache: it is writable by group or others"),
    (_file_of_another_user, r"refused the cache file .*\.so: it belongs to uid \d+, not to this user"),
    (_directory_of_another_user, r"refused the cache directory .*cache: it belongs to uid \d+, not to this user"),
], ids=lambda value: value.__name__.strip("_") if callable(value) else "")
def test_an_entry_others_could_have_written_is_refused(cache, monkeypatch, tmp_path, unsafe, match):
    """A sound library made unsafe in one way: refused (neither loaded nor rebuilt over), one warning, XLA."""
    plant(cache.target, cache.output)
    unsafe(cache, monkeypatch, tmp_path)
    assert_refused_with_one_warning(match)
    assert cache.compiled == [] and cache.registered == []
    assert cache.target.read_bytes() == cache.output  # left as it was (a link: still a link)
    assert cache.target.is_symlink() == (unsafe is _symlink)


@needs_build
@pytest.mark.parametrize("recorded", [True, False], ids=["record-of-the-original", "no-record"])
def test_tampered_library_is_rebuilt_and_never_loaded(cache, monkeypatch, recorded):
    """Bytes appended to the user's own library (it would still load), against the record of the original bytes
    or without a record: rebuilt once, and only the rebuilt library is loaded."""
    plant(cache.target, cache.output, "of the data" if recorded else None)
    with open(cache.target, "ab") as file:
        file.write(b"planted")
    real_cdll, loaded = ctypes.CDLL, []

    def spy(name, *args, **kwargs):
        loaded.append(sha256(Path(name).read_bytes()))
        return real_cdll(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", spy)
    assert onednn_conv.problem() is None
    assert len(cache.compiled) == 1 and loaded == [sha256(cache.output)]
    assert cache.target.read_bytes() == cache.output


@needs_build
@pytest.mark.parametrize("data, digest", [(b"", "of the data"), (b"\x7fELF and then garbage", None)],
                         ids=["empty-recorded", "garbage-unrecorded"])
def test_unloadable_library_is_rebuilt_once(cache, data, digest):
    """A library that does not load (empty, its sha256 recorded) or has no record (garbage): rebuilt once, then
    loaded."""
    plant(cache.target, data, digest)
    assert onednn_conv.problem() is None
    assert len(cache.compiled) == 1 and [lib._name for lib in cache.registered] == [str(cache.target)]


@needs_build
def test_a_rebuild_that_does_not_load_either_falls_back(cache):
    """When the rebuilt library does not load either, there is no second rebuild: one warning, XLA."""
    cache.output = b"still not a library"
    plant(cache.target, b"not a library")
    assert_refused_with_one_warning(r"does not load .*; rebuilt, it does not load either")
    assert len(cache.compiled) == 1 and cache.registered == []


@needs_build
def test_a_build_lock_held_too_long_falls_back(cache, monkeypatch):
    """Another process holding the build lock past LOCK_TIMEOUT_S: one warning that says so, XLA, no build. (Here
    the lock is given up after 10 s: without the timeout the build would wait for it, then succeed.)"""
    monkeypatch.setattr(onednn_conv, "LOCK_TIMEOUT_S", 0.5)
    cache.dir.mkdir(mode=0o700)
    holder = filelock.FileLock(str(cache.target) + ".lock", thread_local=False)
    holder.acquire()
    release = threading.Timer(10.0, holder.release)
    release.start()
    try:
        start = time.monotonic()
        assert_refused_with_one_warning(r"another process has held the build lock .*\.so\.lock for 0\.5 s")
        assert time.monotonic() - start < 10.0 and cache.compiled == []
    finally:
        release.cancel()
        holder.release()


def test_key_changes_with_every_input_of_the_build(tmp_path, monkeypatch):
    """The library's name changes with the source, the compiler's flags, path and version, oneDNN's headers and
    library (contents, at the same size), jaxlib's version, the FFI headers, the architecture and the CPU's flags;
    it is the same for the same inputs, computed once per process."""
    prefix, ffi, source, cpuinfo = tmp_path / "prefix", tmp_path / "ffi", tmp_path / "conv.cc", tmp_path / "cpuinfo"
    header, library = prefix / "include" / onednn_conv.ONEDNN_HEADER, prefix / "lib" / onednn_conv.ONEDNN_LIBRARY
    for path, text in [(header, "// dnnl 1\n"), (library, "library 1"), (ffi / "xla" / "ffi" / "api" / "ffi.h", "1"),
                       (source, "// conv\n"), (cpuinfo, "processor\t: 0\nflags\t\t: fpu sse2\n")]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    compilers = [tmp_path / name / "c++" for name in ("one", "two")]
    for compiler in compilers:  # prints the version in the file beside the script
        compiler.parent.mkdir()
        compiler.write_text('#!/bin/sh\ncat "$(dirname "$0")/../version"\n')
        compiler.chmod(0o755)
    (tmp_path / "version").write_text("fake c++ 1.0\n")
    monkeypatch.setenv("SELECTIVITY_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{compilers[0].parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CXX", "c++")
    monkeypatch.setattr(onednn_conv, "SOURCE", source)
    monkeypatch.setattr(onednn_conv, "CPUINFO", cpuinfo)
    monkeypatch.setattr(jax.ffi, "include_dir", lambda: str(ffi))

    def name() -> str:
        onednn_conv._build_key.cache_clear()
        return onednn_conv._library_path(prefix).name

    changes = {
        "source": lambda: source.write_text("// conv, edited\n"),
        "flags": lambda: monkeypatch.setenv("CXX", "c++ -march=native"),
        "compiler path": lambda: monkeypatch.setenv("PATH", f"{compilers[1].parent}{os.pathsep}{os.environ['PATH']}"),
        "compiler version": lambda: (tmp_path / "version").write_text("fake c++ 1.1\n"),
        "oneDNN headers": lambda: header.write_text("// dnnl 2\n"),
        "oneDNN library": lambda: library.write_text("library 2"),
        "jaxlib version": lambda: monkeypatch.setattr(jaxlib, "__version__", jaxlib.__version__ + ".test"),
        "FFI headers": lambda: (ffi / "xla" / "ffi" / "api" / "ffi.h").write_text("2"),
        "architecture": lambda: monkeypatch.setattr(platform, "machine", lambda: "riscv64"),
        "CPU flags": lambda: cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f\n"),
    }
    try:
        names = [name()]
        assert name() == names[0]
        for what, change in changes.items():
            change()
            names.append(name())
            assert names[-1] != names[-2], f"the key ignores the {what}"
        assert len(set(names)) == len(names)
        digests = []
        monkeypatch.setattr(onednn_conv, "_file_digest", lambda path: digests.append(path) or "digest")
        onednn_conv._build_key.cache_clear()
        first = onednn_conv._library_path(prefix)
        assert onednn_conv._library_path(prefix) == first and len(digests) == 3  # headers, library, FFI: once
    finally:
        onednn_conv._build_key.cache_clear()
