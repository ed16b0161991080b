"""The image tokens: how a picture is written into the token sequence the decoder reads.

Where it sits: shared by the tiler (which lays the tokens out), the processor (which finds the placeholders) and
the tokenizer files (which give each string its id). Jina-VLM's tokenizer has six image tokens; their ids are
never hard-coded, they are looked up by these strings in the checkpoint's own tokenizer (as the official
processor, image_processing_jvlm.py / processing_jvlm.py, does).
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_PLACEHOLDER = "<|image|>"  # written by the user or the chat template: "an image goes here"
# What the tiler puts in its place; users never write these (the processor refuses them in a prompt).
LAYOUT_TOKENS = ("<im_start>", "<im_end>", "<im_patch>", "<im_col>", "<im_slice>")


@dataclass(frozen=True)
class ImageTokenIds:
    """Ids of the layout tokens the tiler writes, looked up from the tokenizer by the caller."""

    start: int  # <im_start>: opens a block (the thumbnail's, then the tiles')
    end: int  # <im_end>
    patch: int  # <im_patch>: one per pooled visual vector; the connector's output is added to its embedding
    col: int  # <im_col>: ends each row of <im_patch>
