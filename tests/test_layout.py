"""The package's floors: minivlm/core (the model) imports nothing from the rest of minivlm, no file formats, no PIL
and no compiled extensions, and data flows one way through it (no component imports one further down the chain)."""

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "minivlm" / "core"
FORBIDDEN = ("PIL", "json", "safetensors", "tokenizers", "jinja2", "huggingface_hub", "transformers",
             "torch.utils.cpp_extension", "minivlm.formats", "minivlm.accel", "minivlm.tools", "minivlm.tiny",
             "minivlm.vlm", "minivlm.generate")
# The data flow: a module may import only modules before it in this order.
FLOW = ["config", "tokens", "batch", "layers", "tiler", "patch_embed", "vit", "pooler", "rope", "decoder",
        "sampler", "generation"]


def imports(path: Path) -> list[str]:
    """Every module a file imports (relative imports resolved against minivlm.core), at any depth in the file."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.append(node.module)
            else:
                base = ["minivlm", "core"][:3 - node.level]  # level 1: minivlm.core, level 2: minivlm
                module = ".".join(base + ([node.module] if node.module else []))
                names += [module] if node.module else [f"{module}.{a.name}" for a in node.names]
    return names


CORE_FILES = sorted(CORE.glob("*.py"))


def test_every_core_file_is_in_the_flow():
    assert {p.stem for p in CORE_FILES} - {"__init__"} == set(FLOW)


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_nothing_outside_the_model(path):
    bad = [name for name in imports(path)
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
           or name.startswith("minivlm.") and not name.startswith("minivlm.core")]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", [p for p in CORE_FILES if p.stem != "__init__"], ids=lambda p: p.name)
def test_data_flows_one_way(path):
    later = FLOW[FLOW.index(path.stem) + 1:]
    back = [name for name in imports(path) if name.startswith("minivlm.core.") and name.split(".")[2] in later]
    assert not back, f"{path.name} reaches down the chain: {back}"


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """The walk finds imports inside functions too, and relative ones."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ..formats import weights\n    import PIL.Image\n")
    assert imports(bad) == ["minivlm.formats", "PIL.Image"]
