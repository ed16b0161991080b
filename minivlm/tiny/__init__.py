"""The embedded demo model: a Jina-VLM in miniature, trained from scratch on a synthetic task (coloured shapes).

    task.py        the images and the questions (4 languages)
    tokenizer.py   its byte-level BPE tokenizer, trained on the task's strings
    checkpoint.py  its config (the release's, with small sizes) and initial weights, in the official format
    data.py        the task as chat records (captions, multi-turn questions): the sources of the trainer's tiny recipe
    pretrain.py    stage 0, standing in for SigLIP2's pretraining: the ViT and connector on images, with a probe
    eval.py        exact-match accuracy on fresh questions

The trained checkpoint ships inside the package (`DEMO_DIR`), so it is there wherever minivlm is installed.
"""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "minivlm-tiny"
