"""weights.py: loading a float32 checkpoint as bfloat16 never holds both full copies.

Measured in a fresh process (peak RSS is per process): a checkpoint whose two 205 MB float32 tables dominate is
loaded as bfloat16. Holding the memory-mapped float32 file and the bfloat16 copies at once would add ~615 MB;
tensor-by-tensor casting adds the bfloat16 copies (~205 MB) plus at most one float32 tensor in flight (~205 MB).
"""

import json
import shutil
import subprocess
import sys

import torch
from conftest import FIXTURE_DIR
from safetensors.torch import save_file

from minivlm.formats.config_json import load_config
from minivlm.formats.weights import expected_shapes

VOCAB, WIDTH = 200_000, 256  # one [200000, 256] float32 table = 204.8 MB

MEASURE = """
import resource, sys, torch
from minivlm.formats.config_json import load_config
from minivlm.formats.weights import load_weights
cfg = load_config(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
weights = load_weights(sys.argv[1], cfg, dtype=torch.bfloat16)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024 / 1e6, sum(t.numel() * t.element_size() for t in weights.values()) / 1e6)
"""


def test_float32_to_bfloat16_load_peaks_below_both_copies(tmp_path):
    config = json.loads((FIXTURE_DIR / "config.json").read_text())
    config["text_config"].update(hidden_size=WIDTH, vocab_size=VOCAB, embedding_size=VOCAB)
    config["vision_config"]["output_size"] = WIDTH
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(FIXTURE_DIR / "preprocessor_config.json", tmp_path)
    shapes = expected_shapes(load_config(tmp_path))
    save_file({k: torch.randn(s) * 0.02 for k, s in shapes.items()}, tmp_path / "model.safetensors")
    float32_mb = sum(torch.Size(s).numel() * 4 for s in shapes.values()) / 1e6

    done = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path)], capture_output=True, text=True, check=True)
    growth_mb, bf16_mb = map(float, done.stdout.split())
    largest_float32_mb = VOCAB * WIDTH * 4 / 1e6
    assert growth_mb < bf16_mb + largest_float32_mb + 60, (growth_mb, bf16_mb, float32_mb)
    assert growth_mb < float32_mb + bf16_mb - 100  # clearly below "both copies"
