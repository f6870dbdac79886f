"""selectivity_jax.configs: the installed loader gives every config file's ConfigDict, from any working directory
(no checkout on sys.path), names unknown configs cleanly, and leaves a ``configs`` package of the user's alone; the
package built by setup.cfg holds the config files (as selectivity_jax._config_files, not a top-level configs)."""

import importlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import types
import zipfile

import pytest

from selectivity_jax import configs as loader

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if p.stem != "__init__")
SPECS = [*FILES, "quickstart:tiny"]


def _from_file(spec: str) -> dict:
    """What importing configs/<name>.py from the repository root gives (the command lines' configs)."""
    name, _, variant = spec.partition(":")
    module = importlib.import_module(f"configs.{name}")
    return (module.get_config(variant) if variant else module.get_config()).to_dict()


def test_every_config_file_is_known():
    assert loader.names() == tuple(FILES) and len(FILES) >= 13
    assert loader.directory().resolve() == (ROOT / "configs").resolve()  # the editable install reads the folder


@pytest.mark.parametrize("spec", SPECS)
def test_loader_gives_the_config_files_configs(spec):
    repo_configs = importlib.import_module("configs")
    assert loader.get_config(spec).to_dict() == _from_file(spec)
    assert sys.modules["configs"] is repo_configs  # the process's own configs package is back


def test_analysis_settings():
    settings = loader.analysis_settings()
    assert settings.to_dict() == _from_file("analysis")
    for name in ("rotation", "attacks", "classes"):
        assert loader.default_settings(name).to_dict() == settings[name].to_dict()
    with pytest.raises(ValueError, match="unknown analysis 'rotations'"):
        loader.default_settings("rotations")


def test_unknown_names_are_clean_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config 'cifar10_resnet2'; known: analysis, base, .*quickstart"):
        loader.get_config("cifar10_resnet2")
    with pytest.raises(ValueError, match="takes no variant"):
        loader.get_config("cifar10_resnet20:tiny")
    with pytest.raises(ValueError, match="unknown quickstart variant"):
        loader.get_config("quickstart:huge")
    with pytest.raises(ValueError, match="no config file"):
        loader.get_config(str(tmp_path / "missing.py"))


def test_config_file_by_path_and_a_users_configs_package(tmp_path, monkeypatch):
    """A config file elsewhere may import the project's configs by their usual name; a ``configs`` module the
    process already holds (the user's) is the one in sys.modules before and after."""
    mine = tmp_path / "mine.py"
    mine.write_text("from configs import quickstart\n\n\ndef get_config(variant=None):\n"
                    "    config = quickstart.get_config(variant)\n    config.seed = 7\n    return config\n")
    users = types.ModuleType("configs")
    monkeypatch.setitem(sys.modules, "configs", users)
    for key in [key for key in sys.modules if key.startswith("configs.")]:
        monkeypatch.delitem(sys.modules, key)
    config = loader.get_config(f"{mine}:tiny")
    assert config.seed == 7 and config.model.width == 4
    assert sys.modules["configs"] is users and not [key for key in sys.modules if key.startswith("configs.")]


_SCRIPT = """
import importlib.util, json, sys
assert importlib.util.find_spec("configs") is None and importlib.util.find_spec("experiments") is None
import selectivity_jax
assert "selectivity_jax.configs" not in sys.modules  # importing the package loads no config
from selectivity_jax import configs
installed = importlib.util.find_spec("selectivity_jax._config_files")
out = {"installed": installed is not None and str(configs.directory()) in installed.submodule_search_locations,
       "configs": {spec: repr(configs.get_config(spec).to_dict()) for spec in sys.argv[1:]},
       "rotation": repr(configs.default_settings("rotation").to_dict())}
try:
    configs.get_config("nope")
except ValueError as error:
    out["error"] = str(error)
print(json.dumps(out))
"""


def _outside_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONSAFEPATH"] = "1"  # nothing from the working directory either
    return env


def test_installed_loader_from_outside_the_repository(tmp_path):
    """The venv's interpreter, started in a temporary directory without the repository on sys.path (``import
    configs`` fails there), reads the configs through the installed package: the same ConfigDicts."""
    done = subprocess.run([sys.executable, "-c", _SCRIPT, *SPECS], cwd=tmp_path, env=_outside_env(), check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["installed"], "the config files are not installed: run pip install -e . again (setup.cfg's packages)"
    assert out["configs"] == {spec: repr(_from_file(spec)) for spec in SPECS}
    assert out["rotation"] == repr(_from_file("analysis")["rotation"])
    assert out["error"].startswith("unknown config 'nope'; known: analysis, base, cifar10_jpeg_resnet20")


def test_built_package_holds_the_config_files(tmp_path):
    """The wheel setup.cfg builds holds every module of the library and every config file, under
    selectivity_jax/_config_files/ (no top-level configs/); installed alone, it serves them."""
    pytest.importorskip("setuptools")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("selectivity_jax", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    packaged = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith((".py", ".cc"))}
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "selectivity_jax").rglob("*")
                if p.suffix in (".py", ".cc") and "__pycache__" not in p.parts}
    expected |= {f"selectivity_jax/_config_files/{p.name}" for p in (ROOT / "configs").glob("*.py")}
    assert packaged == expected
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    script = ("import json, selectivity_jax.configs as c; "
              "print(json.dumps([c.__file__, str(c.directory()), c.get_config('quickstart:tiny').to_dict()]))")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False,
                          env={**_outside_env(), "PYTHONPATH": str(tmp_path / "site")}, timeout=300)
    assert done.returncode == 0, done.stderr
    module, folder, tiny = json.loads(done.stdout.strip().splitlines()[-1])
    assert module.startswith(str(tmp_path / "site")) and folder.startswith(str(tmp_path / "site"))
    assert tiny == json.loads(json.dumps(_from_file("quickstart:tiny")))
