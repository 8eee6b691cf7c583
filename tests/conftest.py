"""Shared fixtures (session scoped): tiny random-weight GLM-4.1V checkpoints, their conversions, the C API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from _capi import load_capi
from _tiny_configs import ALT_TEXT, ALT_VISION
from autoglm_gguf import _core
from autoglm_gguf._tiny.checkpoint import write_checkpoint
from autoglm_gguf.convert import ConvertOptions, convert_checkpoint

REPO = Path(__file__).resolve().parents[1]

# The suite compares against llama.cpp in several places, and the peer is built with GGML_NATIVE=OFF:
# ggml's AVX2 kernels. So that those comparisons are like for like on any machine, this process and
# its children use our AVX2 build of the same kernels ("haswell") where the machine can run it (the
# choice is made at the first model load, after this). test_cpu_variants.py runs every other variant
# this machine can run, and the default choice, in processes of their own.
if any(v["name"] == "haswell" and v["runnable"] for v in _core.cpu_variants()):
    os.environ.setdefault("AUTOGLM_CPU_VARIANT", "haswell")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The default tiny checkpoint (bf16, like the real release)."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-glm4v", dtype="bf16", seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint_f32(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt32") / "tiny-glm4v", dtype="f32", seed=0)


@pytest.fixture(scope="session")
def convert_tiny(tmp_path_factory):
    """convert_tiny(checkpoint, outtype, mmproj_outtype) -> (text path, mmproj path), cached per argument set."""
    cache: dict[tuple, tuple[Path, Path]] = {}

    def run(ckpt: Path, outtype: str = "f32", mmproj_outtype: str = "f32") -> tuple[Path, Path]:
        key = (str(ckpt), outtype, mmproj_outtype)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"conv-{outtype}-{mmproj_outtype}")
            text, mmproj = out / f"model-{outtype}.gguf", out / f"mmproj-{mmproj_outtype}.gguf"
            convert_checkpoint(ckpt, ConvertOptions(outfile=text, outtype=outtype, mmproj_outfile=mmproj,
                                                    mmproj_outtype=mmproj_outtype, progress=False))
            cache[key] = (text, mmproj)
        return cache[key]

    return run


@pytest.fixture(scope="session")
def tiny_f32_files(tiny_checkpoint_f32, convert_tiny) -> tuple[Path, Path]:
    """(text GGUF, mmproj GGUF) of the f32 tiny checkpoint, both F32: the files most API tests run on."""
    return convert_tiny(tiny_checkpoint_f32, "f32", "f32")


@pytest.fixture(scope="session")
def tiny_f32_model_file(tiny_f32_files) -> Path:
    """The text GGUF of tiny_f32_files, for the tests that need no vision."""
    return tiny_f32_files[0]


@pytest.fixture(scope="session")
def capi():
    """The public C API through ctypes on the extension, typed as tests/_capi.py says."""
    return load_capi()


@pytest.fixture(scope="session")
def llamacpp_converter() -> Path:
    """llama.cpp's own converter (convert_hf_to_gguf.py + conversion/ + gguf-py/) from the pinned sdist,
    extracted into the same per-user cache as the build's ggml."""
    proc = subprocess.run([sys.executable, str(REPO / "cmake" / "fetch_ggml.py"), "--tree", "converter"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"cannot obtain llama.cpp's converter: {proc.stderr}")
    return Path(proc.stdout.strip())




@pytest.fixture(scope="session")
def alt_checkpoint(tmp_path_factory) -> Path:
    from autoglm_gguf._tiny.checkpoint import make_config

    cfg = make_config(text=ALT_TEXT, vision=ALT_VISION)
    return write_checkpoint(tmp_path_factory.mktemp("alt") / "alt-glm4v", cfg, dtype="f16", seed=1,
                            max_shard_bytes=40_000)


@pytest.fixture(scope="session")
def k256_models(tmp_path_factory) -> tuple[Path, Path]:
    """(F16, Q4_K_M) files of a 2-layer decoder 256 wide (Q4_K needs rows of 256): the Q4_K matrices are
    held by ggml's repacked buffer, next to Q6_K ones."""
    from _gemm_util import k_quant_models

    return k_quant_models(tmp_path_factory.mktemp("k256"), {"hidden_size": 256, "intermediate_size": 512,
                                                            "num_hidden_layers": 2, "num_attention_heads": 4,
                                                            "num_key_value_heads": 2})


@pytest.fixture(scope="session")
def k256_q5_k_m(k256_models, tmp_path_factory) -> Path:
    """k256_models's decoder as a Q5_K_M file: Q5_K matrices (GGUF layout: ggml repacks no Q5_K on x86)
    next to Q6_K ones."""
    from gguf import GGMLQuantizationType, GGUFReader

    from autoglm_gguf.quantize import quantize_gguf

    q = tmp_path_factory.mktemp("k256_q5") / "q5_k_m.gguf"
    quantize_gguf(k256_models[0], q, "q5_k_m", progress=False)
    assert GGMLQuantizationType.Q5_K in {t.tensor_type for t in GGUFReader(q).tensors if t.name.startswith("blk.")}
    return q
