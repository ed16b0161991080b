"""notebooks/: every notebook runs top to bottom in a fresh kernel, and is stored executed, error-free and small.

The notebooks are executed exactly as `make notebooks` does (notebooks/run_notebooks.py: nbclient, a kernel that
is this Python, notebooks/ as the working directory). Needs the `notebooks` extra: pip install -e ".[notebooks]".
"""

import importlib.util
from pathlib import Path

import pytest

for module in ("nbformat", "nbclient", "ipykernel", "matplotlib"):
    pytest.importorskip(module, reason='the notebooks need the "notebooks" extra: pip install -e ".[notebooks]"')

import nbformat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "notebooks" / "run_notebooks.py")
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)
NOTEBOOKS = runner.notebooks()
EXPECTED = ["01_tiles_and_tokens", "02_vision_encoder", "03_attention_pooler", "04_decoder", "05_parity",
            "06_train_tiny"]


def errors_in(nb) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.output_type == "error"]


def test_the_reading_order_is_complete():
    assert [p.stem for p in NOTEBOOKS][:len(EXPECTED)] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path):
    nb, _ = runner.execute(path)  # raises CellExecutionError, with the failing cell and its traceback
    assert not errors_in(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_with_outputs_and_small(path):
    size = path.stat().st_size
    assert size < runner.MAX_BYTES, f"{path.name} is {size:,} bytes; keep figures small (dpi 80, PNG)"
    text = path.read_text(encoding="utf-8")
    assert str(ROOT) not in text, f"{path.name} shows this machine's path {ROOT}; print paths relative to the repository"
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name} is not stored as one clean run: run `make notebooks`"
    assert not errors_in(nb)
    assert any(o.output_type == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells if c.cell_type == "code" for o in c.outputs), f"{path.name} has no figure"
