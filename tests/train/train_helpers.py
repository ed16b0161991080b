"""Shared pieces of the trainer's tests: a small JSONL data set next to its images, and runs of the trainer.
Imported by name (tests/conftest.py is the `conftest` module), fixtures included.

Everything trains the jvlm-tiny fixture (random weights, official format) with max_crops 1 (two crops per image),
float32 and a handful of steps, so that runs take seconds and results are comparable to float tolerance.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from minivlm.train.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "jvlm-tiny"
COMMON = ["--model", str(FIXTURE), "--dtype", "float32", "--lr", "1e-3", "--set", "max_crops=1",
          "--set", "progress=false"]

RECORDS = [
    {"image": "images/box.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is in the picture?"}, {"from": "gpt", "value": "A red box."},
        {"from": "human", "value": "Anything else?"}, {"from": "gpt", "value": "No, nothing."}]},
    {"images": ["images/box.png"], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"},
                  {"role": "assistant", "content": "hi there"}]},
    {"conversations": [{"from": "human", "value": "Sky?"}, {"from": "gpt", "value": "blue"},
                       {"from": "human", "value": "Grass?"}, {"from": "gpt", "value": "green"}]},
    {"messages": [{"role": "user", "content": "Count to three"}, {"role": "assistant", "content": "one two three"}]},
]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Path:
    """data.jsonl: two image records (LLaVA, chat messages) and three text-only ones; image paths relative."""
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    Image.open(FIXTURE / "images" / "rgb_378x378.png").convert("RGB").resize((200, 150)).save(root / "images" / "box.png")
    return write_jsonl(root / "data.jsonl", RECORDS)


@pytest.fixture(scope="session")
def text_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text")
    return write_jsonl(root / "text.jsonl", [r for r in RECORDS if "image" not in r and "images" not in r])


def train(out: Path, *args: str) -> list[dict]:
    """`python -m minivlm.train` in this process; returns losses.csv's rows."""
    main([*COMMON, "--out", str(out), *args])
    return read_losses(out)


def torchrun(out: Path, nproc: int, *args: str) -> list[dict]:
    """The same command under `torchrun --standalone --nproc_per_node N` (CPU: gloo)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "minivlm.train", *COMMON, "--out", str(out), *args]
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_losses(out)


def read_losses(out: Path) -> list[dict]:
    with open(out / "losses.csv", newline="") as f:
        return list(csv.DictReader(f))


def copy_fixture(dst: Path) -> Path:
    shutil.copytree(FIXTURE, dst)
    return dst
