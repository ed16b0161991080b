"""Building the CPU decoding kernels (cpp_build.py): said once on stderr, in a folder keyed by the source and the torch version."""

import pytest
import torch

from minivlm.accel import cpu_decode
from minivlm.accel.cpp_build import extension_name


def test_build_name_is_keyed_by_source_torch_flags_and_python():
    def name(source=b"source", torch_version="2.13.0", flags=("-O3",), python="cp311"):
        return extension_name("cpu_decode", source, torch_version, list(flags), python)

    assert name() == name() and name().startswith("minivlm_cpu_decode_")
    assert len({name(), name(source=b"source 2"), name(torch_version="2.14.0"), name(flags=("-O2",)),
                name(python="cp312")}) == 5


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
    cpu_decode._kernels.cache_clear()
    yield built
    cpu_decode._kernels.cache_clear()  # the next user finds the real build again


def test_first_build_says_so_once(fake_build, tmp_path, capsys):
    assert cpu_decode._kernels() == "the module"
    err = capsys.readouterr().err
    name = extension_name("cpu_decode", cpu_decode.SOURCE.read_bytes(), torch.__version__, cpu_decode.CFLAGS)
    assert f"building the CPU decoding kernels (first bfloat16 run with this torch; about 30 s, cached in " \
           f"{tmp_path / name})" in err and "built the CPU decoding kernels in" in err
    assert fake_build[0] == (name, [str(tmp_path / name / "cpu_decode.cpp")])  # compiled from its own copy
    assert (tmp_path / name / "cpu_decode.cpp").read_bytes() == cpu_decode.SOURCE.read_bytes()
    cpu_decode._kernels()  # cached in this process: not built or said again
    cpu_decode._kernels.cache_clear()
    cpu_decode._kernels()  # a new process: the library is there, nothing is said
    assert capsys.readouterr().err == "" and len(fake_build) == 2
