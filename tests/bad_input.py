"""Bad files to feed minivlm, shared by the bad-input tests of each module (tests/*/test_*_bad_input.py).

Each test file there checks that its module stops such input early with a message that says what is wrong and
what to do (or handles it as a user expects); tests/test_generate_bad_input.py feeds the same through the CLI.
"""

import io
import json
import shutil
import struct
import zlib

import numpy as np
from conftest import FIXTURE_DIR
from PIL import Image
from safetensors.torch import load_file, save_file

from minivlm.formats.config_json import load_config

CFG = load_config(FIXTURE_DIR)
RGB_378 = FIXTURE_DIR / "images" / "rgb_378x378.png"
CHECKPOINT_FILES = ("config.json", "preprocessor_config.json", "processor_config.json", "special_tokens_map.json",
                    "tokenizer.json", "tokenizer_config.json", "model.safetensors")


# -- files to feed it ------------------------------------------------------------------------------------------


def noise(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def truncated(path, fmt: str = "PNG"):
    data = encoded(noise(64, 64), fmt)
    return write(path, data[:len(data) * 6 // 10])


def png_header_only(path, width: int, height: int):
    """A tiny PNG whose header claims width x height: what a decompression bomb looks like before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return write(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                 + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def checkpoint(tmp_path, edit_json: dict | None = None):
    """A copy of the fixture checkpoint; edit_json = {file: function(dict)} edits its JSON files."""
    root = tmp_path / "ckpt"
    root.mkdir()
    for name in CHECKPOINT_FILES:
        shutil.copy(FIXTURE_DIR / name, root / name)
    for name, edit in (edit_json or {}).items():
        data = json.loads((root / name).read_text())
        edit(data)
        (root / name).write_text(json.dumps(data))
    return root


def without_image_tokens(tokenizer: dict):
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] not in ("<im_start>", "<im_end>")]


def missing_shard(tmp_path):
    root = checkpoint(tmp_path)
    split_into_shards(root)[1].unlink()
    return root


def pickle_only(tmp_path):
    root = checkpoint(tmp_path)
    (root / "model.safetensors").unlink()
    write(root / "pytorch_model.bin", b"\x80\x02")
    return root


def with_nan(root):
    tensors = load_file(root / "model.safetensors")
    tensors["model.language_model.ln_f.weight"][0] = float("nan")
    save_file(tensors, root / "model.safetensors")
    return root


def split_into_shards(root, keep_index: bool = True):
    """Two shards of the checkpoint (with or without their index); returns their paths."""
    tensors = load_file(root / "model.safetensors")
    (root / "model.safetensors").unlink()
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[:100], "model-00002-of-00002.safetensors": keys[100:]}
    for name, part in shards.items():
        save_file({k: tensors[k] for k in part}, root / name)
    if keep_index:
        index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
        (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return [root / name for name in shards]
