"""hub.py: Hugging Face ids resolved through huggingface_hub's standard cache, checked offline against a cache
laid out by hand (HF_HOME, HF_HUB_OFFLINE=1; huggingface_hub reads them at import, hence subprocesses)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import CASES, FIXTURE_DIR

from minivlm.hub import resolve_checkpoint
from minivlm.tiny import DEMO_DIR

COMMIT = "0123456789abcdef0123456789abcdef01234567"
FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
         "preprocessor_config.json", "processor_config.json"]


@pytest.fixture
def hf_home(tmp_path):
    """An HF cache holding the fixture checkpoint as jinaai/jina-vlm, main -> COMMIT, as huggingface_hub lays it out."""
    repo = tmp_path / "hf" / "hub" / "models--jinaai--jina-vlm"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for name in FILES:
        shutil.copy(FIXTURE_DIR / name, snapshot / name)
    return tmp_path / "hf"


def run_offline(hf_home, args, cwd):
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def test_generate_runs_a_hub_id_from_the_cache(hf_home, tmp_path):
    case = next(c for c in CASES if c["name"] == "text_only")
    done = run_offline(hf_home, ["-m", "minivlm.generate", "--model", "jinaai/jina-vlm", "--revision", COMMIT,
                                 "--prompt", case["prompt"], "--raw", "--max-new-tokens", "8", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["token_ids"] == case["generated_ids"]


def test_load_and_the_offline_messages(hf_home, tmp_path):
    script = """
import minivlm
from minivlm.hub import resolve_checkpoint
print(resolve_checkpoint("jinaai/jina-vlm"))
print(minivlm.load("jinaai/jina-vlm", revision="main").cfg.text.n_layers)
for name, revision in [("jinaai/jina-vlm", "v9"), ("nobody/minivlm-tiny", None), ("jinaai/other", None)]:
    try:
        resolve_checkpoint(name, revision)
    except FileNotFoundError as e:
        print(e)
"""
    done = run_offline(hf_home, ["-c", script], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == str(hf_home / "hub" / "models--jinaai--jina-vlm" / "snapshots" / COMMIT)
    assert lines[1] == "3"
    assert lines[2].startswith("jinaai/jina-vlm at revision v9 is not in the Hugging Face cache") and \
        "HF_HUB_OFFLINE is set; get it with `hf download jinaai/jina-vlm --revision v9`" in lines[2] and \
        "make weights" in lines[2]
    # Never the shipped demo model, nor a folder named after another owner's model.
    assert lines[3].startswith("nobody/minivlm-tiny is not in the Hugging Face cache")
    assert "make weights" not in lines[3]
    assert lines[4].startswith("jinaai/other is not in the Hugging Face cache")


def test_generate_offline_without_a_copy_says_how_to_get_it(hf_home, tmp_path):
    done = run_offline(hf_home, ["-m", "minivlm.generate", "--model", "someone/missing", "--prompt", "x"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.splitlines()[-1]]  # one line
    assert "hf download someone/missing" in done.stderr


def test_make_weights_link(hf_home, tmp_path):
    done = run_offline(hf_home, ["-m", "minivlm.hub", "jinaai/jina-vlm", "--link", str(tmp_path / "w" / "jina-vlm")],
                       tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "w" / "jina-vlm" / "config.json").is_file()
    assert (tmp_path / "w" / "jina-vlm").resolve() == (hf_home / "hub" / "models--jinaai--jina-vlm" / "snapshots"
                                                       / COMMIT).resolve()


def test_local_names(tmp_path, monkeypatch):
    assert resolve_checkpoint("minivlm-tiny") == DEMO_DIR
    assert resolve_checkpoint(FIXTURE_DIR) == FIXTURE_DIR
    monkeypatch.chdir(tmp_path)
    (tmp_path / "minivlm-tiny").mkdir()
    assert resolve_checkpoint("minivlm-tiny").resolve() == (tmp_path / "minivlm-tiny").resolve()  # a folder wins
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        resolve_checkpoint("./not/here")


def test_without_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    with pytest.raises(FileNotFoundError, match=r"needs huggingface_hub: pip install 'minivlm\[hub\]'"):
        resolve_checkpoint("jinaai/jina-vlm")
