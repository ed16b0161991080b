"""The model: Jina-VLM as plain functions over plain tensors, in the order the data flows.

    pixels -> tiler -> patch embed -> ViT -> pooler -> decoder -> sampler

Read it in this order (each file's docstring says where it sits, the paper's part and the official class it
mirrors):

 1. config.py       the sizes and switches, as frozen dataclasses (filled by minivlm.formats.config_json)
 2. tokens.py       the image tokens written into the prompt
 3. tiler.py        one picture -> overlapping 378 px crops + a thumbnail, and their token layout
 4. batch.py        the tensors that travel from the processor to the model (Sample, Batch, collate)
 5. layers.py       the shared primitives: linear, LayerNorm, RMSNorm, SwiGLU, attention
 6. patch_embed.py  14x14 patches -> ViT tokens
 7. vit.py          SigLIP2 blocks; the outputs of two intermediate blocks are the image features
 8. pooler.py       the connector: 2x2 attention pooling and a SwiGLU projector to the decoder's width
 9. rope.py         rotary positions for the decoder
10. decoder.py      Qwen3 with the visual vectors added to their <im_patch> tokens, and the KV cache
11. sampler.py      logits -> the next token
12. generation.py   the whole chain: prefill once, then one token at a time

Every function takes the checkpoint's tensors as a dict keyed by the official names; each component declares
the ones it reads (`weight_shapes`). This package imports nothing else from minivlm, no file formats, no PIL and
no compiled extensions (tests/test_layout.py checks): loading files is minivlm.formats' job, speed-ups plug in
through `layers.hooks` from minivlm.accel.
"""
