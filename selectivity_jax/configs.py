"""The project's configs by name, from wherever the package is installed: no checkout or working directory needed.

The config files live in the repository's ``configs/`` folder (the command lines take ``--config configs/x.py``);
``pip install`` puts a copy of them in the package as ``selectivity_jax._config_files`` (an editable install reads
the folder itself). `get_config` returns the ConfigDict a file's ``get_config()`` builds::

    from selectivity_jax.configs import analysis_settings, get_config
    config = get_config("quickstart:tiny")     # configs/quickstart.py's get_config("tiny")
    settings = analysis_settings()             # configs/analysis.py: every analysis' settings

The files import each other as ``configs.<name>`` (``from configs import base``). While a file loads, the name
``configs`` is bound to the installed folder, and whatever ``configs`` modules the process held before are put
back afterwards: a ``configs`` package of the user's own is never replaced for longer than a load. Importing this
module loads nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import pathlib
import sys
import threading
from collections.abc import Iterator

import ml_collections

_PACKAGE = "selectivity_jax._config_files"  # setup.cfg installs configs/ under this name
_ALIAS = "configs"                          # the name the config files import each other by
_LOCK = threading.Lock()


def directory() -> pathlib.Path:
    """The folder holding the config files: the installed copy, else (a source tree on sys.path, not installed)
    the ``configs/`` folder beside the package."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return pathlib.Path(next(iter(spec.submodule_search_locations)))
    beside = pathlib.Path(__file__).resolve().parents[1] / "configs"
    if (beside / "base.py").is_file():
        return beside
    raise FileNotFoundError(f"the config files are not installed ({_PACKAGE} not found): reinstall selectivity_jax "
                            "(pip install .)")


def names() -> tuple[str, ...]:
    """The configs `get_config` knows by name: the file names of the config folder, sorted, without ``.py``."""
    return tuple(sorted(p.stem for p in directory().glob("*.py") if not p.stem.startswith("_")))


def _split(name: str) -> tuple[str, str]:
    """``'quickstart:tiny'`` -> ('quickstart', 'tiny'); a path ending in .py keeps its colons (drive letters)."""
    stem, colon, variant = name.rpartition(":")
    if not colon or name.endswith(".py") or "/" in variant or os.sep in variant:
        return name, ""
    return stem, variant


def _resolve(stem: str) -> pathlib.Path:
    """The file of a config name or path, or a ValueError naming the known configs."""
    if stem.endswith(".py") or "/" in stem or os.sep in stem:
        path = pathlib.Path(stem)
        if not path.is_file():
            raise ValueError(f"no config file {stem} (known configs: {', '.join(names())})")
        return path.resolve()
    if stem not in names():
        raise ValueError(f"unknown config {stem!r}; known: {', '.join(names())} (or a path to a config file)")
    return directory() / f"{stem}.py"


def _held() -> dict:
    return {key: module for key, module in sys.modules.items() if key == _ALIAS or key.startswith(_ALIAS + ".")}


@contextlib.contextmanager
def _files_as_configs(folder: pathlib.Path) -> Iterator[None]:
    """``import configs.<name>`` reads ``folder`` while the block runs; the process's own ``configs`` modules (if
    any) are back in sys.modules afterwards."""
    with _LOCK:
        saved = _held()
        for key in saved:
            del sys.modules[key]
        try:
            spec = importlib.util.spec_from_file_location(_ALIAS, folder / "__init__.py",
                                                          submodule_search_locations=[str(folder)])
            package = importlib.util.module_from_spec(spec)
            sys.modules[_ALIAS] = package
            spec.loader.exec_module(package)
            yield
        finally:
            for key in _held():
                del sys.modules[key]
            sys.modules.update(saved)


def _load_file(path: pathlib.Path, folder: pathlib.Path):
    """The module of config file ``path``: ``configs.<stem>`` for a file of ``folder``, else a private name."""
    if path.parent == folder.resolve():
        return importlib.import_module(f"{_ALIAS}.{path.stem}")
    spec = importlib.util.spec_from_file_location(f"{_ALIAS}.__file_{path.stem}__", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def get_config(name: str) -> ml_collections.ConfigDict:
    """The ConfigDict of a config: a name of `names` (``'cifar10_resnet20'``), optionally with the argument its
    ``get_config`` takes (``'quickstart:tiny'``), or a path to a config file (``'my/config.py[:variant]'``,
    relative to the working directory). Unknown names and missing files raise ValueError."""
    stem, variant = _split(name)
    folder = directory()
    path = _resolve(stem)
    with _files_as_configs(folder):
        module = _load_file(path, folder)
        if not hasattr(module, "get_config"):
            raise ValueError(f"{path.name} defines no get_config(): not a config file")
        if variant and not inspect.signature(module.get_config).parameters:
            raise ValueError(f"config {stem!r} takes no variant (got {name!r})")
        return module.get_config(variant) if variant else module.get_config()


def analysis_settings() -> ml_collections.ConfigDict:
    """The settings of the analyses (configs/analysis.py): the shared fields and one section per analysis."""
    return get_config("analysis")


def default_settings(analysis: str) -> ml_collections.ConfigDict:
    """One analysis' own section of the settings (``analysis_settings()[analysis]``), from its file
    (selectivity_jax/analyses/<analysis>.py); an unknown name raises ValueError listing the known ones."""
    from selectivity_jax import analyses

    return analyses.load(analysis).default_settings()
