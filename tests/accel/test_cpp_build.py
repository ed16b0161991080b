"""Building the C++ kernels (cpp_build.py): said once on stderr, in a folder keyed by the sources and the torch version;
glibc keeping freed memory for the next blocks."""

import platform
import subprocess
import sys

import pytest
import torch

from minivlm.accel import cpp_build, decoder_kernels
from minivlm.accel.cpp_build import extension_name, source_key


def test_build_name_is_keyed_by_source_torch_flags_and_python():
    def name(source=b"source", torch_version="2.13.0", flags=("-O3",), python="cp311"):
        return extension_name("decoder_kernels", source, torch_version, list(flags), python)

    assert name() == name() and name().startswith("minivlm_decoder_kernels_")
    assert len({name(), name(source=b"source 2"), name(torch_version="2.14.0"), name(flags=("-O2",)),
                name(python="cp312")}) == 5


def test_the_key_covers_the_headers_beside_the_source(tmp_path):
    (tmp_path / "kernel.cpp").write_text('#include "maths.h"')
    (tmp_path / "maths.h").write_text("int one() { return 1; }")
    before = source_key(tmp_path / "kernel.cpp")
    (tmp_path / "maths.h").write_text("int one() { return 2 - 1; }")
    assert source_key(tmp_path / "kernel.cpp") != before


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """torch's `load` replaced by one that only writes the library file, in an empty extensions folder."""
    import torch.utils.cpp_extension as cpp_extension

    built = []

    def load(name, sources, build_directory, **kwargs):
        built.append((name, sources))
        (tmp_path / name / f"{name}.so").write_bytes(b"")
        return "the module"

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    decoder_kernels._kernels.cache_clear()
    yield built
    decoder_kernels._kernels.cache_clear()  # the next user finds the real build again


def test_first_build_says_so_once(fake_build, tmp_path, capsys):
    assert decoder_kernels._kernels() == "the module"
    err = capsys.readouterr().err
    name = extension_name("decoder_kernels", source_key(decoder_kernels.SOURCE), torch.__version__,
                          decoder_kernels.CFLAGS)
    assert f"building the decoder's CPU kernels (first bfloat16 run with this torch; about 30 s, cached in " \
           f"{tmp_path / name})" in err and "built the decoder's CPU kernels in" in err
    assert fake_build[0] == (name, [str(tmp_path / name / "decoder_kernels.cpp")])  # compiled from its own copy
    assert (tmp_path / name / "decoder_kernels.cpp").read_bytes() == decoder_kernels.SOURCE.read_bytes()
    header = decoder_kernels.SOURCE.with_name("simd.h")  # the header it includes, copied beside it
    assert (tmp_path / name / "simd.h").read_bytes() == header.read_bytes()
    decoder_kernels._kernels()  # cached in this process: not built or said again
    decoder_kernels._kernels.cache_clear()
    decoder_kernels._kernels()  # a new process: the library is there, nothing is said
    assert capsys.readouterr().err == "" and len(fake_build) == 2


GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


ROUNDS = """
import ctypes, resource, sys
from minivlm.accel import cpp_build
if sys.argv[1] == "keep":
    assert cpp_build.keep_freed_memory()
libc = ctypes.CDLL(None)  # glibc's malloc itself, which PyTorch's CPU tensors come from, without tensors around
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(16 << 20) for _ in range(8)]  # 128 MiB
    for block in blocks:
        ctypes.memset(block, 1, 16 << 20)  # every page touched
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    for block in blocks:
        libc.free(block)
print(sum(faults[1:]))
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; elsewhere the allocator is left as it is")
def test_freed_memory_is_kept_for_the_next_blocks():
    """In a fresh process, 128 MiB of 16 MiB blocks taken and freed four times: with `keep_freed_memory` the
    later rounds reuse the pages of the first (no page faults); with glibc's default the free heap top, past twice
    its adaptive mmap threshold, goes back to the kernel each time and all 32,768 pages fault again, every round."""
    def later_rounds_faults(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
        return int(run.stdout.split()[-1])

    assert later_rounds_faults("keep") < 1000  # (the blocks are under KEPT_BLOCK: served from the heap)
    assert later_rounds_faults("default") > 3 * 30000  # glibc's own setting: the same blocks fault in again
