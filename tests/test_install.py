"""A plain (non-editable) `pip install` works: the demo model ships inside the package and is found from any
working directory. Built and installed into a throw-away virtual environment, with no network: the wheel is
built from a copy of the sources (--no-build-isolation), and the environment borrows this one's dependencies
(torch, numpy, ...) through a .pth line instead of downloading them."""

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd, env=None):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_wheel_installs_and_answers_the_demo_question(tmp_path):
    source = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT / "minivlm", source / "minivlm", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "--wheel-dir",
        tmp_path / "dist", source, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("minivlm-*.whl"))

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel, cwd=tmp_path)
    venv_site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path).strip())
    # A path in a .pth file is appended to sys.path: torch & co. resolve here, and the installed minivlm comes first
    # (.pth files inside the borrowed folder, such as an editable minivlm's, are not run).
    borrowed = {sysconfig.get_path("purelib"), *site.getsitepackages()}
    (venv_site / "borrowed.pth").write_text("\n".join(sorted(borrowed)) + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(python, "-c", "import minivlm; print(minivlm.__file__); "
                "print(minivlm.load('minivlm-tiny').cfg.text.n_layers)", cwd=elsewhere, env=env)
    assert where.splitlines()[0].startswith(str(venv_site)), where
    installed_example = venv_site / "minivlm" / "tiny" / "minivlm-tiny" / "example.png"
    answer = run(python, "-m", "minivlm.generate", "--image", installed_example, "--prompt",
                 "What color is the circle?", cwd=elsewhere, env=env)
    assert answer == "green\n"
