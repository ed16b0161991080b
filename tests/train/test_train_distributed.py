"""torchrun on CPU (gloo), two processes, gives the run of one process with the same global batch: the same
losses and the same final weights, with DistributedDataParallel and with FSDP2 (fully_shard per block).

The data mix image and text-only records, so some steps give one process only text (the vision tower then runs
on a padding crop times zero on that process, see module.py); the DDP run also accumulates two micro-batches.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import data, torchrun, train  # noqa: F401,F811 (data: a fixture)

# Weights are compared to float tolerance AS ADAM SEES IT: Adam divides each gradient by its own running size, so
# an element whose gradient is rounding noise (exactly zero in exact arithmetic: key biases, which softmax ignores)
# moves by up to ±lr whatever the noise's size. AdamW's eps at 1e-6 damps that; the rare elements with gradients
# near eps still differ by a few percent of one step (lr 1e-3), so: every element within 1e-4, the mean within 1e-6.
ARGS = ["--steps", "3", "--batch-size", "4", "--seed", "3", "--set", "eps=1e-6"]


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    return train(out, "--data", str(data), *ARGS), load_file(out / "model.safetensors")


@pytest.mark.parametrize("engine, extra", [("ddp", ["--set", "grad_accum=2"]), ("fsdp", [])])
def test_two_processes_equal_one(single, data, tmp_path, engine, extra):
    rows, weights = single
    dist_rows = torchrun(tmp_path, 2, "--data", str(data), *ARGS, "--parallel", engine, *extra)
    assert [float(r["tokens"]) for r in dist_rows] == [float(r["tokens"]) for r in rows]
    torch.testing.assert_close(torch.tensor([float(r["loss"]) for r in dist_rows]),
                               torch.tensor([float(r["loss"]) for r in rows]), rtol=1e-5, atol=1e-6)
    dist_weights = load_file(tmp_path / "model.safetensors")
    assert dist_weights.keys() == weights.keys()
    for key, w in weights.items():
        torch.testing.assert_close(dist_weights[key], w, rtol=0, atol=1e-4, msg=key)
        assert (dist_weights[key] - w).abs().mean() < 1e-6, key
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
