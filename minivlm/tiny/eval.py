"""Exact-match accuracy of a checkpoint on fresh questions of the shapes task (`minivlm.tiny.task`).

    python -m minivlm.tiny.eval -n 400 --seed 12345

Draws n images and questions with the task's own sampler (`tiny_task.sample_scene`: uniform language, uniform
question type) from `--seed`, asks each through the checkpoint's chat template exactly as
`python -m minivlm.generate` does (greedy), and counts an answer as right only when the generated text is
exactly the expected string AND generation stopped there with an end-of-turn token. Prints a table of
accuracy per language x question type, and separately on the count questions (of a kind or of a colour)
about scenes where two or more shapes share kind and colour, which the previous demo model could not count;
`evaluate()` returns the same numbers.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from pathlib import Path

import torch

from ..vlm import VLM, load
from . import DEMO_DIR
from . import task as tiny_task

DEFAULT_MODEL = DEMO_DIR


def evaluate(model: str | Path | VLM = DEFAULT_MODEL, n: int = 400, seed: int = 12345, batch_size: int = 16,
             verbose: bool = False) -> dict[str, float]:
    """Accuracy (0..1) keyed "overall", each language ("en"), each type ("count"), each "en/count" cell, and
    "identical" (count questions about scenes with identical shapes) with its "identical/count" and
    "identical/count_color" parts; counts of questions under "n:" + the same keys."""
    vlm = model if isinstance(model, VLM) else load(model)
    rng = random.Random(seed)
    items = [tiny_task.sample_scene(rng) for _ in range(n)]
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for start in range(0, n, batch_size):
        chunk = items[start:start + batch_size]
        prompts = [vlm.render_chat([{"role": "user", "content": qa.question}], 1) for _, qa in chunk]
        images = [[tiny_task.render(scene)] for scene, _ in chunk]
        with torch.inference_mode():
            results = vlm.generate_batch(prompts, images, max_new_tokens=8)
        for (scene, qa), result in zip(chunk, results):
            ok = result.text == qa.answer and bool(result.token_ids) and result.token_ids[-1] in vlm.stop_ids
            keys = ["overall", qa.language, qa.qtype, f"{qa.language}/{qa.qtype}"]
            if qa.qtype in tiny_task.COUNT_TYPES and tiny_task.has_identical_shapes(scene):
                keys += ["identical", f"identical/{qa.qtype}"]
            for key in keys:
                right[key] += ok
                total[key] += 1
            if verbose and not ok:
                print(f"  wrong: {qa.question!r} expected {qa.answer!r}, got {result.text!r}", file=sys.stderr)
    scores: dict[str, float] = {key: right[key] / total[key] for key in total}
    scores.update({f"n:{key}": total[key] for key in total})
    return scores


def format_table(scores: dict[str, float]) -> str:
    """Languages as rows, question types as columns, accuracy in % with the question count; then the count
    questions about scenes with identical shapes."""
    cell = lambda key: f"{100 * scores[key]:5.1f}% ({scores['n:' + key]:3d})" if key in scores else "-"
    header = f"{'':8}" + "".join(f"{t:>15}" for t in tiny_task.QTYPES) + f"{'all':>15}"
    rows = [header]
    for lang in tiny_task.LANGUAGES:
        rows.append(f"{lang:8}" + "".join(f"{cell(f'{lang}/{t}'):>15}" for t in tiny_task.QTYPES)
                    + f"{cell(lang):>15}")
    rows.append(f"{'all':8}" + "".join(f"{cell(t):>15}" for t in tiny_task.QTYPES) + f"{cell('overall'):>15}")
    parts = ", ".join(f"{t} {cell(f'identical/{t}').strip()}" for t in tiny_task.COUNT_TYPES)
    rows.append(f"count questions about scenes with identical shapes: {cell('identical').strip()} ({parts})")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minivlm.tiny.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint folder (default: the shipped tiny model)")
    p.add_argument("-n", type=int, default=400, help="number of fresh questions")
    p.add_argument("--seed", type=int, default=12345, help="seed of the drawn images and questions")
    p.add_argument("--verbose", action="store_true", help="print every wrong answer")
    args = p.parse_args(argv)
    scores = evaluate(args.model, args.n, args.seed, verbose=args.verbose)
    print(f"exact match on {args.n} fresh questions (seed {args.seed}), {args.model}:")
    print(format_table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
