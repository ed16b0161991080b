"""`python -m minivlm.bench ... --official DIR`: the official implementation, timed on the same prompt in the same run.

DIR is a Hub download of jinaai/jina-vlm with its remote code (`modeling_jvlm.py` and friends); running that
code needs `transformers` 4.53-4.57. Only `bench --official` imports this file: it is
the one place where the official code runs (through transformers' `trust_remote_code`, on the user's own
download), so that the speed-ups are measured against it, like for like, rather than against figures taken on
another machine. With `--random-init` the official model gets random weights drawn the way minivlm's are.

What is timed, as for minivlm: the vision model (ViT + connector) on all crops; `generate` of one token from
scratch (time to first token); one greedy `generate` of N tokens with the arrival time of each token recorded.
The bench interleaves the two implementations' timed runs (ours, then the official code's, repeat after repeat), so
that a shared machine whose speed drifts over minutes slows both alike; both models are then held at once.
"""

from __future__ import annotations

import statistics
import time
from importlib import metadata
from pathlib import Path

import torch
from torch import Tensor

from .random_init import fill_random_

OFFICIAL_CODE = "modeling_jvlm.py"


def check_official_dir(path: str) -> Path:
    """Fail early, before minutes of timing, if DIR or transformers cannot run the official code. transformers'
    version is read from its package metadata, not imported: the import alone adds 65 MB to the process (2026-12-04,
    transformers 4.57.6), which would land in the peak RSS the bench reports as minivlm's own (measured before the
    official model is built, `prepare_official`, which imports it)."""
    root = Path(path)
    if not (root / OFFICIAL_CODE).is_file() or not (root / "config.json").is_file():
        raise SystemExit(f"--official {path}: no {OFFICIAL_CODE} and config.json there; point it at a download of "
                         f"jinaai/jina-vlm that includes its remote code (make weights)")
    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        raise SystemExit("--official needs transformers: pip install 'transformers>=4.53,<4.58'") from None
    major, minor = (int(part) for part in version.split(".")[:2])
    if not (4, 53) <= (major, minor) < (4, 58):
        raise SystemExit(f"--official: transformers {version} is installed; the official code runs with 4.53 to 4.57")
    return root


def official_model(root: Path, dtype: torch.dtype, random_init: bool) -> torch.nn.Module:
    """The official JinaVLMForConditionalGeneration from `root` with sdpa attention, on CPU in `dtype`."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_utils import no_init_weights

    if not random_init:
        return AutoModelForCausalLM.from_pretrained(root, trust_remote_code=True, torch_dtype=dtype,
                                                    attn_implementation="sdpa").eval()
    config = AutoConfig.from_pretrained(root, trust_remote_code=True)
    for part in (config, config.text_config, config.vision_config):  # each sub-model reads its own setting
        part._attn_implementation = "sdpa"
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in `dtype`: no float32 copy of 2.5 B parameters
    try:
        with no_init_weights():
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    finally:
        torch.set_default_dtype(default)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, parameter in model.named_parameters():  # the names are the checkpoint's keys
            fill_random_(parameter, key, generator)
    return model.eval()


def official_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """minivlm's collated batch of one prompt -> the official forward's arguments (a batch axis on the crops)."""
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "images": batch["images"][None], "image_masks": batch["image_masks"][None],  # [1, crops, ...]
            "image_input_idx": batch["image_input_idx"][None]}


def prepare_official(root: Path, batch: dict[str, Tensor], dtype: torch.dtype, random_init: bool) -> tuple:
    """The official model and its inputs for `batch`, warmed up as minivlm is (a short text-only generation, then
    the whole prompt with 2 new tokens), so that one-time kernel set-up and the first full-size run's fresh memory
    pages are not timed."""
    model, inputs = official_model(root, dtype, random_init), official_inputs(batch)
    with torch.inference_mode():
        model.generate(input_ids=inputs["input_ids"][:, -8:], attention_mask=inputs["attention_mask"][:, -8:],
                       generation_config=_greedy(2))
        model.generate(**inputs, generation_config=_greedy(2))
    return model, inputs


def _greedy(n: int):
    """Exactly n new tokens, greedy, KV cache on."""
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                            eos_token_id=None, pad_token_id=0, bos_token_id=None)


def time_official_once(model: torch.nn.Module, inputs: dict[str, Tensor], new_tokens: int) -> dict:
    """One timed run of the official code (CPU): vision_s, ttft_s and decode_tok_s."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class Arrivals(LogitsProcessor):  # called once per new token, when its scores are ready
        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores):
            self.times.append(time.perf_counter())
            return scores

    with torch.inference_mode():
        start = time.perf_counter()
        model.model.vision_model(inputs["images"], inputs["image_masks"])
        vision_s = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(**inputs, generation_config=_greedy(1))
        ttft_s = time.perf_counter() - start
        arrivals = Arrivals()
        model.generate(**inputs, generation_config=_greedy(new_tokens),
                       logits_processor=LogitsProcessorList([arrivals]))
    t = arrivals.times
    decode_tok_s = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else 0.0
    return {"vision_s": vision_s, "ttft_s": ttft_s, "decode_tok_s": decode_tok_s}


def medians(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}
