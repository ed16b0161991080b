"""Training and fine-tuning (`python -m minivlm.train`): the paper's second half, outside `minivlm.core`.

module.py   the checkpoint's tensors as a thin nn.Module whose forward is minivlm's own functions
data.py     JSONL (LLaVA and chat-messages) and generated sources -> tokenized samples with the loss mask
recipe.py   the recipe file (stages, sources, parameter groups) and its command-line overrides
optim.py    AdamW parameter groups per component, warmup + cosine per group
state.py    official-format checkpoints and exact-resume state (safetensors + JSON, never pickle)
loop.py     the training loop, one process or many (torchrun: DDP or FSDP2)
log.py      the progress line, losses.csv, loss_curve.png
measure.py  seconds and memory of one LoRA step at the release's size (README's numbers)
recipes/    tiny.json (the demo model, after minivlm.tiny.pretrain), jina-vlm-finetune.json
"""
