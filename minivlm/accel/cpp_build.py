"""Building minivlm's C++ CPU kernels (`decoder_kernels.cpp`, `cpu_attention.cpp`) on first use, once per machine, and
what every CPU fast path in minivlm.accel asks before it runs: the MINIVLM_CPU_KERNELS switch, the CPU's features,
how many rows a pass may take.

`torch.utils.cpp_extension.load` compiles a source into a Python module; this file picks where (a folder keyed by
everything the binary depends on, so two checkouts share a build and another torch gets its own), says on stderr
that a first build takes a while, and turns a failed build (no compiler, no ninja) into a warning and None: every
kernel has a PyTorch fallback that is just as right, only slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch

PYTHON_TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"
ENABLED = os.environ.get("MINIVLM_CPU_KERNELS", "1") != "0"  # the one switch of every CPU fast path in minivlm.accel


def cpu_has(*features: str) -> bool:
    """Whether this CPU has every one of `features`, as torch.cpu names them: "avx512_bf16", "amx_tile", ..."""
    return all(getattr(torch.cpu, f"_is_{feature}_supported", lambda: False)() for feature in features)


def runs_here(*tensors) -> bool:
    """Whether a CPU kernel may take these tensors: switched on, all bfloat16 on CPU, nothing to differentiate."""
    return (ENABLED and all(t.device.type == "cpu" and t.dtype == torch.bfloat16 for t in tensors)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)))


@functools.cache
def onednn_computes_bfloat16() -> bool:
    """Whether PyTorch's oneDNN is built in and computes bfloat16 natively on this CPU (AVX512-BF16 or AMX): what
    the fused ViT blocks and `decoder_kernels.linear_onednn` need."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


LARGEST_REUSED_BLOCK = 32 << 20  # bytes: glibc's adaptive mmap threshold at its highest (64-bit)
KEPT_BLOCK = 64 << 20  # what `keep_freed_memory` raises it to: fewer, larger passes
KEPT_FREE_BYTES = 256 << 20  # freed memory glibc keeps for later blocks (`keep_freed_memory`)


# Without AMX, oneDNN's bfloat16 products (on AVX512-BF16) ran a prompt's rows faster in passes of at most this
# many, with the same bits: a prefill layer's products on 2 cores of an AMD EPYC (2026-12-04, medians of 5) qkv
# 100 -> 73 ms, out 40 -> 38, MLP up 250 -> 221, down 127 -> 106 at 1,774 rows against passes of 1,024 or fewer.
# Not measured with AMX: there one pass stays (None).
MOST_ROWS_PER_PASS = None if cpu_has("amx_tile") else 1024


