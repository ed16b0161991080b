"""Bad input stops early with a message that says what is wrong and what to do (or works as a user expects).

Images, prompts, checkpoints and generation settings through the Python API, then the same inputs through the
CLI: exit code 2, one `error:` line, no traceback. Most CLI cases call `main()` in-process (fast); a few run the
real command in a subprocess.
"""

import io
import json
import math
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from safetensors.torch import load_file, save_file

import minivlm
from minivlm.config import ConfigError, load_config, with_max_crops
from minivlm.generate import main
from minivlm.image_io import ImageError, TruncatedImageError, open_image, to_rgb_array
from minivlm.processor import PromptError, preprocess
from minivlm.tiler import smart_resize, tile_image
from minivlm.tokenizer import LAYOUT_TOKENS, Tokenizer, TokenizerError
from minivlm.weights import WeightsError, check_device, load_weights
from conftest import FIXTURE_DIR

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


# -- images ----------------------------------------------------------------------------------------------------


def test_not_an_image_empty_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="not an image file PIL can read"):
        open_image(write(tmp_path / "notes.png", b"these are my notes, not a picture"))
    with pytest.raises(ImageError, match=r"the file is empty \(0 bytes\)"):
        open_image(write(tmp_path / "empty.jpg", b""))
    with pytest.raises(ImageError, match="a folder, not an image file"):
        open_image(tmp_path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_truncated_refused_unless_allowed(tmp_path, fmt):
    path = truncated(tmp_path / f"cut.{fmt.lower()}", fmt)
    with pytest.raises(TruncatedImageError, match="truncated.*--allow-truncated"):
        open_image(path)
    with pytest.warns(UserWarning, match="truncated; the missing part is filled in"):
        image = open_image(path, allow_truncated=True)
    assert image.size == (64, 64)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # scoped to the call, not left switched on
    with pytest.raises(ImageError, match="could not be decoded.*truncated"):  # a lazily opened PIL image
        to_rgb_array(Image.open(path))


def test_decompression_bomb_refused_from_the_header(tmp_path):
    pil_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match=r"20000x13000 px is 260 megapixels, over the limit of 250.*--max-image-pix"):
        open_image(png_header_only(tmp_path / "bomb.png", 20000, 13000))
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's own limit is switched off for the call only
    path = write(tmp_path / "photo.png", encoded(noise(100, 100), "PNG"))
    with pytest.raises(ImageError, match="0.01 megapixels, over the limit of 0.005"):
        open_image(path, max_image_pixels=5000)
    assert open_image(path, max_image_pixels=10_000).size == (100, 100)  # the limit can be raised


def test_aspect_ratio_refused_before_decoding(tmp_path):
    path = write(tmp_path / "strip.png", encoded(noise(2, 500), "PNG"))
    with pytest.raises(ImageError, match=r"strip.png: aspect ratio 250.0 \(500x2 px\) exceeds the limit of 200"):
        open_image(path)


@pytest.mark.parametrize("h, w", [(1, 1), (1, 3), (3, 1), (2, 2), (13, 13), (1, 200)])
def test_tiny_images_tile(vlm, h, w):
    tiled = tile_image(np.full((h, w, 3), 77, np.uint8), CFG.preprocessor, vlm.tokenizer.image_ids)
    # Departs from the official code, which reads arrays 1 or 3 px tall as channels-first (SPEC §6.1):
    # 1x1 gives 56x56 here, 42x98 there.
    assert tiled.resized_hw == smart_resize(h, w, CFG.preprocessor) and tiled.tiling == (1, 1)
    assert torch.allclose(tiled.patches, torch.tensor(-1 + 77 / 255 * 2))  # one colour stays one colour


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    path = write(tmp_path / "depth.png", encoded(Image.fromarray(values), "PNG"))
    image = open_image(path)
    assert image.mode == "I;16"
    assert to_rgb_array(image)[0, :, 0].tolist() == [0, 1, 128, 255]
    assert np.array(image.convert("RGB"))[0, 2, 0] == 255  # what PIL's convert (and the official code) gives


