"""minivlm: a from-scratch, readable PyTorch implementation of Jina-VLM (jinaai/jina-vlm).

    minivlm/core/      the model, in plain torch: tiler -> patch embed -> ViT -> pooler -> decoder -> sampler
    minivlm/formats/   the official files (config, safetensors, tokenizer, chat template, images, processor)
    minivlm/accel/     optional speed-ups that plug into core.layers.hooks
    minivlm/tools/     the benchmark; minivlm/tiny/: the embedded demo model

    vlm = minivlm.load("minivlm-tiny")            # or "jinaai/jina-vlm" (Hugging Face cache), or a folder
    vlm.chat([{"role": "user", "content": "What color is the circle?"}], images=["shapes.png"]).text
    conv = vlm.conversation(); conv.ask("...", images=[...]); conv.ask("a follow-up")   # keeps the KV cache

Commands: python -m minivlm.generate, python -m minivlm.chat, python -m minivlm.bench.
"""

from .vlm import VLM, GenerationResult, load

__all__ = ["VLM", "GenerationResult", "load"]
