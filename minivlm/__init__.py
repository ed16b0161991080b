"""minivlm: a from-scratch, readable PyTorch implementation of Jina-VLM (jinaai/jina-vlm).

    minivlm/core/      the model, in plain torch: tiler -> patch embed -> ViT -> pooler -> decoder -> sampler
    minivlm/formats/   the official files (config, safetensors, tokenizer, chat template, images, processor)
    minivlm/accel/     optional speed-ups that plug into core.layers.hooks
    minivlm/tools/     the benchmark; minivlm/tiny/: the embedded demo model
"""

from .vlm import VLM, GenerationResult, load

__all__ = ["VLM", "GenerationResult", "load"]
