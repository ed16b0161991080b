"""minivlm: a from-scratch, readable PyTorch implementation of Jina-VLM (jinaai/jina-vlm)."""

from .model import VLM, GenerationResult, load

__all__ = ["VLM", "GenerationResult", "load"]
