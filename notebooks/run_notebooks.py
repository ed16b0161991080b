"""Execute the notebooks top to bottom, as CI does, and optionally store them with their outputs.

    python notebooks/run_notebooks.py                  # run every notebook, print the time each took
    python notebooks/run_notebooks.py --save           # ... and save them in place, outputs included (make notebooks)
    python notebooks/run_notebooks.py 03 --save        # only the notebooks whose name starts with 03

The kernel is always the Python running this script (the project's .venv), whatever kernels Jupyter has
registered elsewhere. Each notebook runs with notebooks/ as its working directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent
CELL_TIMEOUT_S = 300
MAX_BYTES = 1_500_000  # each stored notebook, figures included, must stay under this


def notebooks(prefixes: list[str] | None = None) -> list[Path]:
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    return [p for p in paths if not prefixes or any(p.name.startswith(x) for x in prefixes)]


def _kernel_manager(spec_dir: Path) -> KernelManager:
    """A 'python3' kernel that is this interpreter, not whatever `python` is first on PATH."""
    kernel = spec_dir / "python3"
    kernel.mkdir(parents=True, exist_ok=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    return KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir)]))


def execute(path: Path, timeout: int = CELL_TIMEOUT_S) -> tuple[nbformat.NotebookNode, float]:
    """Run one notebook in a fresh kernel; raises nbclient's CellExecutionError on the first failing cell."""
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as spec_dir:
        client = NotebookClient(nb, km=_kernel_manager(Path(spec_dir)), timeout=timeout, kernel_name="python3",
                                record_timing=False, resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    return nb, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="run only notebooks whose file name starts with one of these")
    parser.add_argument("--save", action="store_true", help="write the executed notebooks back, outputs included")
    args = parser.parse_args()
    total = 0.0
    for path in notebooks(args.prefixes):
        nb, seconds = execute(path)
        total += seconds
        size = ""
        if args.save:
            nbformat.write(nb, path)
            size = f"  {path.stat().st_size / 1e6:.2f} MB" + ("  TOO LARGE" if path.stat().st_size >= MAX_BYTES else "")
        print(f"{path.name:32s} {seconds:6.1f} s{size}", flush=True)
    print(f"{'total':32s} {total:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
