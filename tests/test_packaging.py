"""What the project declares: the licence, the notebooks extra, the make targets users are told about."""

import re
import tomllib
from pathlib import Path

from minivlm.hub import ALLOW_PATTERNS

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAKEFILE = (ROOT / "Makefile").read_text()


def target(name: str) -> str:
    """The recipe of a make target."""
    match = re.search(rf"^{name}:.*\n((?:\t.*\n)+)", MAKEFILE, re.M)
    assert match, f"no make target {name}"
    return match.group(1)


def test_license_file_matches_pyproject():
    assert PYPROJECT["project"]["license"] == "Apache-2.0" and PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_notebooks_extra_installs_jupyterlab_and_make_lab_opens_them():
    assert any(dep.startswith("jupyterlab") for dep in PYPROJECT["project"]["optional-dependencies"]["notebooks"])
    assert "-m jupyterlab notebooks" in target("lab")


def test_make_weights_fetches_the_remote_code_too():
    assert "-m minivlm.hub jinaai/jina-vlm --link weights/jina-vlm" in target("weights")
    assert "*.py" in ALLOW_PATTERNS and "*.safetensors" in ALLOW_PATTERNS  # modeling_jvlm.py & co.


def test_the_demo_model_is_package_data():
    assert "tiny/minivlm-tiny/*" in PYPROJECT["tool"]["setuptools"]["package-data"]["minivlm"]