def test_cmyk_and_greyscale_jpeg(tmp_path):
    cmyk = open_image(write(tmp_path / "print.jpg", encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")))
    grey = open_image(write(tmp_path / "scan.jpg", encoded(Image.new("L", (16, 16), 100), "JPEG")))
    assert (cmyk.mode, grey.mode) == ("CMYK", "L")
    assert np.abs(to_rgb_array(cmyk).astype(int) - [255, 0, 0]).max() <= 3  # red
    assert np.abs(to_rgb_array(grey).astype(int) - 100).max() <= 1


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    path = write(tmp_path / "icon.png", encoded(image, "PNG", transparency=bytes([255, 128])))  # half transparent
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's "should be converted to RGBA" advice is not shown
        pixels = to_rgb_array(open_image(path))
    assert (pixels == [0, 0, 255]).all()  # transparent pixels keep their colour: convert('RGB'), as upstream


def test_rgba_from_a_path_drops_alpha_like_upstream():
    path = FIXTURE_DIR / "images" / "rgba_500x300.png"
    assert np.array_equal(to_rgb_array(path), np.array(Image.open(path))[..., :3])


def test_paths_work_like_pil_images(vlm):
    from_path = vlm.preprocess("What is this?", [RGB_378])
    from_pil = vlm.preprocess("What is this?", [Image.open(RGB_378)])
    assert all(torch.equal(from_path[k], from_pil[k]) for k in from_pil)


def test_exif_orientation_applied_for_paths_only(tmp_path):
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = write(tmp_path / "phone.jpg", encoded(stored, "JPEG", exif=exif, quality=95))
    shown = to_rgb_array(open_image(path))
    assert shown.shape == (40, 20, 3)  # portrait, as a viewer shows it
    assert shown[5, 10, 0] > 200 and shown[35, 10, 2] > 200  # red on top, blue below
    assert to_rgb_array(Image.open(path)).shape == (20, 40, 3)  # a PIL image is used as given (SPEC §6.1)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_gives_the_first_frame(tmp_path, fmt):
    frames = [Image.new("RGB", (20, 10), color) for color in ("red", "green", "blue")]
    path = write(tmp_path / f"anim.{fmt.lower()}", encoded(frames[0], fmt, save_all=True, append_images=frames[1:]))
    with pytest.warns(UserWarning, match="using the first frame of 3"):
        pixels = to_rgb_array(open_image(path))
    assert np.abs(pixels.astype(int) - [255, 0, 0]).max() <= 3


@pytest.mark.parametrize("image, message", [
    (Image.new("I", (4, 4)), "I-mode image .* no standard brightness range"),
    (Image.new("F", (4, 4)), "F-mode image .* no standard brightness range"),
    (torch.zeros(4, 4, 3, dtype=torch.uint8), "got Tensor"),
])
def test_unsupported_in_memory_images(image, message):
    with pytest.raises(ImageError, match=message):
        to_rgb_array(image)


def test_which_image_is_bad_is_said(vlm):
    with pytest.raises(ImageError, match="image 2 of 2: .*aspect ratio 250.0"):
        vlm.preprocess("", [RGB_378, np.zeros((2, 500, 3), np.uint8)])


# -- prompts ---------------------------------------------------------------------------------------------------


def test_fewer_placeholders_than_images(vlm):
    with pytest.raises(PromptError, match=r"1 <\|image\|> placeholder\(s\) but 2 image\(s\)"):
        vlm.preprocess("<|image|> compare", [RGB_378, RGB_378])


def test_too_long_says_by_how_much_and_what_to_reduce(vlm):
    image = FIXTURE_DIR / "images" / "rgb_1176x910.png"  # 1744 image tokens at max_crops 12, 424 at 1
    n = len(preprocess("<|image|>Describe.", [image], vlm.tokenizer, CFG)["input_ids"])
    cfg = replace(CFG, text=replace(CFG.text, max_sequence_length=1000))
    with pytest.raises(PromptError) as err:
        preprocess("<|image|>Describe.", [image], vlm.tokenizer, cfg)
    assert (f"is {n} tokens long (1744 for 1 image(s), {n - 1744} text), {n - 1000} over the model's maximum of "
            "1000; use fewer or smaller images, fewer crops per image (max_crops is 12: --max-crops N"
            ) in str(err.value)
    fewer_crops = preprocess("<|image|>Describe.", [image], vlm.tokenizer, with_max_crops(cfg, 1))
    assert len(fewer_crops["input_ids"]) == n - 1744 + 424


@pytest.mark.parametrize("text", ["", "  \n"])
def test_empty_prompt(vlm, text):
    with pytest.raises(PromptError, match="the prompt is empty and there is no image"):
        vlm.preprocess(text, [])
    batch = vlm.preprocess(text, [RGB_378])  # an image alone is a fine request
    assert batch["input_ids"][0] == vlm.tokenizer.bos_id and len(batch["images"]) == 2


@pytest.mark.parametrize("token", LAYOUT_TOKENS)
def test_layout_tokens_typed_by_the_user(vlm, token):
    with pytest.raises(PromptError, match=f"contains the image layout token\\(s\\) {token}"):
        vlm.preprocess(f"what does {token} mean?", [])


def test_token_without_an_embedding_row(vlm):
    cfg = replace(CFG, text=replace(CFG.text, embedding_size=100, additional_vocab_size=0))
    with pytest.raises(TokenizerError, match=r"has no embedding row \(the model has 100\)"):
        preprocess("hello there", [], vlm.tokenizer, cfg)


# -- checkpoints -----------------------------------------------------------------------------------------------


def test_shards_without_their_index(tmp_path):
    root = checkpoint(tmp_path)
    split_into_shards(root, keep_index=False)
    with pytest.raises(WeightsError, match="found model-00001-of-00002.safetensors, .* but no index"):
        load_weights(root, CFG)


def test_index_names_a_tensor_its_file_lacks(tmp_path):
    root = checkpoint(tmp_path)
    first, _ = split_into_shards(root)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    last = max(index["weight_map"])  # it is in the second shard
    index["weight_map"][last] = first.name
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match=f"index says it holds {last}, but it does not"):
        load_weights(root, CFG)


def test_half_copied_safetensors(tmp_path):
    root = checkpoint(tmp_path)
    data = (root / "model.safetensors").read_bytes()
    (root / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file .*re-download it"):
        load_weights(root, CFG)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_inf_and_nan_found_when_asked(tmp_path, bad):
    root = checkpoint(tmp_path)
    tensors = load_file(root / "model.safetensors")
    tensors["model.vision_model.layers.0.attn.out.weight"][1, 2] = bad
    save_file(tensors, root / "model.safetensors")
    with pytest.raises(WeightsError, match="layers.0.attn.out.weight contains NaN or Inf"):
        load_weights(root, CFG, dtype=torch.bfloat16, check_finite=True)


def test_another_models_checkpoint(tmp_path):
    root = checkpoint(tmp_path, {"config.json": lambda c: c.update(model_type="llama")})
    with pytest.raises(ConfigError, match="model_type = 'llama' is not supported by minivlm"):
        load_config(root)
    tensors = {"model.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2)}
    save_file(tensors, root / "model.safetensors")
    with pytest.raises(WeightsError, match="none of the expected tensors is there") as err:
        load_weights(root, CFG)
    assert "... and 173 more" in str(err.value)  # 193 problems, 20 listed


def test_not_a_checkpoint_folder(tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"")
    with pytest.raises(ConfigError, match="is not a checkpoint folder: it has no config.json"):
        minivlm.load(tmp_path)
    (tmp_path / "config.json").write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        load_config(tmp_path)


def test_tokenizer_without_image_tokens(tmp_path):
    root = checkpoint(tmp_path, {"tokenizer.json": without_image_tokens})
    with pytest.raises(TokenizerError, match="tokenizer.json has no single token '<im_start>'"):
        Tokenizer(root)


# -- generation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(temperature=-0.5), "temperature must be >= 0"),
    (dict(temperature=math.nan), "temperature must be a finite number"),
    (dict(temperature="0.7"), "temperature must be a finite number"),
    (dict(top_k=2.5), "top_k must be an integer"),
    (dict(max_new_tokens=1.5), "max_new_tokens must be a positive integer"),
])
def test_bad_generation_settings(vlm, bad, message):
    with pytest.raises(ValueError, match=message):
        vlm.generate("hi", **bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu():
    with pytest.raises(ValueError, match="'cuda': no CUDA GPU is available to this PyTorch; use 'cpu'"):
        minivlm.load(FIXTURE_DIR, device="cuda")


def test_devices_that_are_not_there():
    with pytest.raises(ValueError, match="'gpu' is not a PyTorch device"):
        check_device("gpu")
    with pytest.raises(ValueError, match="'cuda:99'"):
        check_device("cuda:99")
    assert check_device("cpu") == torch.device("cpu")


# -- the command line: exit code 2, one line ---------------------------------------------------------------------

PROMPT = ["--prompt", "What is this?"]


def cli_case(name, message, *, image=None, model=None, args=(), skip=False):
    """argv factory (tmp_path -> argv) for one bad input; `image`/`model` build a file or checkpoint."""
    def argv(tmp_path):
        root = model(tmp_path) if model else FIXTURE_DIR
        images = ["--image", str(image(tmp_path))] if image else []
        return ["--model", str(root), *images, *(args or PROMPT)]
    marks = [pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")] if skip else []
    return pytest.param(argv, message, id=name, marks=marks)


CLI_CASES = [
    cli_case("not-an-image", "not an image file", image=lambda t: write(t / "a.png", b"hello")),
    cli_case("empty-image", "the file is empty (0 bytes)", image=lambda t: write(t / "a.png", b"")),
    cli_case("truncated", "--allow-truncated", image=lambda t: truncated(t / "a.png")),
    cli_case("bomb", "--max-image-pixels", image=lambda t: png_header_only(t / "a.png", 30000, 30000)),
    cli_case("aspect-ratio", "aspect ratio 250.0", image=lambda t: write(t / "a.png", encoded(noise(2, 500), "PNG"))),
    cli_case("too-many-placeholders", "2 <|image|> placeholder(s) but 0 image(s)",
             args=["--prompt", "<|image|><|image|> compare", "--raw"]),
    cli_case("too-few-placeholders", "1 <|image|> placeholder(s) but 2 image(s)",
             args=["--prompt", "<|image|> compare", "--raw", "--image", str(RGB_378), "--image", str(RGB_378)]),
    cli_case("empty-prompt", "the prompt is empty and there is no image", args=["--prompt", ""]),
    cli_case("layout-token", "image layout token(s) <im_col>", args=["--prompt", "a <im_col> b"]),
    cli_case("too-long", "over the model's maximum of 600",
             model=lambda t: checkpoint(t, {"config.json": lambda c: c["text_config"].update(max_sequence_length=600)}),
             args=["--prompt", "Describe.", "--image", str(FIXTURE_DIR / "images/rgb_1176x910.png")]),
    cli_case("max-new-tokens-negative", "--max-new-tokens must be at least 1",
             args=[*PROMPT, "--max-new-tokens", "-3"]),
    cli_case("top-p", "top_p must be in (0, 1]", args=[*PROMPT, "--top-p", "1.5"]),
    cli_case("top-p-zero", "top_p must be in (0, 1]", args=[*PROMPT, "--top-p", "0"]),
    cli_case("max-crops", "--max-crops must be at least 1", args=[*PROMPT, "--max-crops", "0"]),
    cli_case("cuda", "no CUDA GPU is available", args=[*PROMPT, "--device", "cuda"], skip=True),
    cli_case("not-a-checkpoint", "is not a checkpoint folder", model=lambda t: t),
    cli_case("unknown-config-value", "activation_type = 'relu' is not supported", model=lambda t: checkpoint(
        t, {"config.json": lambda c: c["text_config"]["block_config"]["ffn_config"].update(activation_type="relu")})),
    cli_case("unsupported-preprocessing", "cropping_method = 'resize' is not supported",
             model=lambda t: checkpoint(t, {"preprocessor_config.json": lambda c: c.update(cropping_method="resize")})),
    cli_case("tokenizer-without-image-tokens", "has no single token '<im_start>'",
             model=lambda t: checkpoint(t, {"tokenizer.json": without_image_tokens})),
    cli_case("missing-shard", "names shard files that are not there", model=missing_shard),
    cli_case("nan-weights", "contains NaN or Inf", model=lambda t: with_nan(checkpoint(t)),
             args=[*PROMPT, "--check-weights"]),
    cli_case("pickle-only", "pickle checkpoints are never loaded", model=pickle_only),
]


@pytest.mark.parametrize("argv, message", CLI_CASES)
def test_cli_bad_input_in_process(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() sets it: restore it after
    assert main(argv(tmp_path)) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


SUBPROCESS_CASES = ["truncated", "empty-prompt", "cuda", "nan-weights"]  # one per kind; main() in-process covers all


@pytest.mark.parametrize("argv, message", [c for c in CLI_CASES if c.id in SUBPROCESS_CASES])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, argv, message):
    done = subprocess.run([sys.executable, "-m", "minivlm.generate", *argv(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and message in done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


def test_cli_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ImageError):
        main(["--model", str(FIXTURE_DIR), "--image", str(truncated(tmp_path / "a.png")), *PROMPT, "--debug"])


def test_cli_notes_print_as_one_line(tmp_path):
    path = truncated(tmp_path / "a.png")
    done = subprocess.run([sys.executable, "-m", "minivlm.generate", "--model", str(FIXTURE_DIR), "--image", str(path),
                           *PROMPT, "--allow-truncated", "--max-new-tokens", "2", "--max-crops", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0
    assert done.stderr == f"warning: {path}: the file is truncated; the missing part is filled in\n"