def row_passes(rows: int, row_bytes: int) -> int:
    """In how many passes to run `rows` rows whose widest intermediate takes `row_bytes` each, so that no pass
    allocates a block over LARGEST_REUSED_BLOCK (nor, without AMX, holds over MOST_ROWS_PER_PASS rows). glibc's
    malloc serves larger blocks by fresh mmaps, whose pages the kernel maps and zeroes on first touch, every time;
    smaller ones reuse freed memory. On 2 cores of an Intel Xeon with AMX (2026-12-04), medians of 9: the
    prefill's MLP product into a fresh [1774, 12288] bfloat16 output (44 MB) 56.7 ms, into a reused one 43.8 ms;
    the ViT's [9477, 4304] (82 MB) 64.4 against 36.2 ms."""
    by_rows = -(-rows // MOST_ROWS_PER_PASS) if MOST_ROWS_PER_PASS else 1
    return max(1, by_rows, -(-rows * row_bytes // LARGEST_REUSED_BLOCK))  # ceil


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc serve blocks up to KEPT_BLOCK from its heap and keep up to KEPT_FREE_BYTES of freed
    memory there for the next ones; then LARGEST_REUSED_BLOCK is KEPT_BLOCK. Returns whether it could (glibc only).

    By default glibc serves blocks over its adaptive mmap threshold (32 MiB at most) by fresh mmaps, and hands the
    free top of its heap back to the kernel once it passes twice that threshold. A ViT block or a decoder layer
    frees about that much at its end, so the next one gets fresh pages, which the kernel maps and zeroes one page
    fault at a time: 140-330 thousand faults per first token of the bench's 1176x910 image (2 cores of an Intel
    Xeon with AMX, 2026-12-04; 0-10 thousand with this setting). With blocks of 64 MiB reused, the vision runs
    in two groups of crops instead of three and the prefill's MLP in one pass instead of two: the first token
    7.92 against 8.16 s (medians of 6 interleaved, same machine). Process-wide and for the rest of the process:
    `mallopt` sets the allocator of everything in it, and glibc's adaptive threshold cannot be switched back on.
    The cost: up to KEPT_FREE_BYTES stay resident while unused."""
    global LARGEST_REUSED_BLOCK
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    # A glibc that refuses the threshold is left as it was (a refused trim setting would already have switched
    # the adaptive threshold off: it is set second).
    if not (libc.mallopt(m_mmap_threshold, KEPT_BLOCK) and libc.mallopt(m_trim_threshold, KEPT_FREE_BYTES)):
        return False
    LARGEST_REUSED_BLOCK = KEPT_BLOCK
    return True


def build_inputs(source_path: Path) -> dict[str, bytes]:
    """What a build compiles, by file name: the source and the headers beside it (`simd.h`, which both kernels
    include)."""
    headers = sorted(source_path.parent.glob("*.h"))
    return {source_path.name: source_path.read_bytes(), **{h.name: h.read_bytes() for h in headers}}


def source_key(source_path: Path) -> bytes:
    """`build_inputs` as one byte string for `extension_name`: each file's name and text."""
    return b"\0".join(name.encode() + b"\0" + text for name, text in build_inputs(source_path).items())


def extension_name(stem: str, source: bytes, torch_version: str, flags: list[str], python: str = PYTHON_TAG) -> str:
    """The build's name, keyed by what the binary depends on: the kernel source and its headers (`source_key`),
    the torch and Python versions, the flags. Two checkouts with the same sources share one build; another source
    or torch gets its own."""
    key = b"\0".join([source, torch_version.encode(), python.encode(), " ".join(flags).encode()])
    return f"minivlm_{stem}_{hashlib.sha256(key).hexdigest()[:12]}"


def build_directory(name: str) -> Path:
    """Where the build lives: under PyTorch's extension folder (TORCH_EXTENSIONS_DIR, or ~/.cache/torch_extensions)."""
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / name


def build(source_path: Path, flags: list[str], what: str, fallback: str):
    """The compiled module of `source_path`, or None (warned once by the caller's cache) if it cannot be built.

    The first build takes about 30 s: it says so on stderr, once, then how long it took (`what` names the kernels).
    The source and its headers are copied into the build folder and compiled from there, so the build does not depend on where
    minivlm is installed. `fallback` says, in the warning, what runs instead.
    """
    import torch

    if shutil.which("ninja") is None:  # pip puts the `ninja` dependency beside this Python, maybe off PATH
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    inputs = build_inputs(source_path)
    name = extension_name(source_path.stem, source_key(source_path), torch.__version__, flags)
    folder = build_directory(name)
    fresh = not any(folder.glob(f"{name}*.so")) and not any(folder.glob(f"{name}*.pyd"))
    try:
        from torch.utils.cpp_extension import load

        folder.mkdir(parents=True, exist_ok=True)
        for file_name, text in inputs.items():
            copy = folder / file_name
            if not copy.is_file() or copy.read_bytes() != text:
                copy.write_bytes(text)
        if fresh:
            print(f"minivlm: building {what} (first bfloat16 run with this torch; about 30 s, cached in {folder})",
                  file=sys.stderr, flush=True)
        started = time.perf_counter()
        module = load(name=name, sources=[str(folder / source_path.name)], build_directory=str(folder), verbose=False,
                      extra_cflags=flags, extra_ldflags=["-fopenmp"])
        if fresh:
            print(f"minivlm: built {what} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        return module
    except Exception as error:  # no compiler, no ninja: PyTorch's ops are just as right, only slower
        warnings.warn(f"minivlm: could not build {what} ({type(error).__name__}: {error}); {fallback}",
                      RuntimeWarning, stacklevel=4)
        return None
