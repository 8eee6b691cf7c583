"""What the benchmarks and the profiler compare speed against: the operations a workload does
(op_count, checked against transformers' own layers), this machine's peak (cpu_peak: measured clock x
the instruction set's operations per cycle), and AUTOGLM_PROFILE's per-family table."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter

from autoglm_gguf import _core, op_count

torch = pytest.importorskip("torch")
from transformers import Glm4vForConditionalGeneration  # noqa: E402


def _numel(modules, kinds) -> int:
    return sum(m.weight.numel() for m in modules if isinstance(m, kinds))


@pytest.mark.parametrize("arch", ["tiny", "alt"])
def test_op_counts_match_the_reference_layers(arch, tiny_checkpoint_f32, alt_checkpoint, convert_tiny):
    """Counted from the GGUF's shapes, checked against the nn.Linear / Conv layers of transformers' model
    (a multiply-add = 2; q.k and p.v per head; the causal prompt sees i keys at position i)."""
    ckpt = tiny_checkpoint_f32 if arch == "tiny" else alt_checkpoint
    text, mmproj = convert_tiny(ckpt, "f32", "f32")
    hf = Glm4vForConditionalGeneration.from_pretrained(ckpt)
    tc, vc = hf.config.text_config, hf.config.vision_config
    n = 37
    layers = _numel(hf.model.language_model.layers.modules(), torch.nn.Linear)
    head_dim = tc.hidden_size // tc.num_attention_heads
    want = 2 * n * layers + 2 * 2 * head_dim * tc.num_attention_heads * tc.num_hidden_layers * n * (n + 1) / 2
    want += 2 * hf.lm_head.weight.numel()
    work = op_count.text_prefill(str(text), n)
    assert work.family == "f32"
    assert work.ops == pytest.approx(want, rel=1e-12)

    p = 8 * 12  # patches of an 8x12 grid
    vis = hf.model.visual
    blocks = _numel(vis.blocks.modules(), torch.nn.Linear)
    merger = _numel(vis.merger.modules(), torch.nn.Linear) + vis.downsample.weight.numel()
    patch = vis.patch_embed.proj.weight.numel() // vc.temporal_patch_size  # the two time slices are summed
    want_v = 2 * p * blocks + 4 * p * p * vc.hidden_size * vc.depth + 2 * (p / 4) * merger + 2 * p * patch
    assert op_count.vision_encode(str(mmproj), p).ops == pytest.approx(want_v, rel=1e-12)


def test_quantized_weights_use_the_int8_peak(tiny_checkpoint, convert_tiny):
    text, mmproj = convert_tiny(tiny_checkpoint, "q8_0", "f16")
    assert op_count.text_prefill(str(text), 8).family == "int8"
    assert op_count.vision_encode(str(mmproj), 16).family == "f32"


def test_cpu_peak_follows_the_instruction_set():
    feats = _core.cpu_features()
    p1, p2 = _core.cpu_peak(1), _core.cpu_peak(2)
    assert 0.3 < p1["clock_ghz"] < 8.0, p1  # measured: one dependent add per cycle
    per_cycle = {fam: p1[f"{fam}_gops"] / p1["clock_ghz"] for fam in ("f32", "bf16", "int8")}
    # measured rates, rounded to powers of two: one 256-bit FMA per cycle (Zen 1) up to two 512-bit ones
    for fam, rate in per_cycle.items():
        assert rate == pytest.approx(2 ** round(math.log2(rate))), (fam, rate)
    if "AVX512" in feats:
        assert per_cycle["f32"] in (32, 64) and "AVX-512 FMA" in p1["f32_isa"] and "measured" in p1["f32_isa"], p1
    elif "AVX2" in feats or "FMA" in feats:
        assert per_cycle["f32"] in (16, 32) and "AVX2 FMA" in p1["f32_isa"] and "measured" in p1["f32_isa"], p1
    if "AVX2" in feats:
        # vpmaddubsw (32 products) every second cycle (Zen 1) up to vpdpbusd (64) twice a cycle
        assert 32 <= per_cycle["int8"] <= 256 and "measured" in p1["int8_isa"], p1
    assert p2["threads"] == 2 and p2["f32_gops"] == pytest.approx(2 * p2["clock_ghz"] * per_cycle["f32"])
    if "AVX512_BF16" in feats:
        # a Zen 4 does twice the F32 rate, a Sapphire/Emerald Rapids Xeon half of it (one vdpbf16ps every
        # second cycle against two FMAs)
        assert per_cycle["bf16"] >= per_cycle["f32"] / 2 and "vdpbf16ps" in p1["bf16_isa"], p1
    else:
        assert per_cycle["bf16"] == per_cycle["f32"], p1
    assert p1["int8_gops"] >= p1["f32_gops"]
    # the tiles are our kernels' (gemm_isa amx), whichever ggml variant is loaded
    assert (p1["amx_int8_gops"] > 0) == (p1["amx_bf16_gops"] > 0) == ("amx" in _core._gemm_isas())
    if p1["amx_bf16_gops"] > 0:
        # measured too (tdpbf16ps, tdpbssd), rounded to powers of two: Intel's figure is one tile product
        # per 16 cycles (1024 and 2048 per cycle); a VM sharing the tile unit measures fewer. Still far
        # above the vector units: that is why our kernels use the tiles.
        amx = {fam: p1[f"amx_{fam}_gops"] / p1["clock_ghz"] for fam in ("bf16", "int8")}
        for fam, rate in amx.items():
            assert rate == pytest.approx(2 ** round(math.log2(rate))), (fam, rate)
            assert "measured" in p1[f"amx_{fam}_isa"], p1
        assert amx["int8"] <= 2 * 2048 and amx["bf16"] <= 2 * 1024, p1
        assert amx["int8"] > per_cycle["int8"] and amx["bf16"] > per_cycle["bf16"], p1
        assert p2["amx_bf16_gops"] == pytest.approx(2 * p2["clock_ghz"] * amx["bf16"])


@pytest.mark.parametrize("tied", [False, True])
def test_decode_weight_bytes_count_what_a_step_reads(tmp_path, tied):
    """Every weight once, the embedding table one row (not counted) unless the output head is that table."""
    path = tmp_path / "w.gguf"
    w = GGUFWriter(str(path), "glm4")
    w.add_tensor("token_embd.weight", np.zeros((100, 64), np.float32))  # 25,600 bytes
    w.add_tensor("blk.0.attn_q.weight", np.zeros((64, 64), np.float16))  # 8,192
    w.add_tensor("blk.0.ffn_down.weight", np.zeros((64, 2 * 34), np.uint8), raw_dtype=GGMLQuantizationType.Q8_0)  # 4,352
    if not tied:
        w.add_tensor("output.weight", np.zeros((100, 64), np.float16))  # 12,800
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    expected = 8192 + 4352 + (25600 if tied else 12800)
    assert op_count.decode_weight_bytes(str(path)) == expected


def test_read_bandwidth_is_measured_and_checks_its_arguments():
    for threads in (1, 2):
        bw = _core.read_bandwidth(threads, mib=64, reps=2)
        assert math.isfinite(bw) and 0.1 < bw < 10_000, (threads, bw)  # GB/s: from a slow VM to HBM
    for bad in ({"threads": 0}, {"threads": 1, "mib": 0}, {"threads": 1, "reps": 0}):
        with pytest.raises(ValueError, match="at least 1"):
            _core.read_bandwidth(**bad)


def test_profile_reports_each_kernel_family_against_the_peak(tiny_checkpoint, convert_tiny):
    text, mmproj = convert_tiny(tiny_checkpoint, "q8_0", "f32")
    code = ("import sys, numpy as np\nfrom autoglm_gguf import _core\n"
            "m = _core.TextModel(sys.argv[1], n_threads=2)\n"
            "s = _core.Session(m, n_ctx=128)\ns.eval_tokens(list(range(10, 74)), 'last')\n"
            "for t in range(4): s.eval_tokens([80 + t], 'last')\ndel s\n"
            "v = _core.VisionModel(sys.argv[2], n_threads=2, use_gpu=False)\n"
            "v.encode(np.zeros((64, 3 * 14 * 14), np.float32), 8, 8)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(text), str(mmproj)], capture_output=True, text=True,
                          env=dict(os.environ, AUTOGLM_PROFILE="1"), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "autoglm profile [text session]" in err and "autoglm profile [vision encode]" in err
    assert "CPU peak on 2 threads at" in err
    text_part = err.split("autoglm profile [text session]")[1].split("autoglm profile")[0]
    # the 64-token prompt's Q8_0 matmuls: ggml's kernel, or our GEMM where it applies (gemm.h)
    q8 = next(line for line in text_part.splitlines()
              if line.strip().startswith(("MUL_MAT q8_0", "GEMM q8_0 (ours)")) and "(vector)" not in line)
    assert "GOP/s" in q8 and ("of int8 peak" in q8 or "of amx_int8 peak" in q8), q8  # (AMX: gemm_block32_amx.h)
    # the decode steps' matrix-vector products read their weights: GB/s against the measured read bandwidth
    assert "(read bandwidth on 2 threads, measured: " in text_part
    gemv = [line for line in text_part.splitlines() if "GB/s of weights" in line]
    assert gemv and all("% of read bw" in line for line in gemv), text_part
    vis = err.split("autoglm profile [vision encode]")[1]
    # the tower's matrices: our float GEMM where it applies (gemm_float.h; 64 patches, 16 merged tokens:
    # the merger's stay with ggml's), else ggml's matmul
    own = "GEMM f32 (ours)" if _core._gemm_available() else "MUL_MAT f32"
    assert any(line.strip().startswith(own) and "of f32 peak" in line for line in vis.splitlines()), vis
    if _core.VisionModel(str(mmproj), n_threads=1, use_gpu=False).attention != "ggml":  # our attention kernel
        assert any(line.strip().startswith("ATTENTION (ours)") and "of f32 peak" in line for line in vis.splitlines())


def test_profile_by_shape_names_each_matrix_product_by_its_weight(tiny_checkpoint, convert_tiny):
    """AUTOGLM_PROFILE=shapes: every matrix product's row ends in its weight's K x N (ours and ggml's),
    so a kernel's rate can be read per shape (where a break-even in K shows)."""
    from gguf import GGUFReader

    text, _ = convert_tiny(tiny_checkpoint, "q8_0", "f32")
    shapes = {f"{int(t.shape[0])}x{int(t.shape[1])}" for t in GGUFReader(str(text)).tensors
              if len(t.shape) == 2 and t.name.startswith("blk.")}
    code = ("import sys\nfrom autoglm_gguf import _core\nm = _core.TextModel(sys.argv[1], n_threads=2)\n"
            "s = _core.Session(m, n_ctx=128)\ns.eval_tokens(list(range(10, 74)), 'last')\ndel s\n")
    proc = subprocess.run([sys.executable, "-c", code, str(text)], capture_output=True, text=True,
                          env=dict(os.environ, AUTOGLM_PROFILE="shapes"), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = [ln.strip() for ln in proc.stderr.splitlines()
            if ln.strip().startswith(("MUL_MAT", "GEMM")) and "GOP/s" in ln and "(vector)" not in ln]
    assert rows, proc.stderr
    seen = set()
    for row in rows:
        name = row.split("  ")[0]  # the family, then two or more spaces before the time
        shape = name.rsplit(" ", 1)[1]
        assert shape in shapes, (row, shapes)
        seen.add(shape)
    # the layers' square and non-square matrices each get their own row (q/k/v fused or not)
    assert len(seen) >= 3 and seen <= shapes, (seen, shapes)


def test_profile_names_our_q4_0_gemm(tiny_checkpoint, convert_tiny):
    if not _core._gemm_available():
        pytest.skip("our Q4_0 GEMM needs AVX2")
    text, _ = convert_tiny(tiny_checkpoint, "q4_0", "f16")
    code = ("import sys\nfrom autoglm_gguf import _core\nm = _core.TextModel(sys.argv[1], n_threads=2)\n"
            "s = _core.Session(m, n_ctx=128)\ns.eval_tokens(list(range(10, 74)), 'last')\ndel s\n")
    proc = subprocess.run([sys.executable, "-c", code, str(text)], capture_output=True, text=True,
                          env=dict(os.environ, AUTOGLM_PROFILE="1"), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    gemm = next(line for line in proc.stderr.splitlines() if line.strip().startswith("GEMM q4_0 (ours)"))
    assert "GOP/s" in gemm and ("of int8 peak" in gemm or "of amx_int8 peak" in gemm), gemm
    assert any(line.strip().startswith("GEMM q4_0 rows to int8 (ours)") for line in proc.stderr.splitlines())
