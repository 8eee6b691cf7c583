"""The native quantizer must produce exactly the bytes of ggml's reference quantizer, which gguf-py
(gguf.quants) reimplements in numpy: compare on random data and on the edge cases."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import quants

from autoglm_gguf import _core

TYPES = {"q4_0": Q.Q4_0, "q8_0": Q.Q8_0, "f16": Q.F16, "bf16": Q.BF16}


def reference(x: np.ndarray, qtype: str) -> np.ndarray:
    return quants.quantize(x, TYPES[qtype])


def cases():
    rng = np.random.default_rng(1234)
    yield "normal", rng.standard_normal((64, 256)).astype(np.float32)
    yield "wide-range", (rng.standard_normal((16, 512)) * np.exp(rng.uniform(-20, 20, (16, 1)))).astype(np.float32)
    yield "zeros", np.zeros((4, 64), np.float32)
    yield "one-hot", np.eye(32, 64, dtype=np.float32) * np.float32(-3.5) + np.float32(0.0)  # +0.0, see below
    # beyond f16's range: the f16 output (and q4_0/q8_0 scales) are +-inf in both, by IEEE conversion
    yield "huge", np.full((3, 96), 3.0e38, np.float32) * np.array([1, -1, 0.5], np.float32)[:, None]
    yield "tiny", (rng.standard_normal((8, 64)) * 1e-30).astype(np.float32)  # f16 scales underflow
    yield "ties", np.tile(np.arange(-16, 16, dtype=np.float32) / 2, (4, 2))  # exact half-steps
    yield "1-d", rng.standard_normal(1024).astype(np.float32)
    yield "3-d", rng.standard_normal((2, 3, 64)).astype(np.float32)


@pytest.mark.parametrize("qtype", list(TYPES))
@pytest.mark.parametrize("name,x", list(cases()), ids=[c[0] for c in cases()])
def test_bit_identical_to_gguf_reference(qtype, name, x):
    ours = _core.quantize(x, qtype)
    ref = reference(x, qtype).view(np.uint8).reshape(ours.shape)
    assert ours.shape[:-1] == x.shape[:-1]
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0"])
def test_thread_count_does_not_change_bytes(qtype):
    x = np.random.default_rng(7).standard_normal((1000, 320)).astype(np.float32)
    one = _core.quantize(x, qtype, 1)
    for n in (2, 3, 8):
        np.testing.assert_array_equal(_core.quantize(x, qtype, n), one)


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0", "q6_k", "f16", "bf16", "f32"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected_with_its_position(qtype, bad):
    x = np.ones((4, 256), np.float32)
    x[2, 17] = bad
    with pytest.raises(ValueError, match=r"row 2, column 17"):
        _core.quantize(x, qtype)


def test_row_length_must_be_a_multiple_of_the_block():
    with pytest.raises(ValueError, match=r"not a positive multiple of 32.*q4_0"):
        _core.quantize(np.ones((2, 48), np.float32), "q4_0")
    with pytest.raises(ValueError, match=r"multiple of 256.*q6_K"):
        _core.quantize(np.ones((2, 64), np.float32), "q6_k")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown storage type 'q3_x'"):
        _core.quantize(np.ones((1, 32), np.float32), "q3_x")
    with pytest.raises(ValueError, match="float32"):
        _core.quantize(np.ones((1, 32), np.float64), "q8_0")
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.quantize(np.ones((32, 32), np.float32).T, "q8_0")


def test_q6_k_round_trips_within_its_precision():
    # No numpy reference quantizer exists for Q6_K; check the dequantized error instead.
    x = np.random.default_rng(3).standard_normal((8, 512)).astype(np.float32)
    q = _core.quantize(x, "q6_k")
    back = quants.dequantize(q, Q.Q6_K).reshape(x.shape)
    assert np.max(np.abs(back - x)) < 0.05 * np.max(np.abs(x))


def test_negative_zero_block_matches_ggml_c_not_gguf_py():
    # A block holding only -0.0: ggml's C reference never updates its running max (|v| > 0 is false),
    # so the scale is +0/-8 = -0.0 (f16 0x8000); gguf-py's argmax picks -0.0 and stores +0.0. Both
    # dequantize to zeros; we are bit-identical to ggml itself, which is what llama.cpp writes.
    x = np.full((1, 32), -0.0, np.float32)
    ours = _core.quantize(x, "q4_0")
    assert ours[0, :2].tolist() == [0x00, 0x80]
    ref = reference(x, "q4_0").view(np.uint8).reshape(ours.shape)
    np.testing.assert_array_equal(ours[:, 2:], ref[:, 2:])
    assert np.all(quants.dequantize(ours, Q.Q4_0) == 0)


def test_block_info():
    assert _core.block_info("q4_0") == (32, 18)
    assert _core.block_info("q8_0") == (32, 34)
    assert _core.block_info("q6_k") == (256, 210)
