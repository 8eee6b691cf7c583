"""The vision tower runtime (``_core.VisionModel``) against transformers' ``Glm4vVisionModel`` in float64.

Both tiny random checkpoints of conftest are used: the default one (depth 2, width 32, 2 heads, 8x8
position table) and ``alt`` (depth 3, width 48, 4 heads, 6x6 table, f16 weights). Each is converted
with ``mmproj_outtype=f32`` (the GGUF weights equal the HF weights exactly) and with ``f16``.

Inputs come from HF's own PIL image processor (``Glm4vImageProcessorPil``, no torchvision): its
``pixel_values`` rows are (C, T=2, py, px); a still image repeats the frame on T, so the T=0 slice is
what ``VisionModel.encode`` takes. Image sizes cover: the position table's own size (no
interpolation), smaller grids (bicubic downsampling), larger and non-square grids (upsampling), and
resized odd / phone-shaped images.

The reference is ``model.model.get_image_features`` with the model in float64 (HF itself runs the
position-embedding interpolation and the ViT RoPE in float32). Errors are max|ours - ref| / max|ref|;
the measured values are printed (run with ``-s``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL_Image = pytest.importorskip("PIL.Image")

from transformers import Glm4vForConditionalGeneration  # noqa: E402
from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil  # noqa: E402

from autoglm_gguf import GGUFFileError, _core  # noqa: E402

# (width, height): table-sized / smaller / larger grids for both configs (tiny: 8x8 table, alt: 6x6).
IMAGES = [(112, 112), (84, 84), (56, 56), (270, 600), (97, 131), (420, 196)]
# HF's default budget (min 12544 "2-frame" pixels) would upscale 56x56; lower it so a 4x4 grid exists.
SIZE = {"shortest_edge": 2 * 28 * 28, "longest_edge": 9633792}

F32_BOUND = 1e-3  # relative to max|ref|; measured ~1e-6 (see the printed values)
F16_BOUND = 2e-2  # f16 weights (kernels and matrices): measured a few 1e-3
Q8_BOUND = 8e-2   # q8_0 matrices: ggml also rounds the activations to q8_0 (measured ~3e-2)
BF16_BOUND = 3e-2  # bf16 matrices; ggml rounds the activations to bf16 too (measured: see the printed values)


class Case:
    def __init__(self, name, ckpt, convert_tiny):
        self.name = name
        self.ckpt = ckpt
        self.text, self.mmproj = convert_tiny(ckpt, "f32", "f32")
        self.model = Glm4vForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float64).eval()
        self.proc = Glm4vImageProcessorPil.from_pretrained(ckpt)
        self.vision_config = self.model.config.vision_config
        self._inputs = {}

    def inputs(self, w, h):
        """(pixel_values [n, C*T*p*p] float32 tensor, grid_thw tensor) from HF's processor."""
        if (w, h) not in self._inputs:
            rng = np.random.default_rng(w * 1000 + h)
            img = PIL_Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))
            px = self.proc(images=[img], size=SIZE, return_tensors="pt")
            self._inputs[(w, h)] = (px["pixel_values"], px["image_grid_thw"])
        return self._inputs[(w, h)]

    def reference(self, w, h):
        pv, grid = self.inputs(w, h)
        with torch.no_grad():
            out = self.model.model.get_image_features(pv.to(torch.float64), grid).pooler_output
        return out[0].numpy()

    def patches(self, w, h):
        """Our input: the T=0 slice of each pixel_values row, (C, py, px) flattened."""
        pv, grid = self.inputs(w, h)
        vc = self.vision_config
        p, t = vc.patch_size, vc.temporal_patch_size
        x = pv.numpy().reshape(pv.shape[0], 3, t, p, p)
        for i in range(1, t):
            assert np.array_equal(x[:, :, 0], x[:, :, i]), "a still image repeats its frame on the time axis"
        _, gh, gw = (int(v) for v in grid[0])
        return np.ascontiguousarray(x[:, :, 0].reshape(pv.shape[0], 3 * p * p), dtype=np.float32), gh, gw


@pytest.fixture(scope="module", params=["tiny", "alt"])
def case(request, convert_tiny):
    ckpt = request.getfixturevalue("tiny_checkpoint_f32" if request.param == "tiny" else "alt_checkpoint")
    return Case(request.param, ckpt, convert_tiny)


def _rel_err(got, ref):
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.isfinite(got).all()
    return float(np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max())


def test_hparams(case):
    vm = _core.VisionModel(str(case.mmproj), n_threads=2, use_gpu=False)
    vc = case.vision_config
    hp = vm.hparams
    assert (hp["n_embd"], hp["n_layer"], hp["n_head"]) == (vc.hidden_size, vc.depth, vc.num_heads)
    assert hp["n_ff"] == vc.out_hidden_size  # the ViT MLP is out_hidden_size wide (spec B.1)
    assert hp["n_merger_ff"] == vc.intermediate_size
    assert hp["n_out"] == vc.out_hidden_size == case.model.config.text_config.hidden_size
    assert hp["n_pos"] == (vc.image_size // vc.patch_size) ** 2
    assert (hp["patch_size"], hp["merge_size"]) == (vc.patch_size, vc.spatial_merge_size)
    assert hp["eps"] == pytest.approx(vc.rms_norm_eps)
    assert hp["image_mean"] == pytest.approx(case.proc.image_mean)
    assert hp["image_std"] == pytest.approx(case.proc.image_std)
    assert (hp["min_pixels"], hp["max_pixels"]) == (case.proc.size["shortest_edge"], case.proc.size["longest_edge"])
    assert vm.weight_bytes > 0 and "CPU" in vm.devices


def test_grids_cover_the_interpolation_cases(case):
    side = case.vision_config.image_size // case.vision_config.patch_size
    grids = {tuple(int(v) for v in case.inputs(w, h)[1][0][1:]) for w, h in IMAGES}
    assert (side, side) in grids                                 # no interpolation
    assert any(gh < side and gw < side for gh, gw in grids)      # downsampling
    assert any(gh > side and gw > side for gh, gw in grids)      # upsampling
    assert any(gh != gw for gh, gw in grids)                     # non-square
    assert (case.inputs(270, 600)[1][0][1:] != torch.tensor([600 // 14, 270 // 14])).any()  # resized


@pytest.mark.parametrize("size", IMAGES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_f32_matches_hf_float64(case, size):
    vm = _core.VisionModel(str(case.mmproj), n_threads=2, use_gpu=False)
    patches, gh, gw = case.patches(*size)
    got = vm.encode(patches, gh, gw)
    ref = case.reference(*size)
    assert got.shape == (gh * gw // 4, case.vision_config.out_hidden_size)
    err = _rel_err(got, ref)
    print(f"\n[{case.name} f32 {size[0]}x{size[1]} grid {gh}x{gw}] rel err {err:.2e} (max|ref| {np.abs(ref).max():.3g})")
    assert err <= F32_BOUND


@pytest.mark.parametrize("kernel", ["ggml", "avx2", "avx512"])
def test_every_attention_kernel_matches_hf(case, kernel):
    """Our CPU attention kernels (vision_attention.cpp: AVX2 and AVX-512 GEMM + online softmax) and
    ggml's flash attention give the same F32 embeddings; odd grids exercise every tail (patches not a
    multiple of the 48-query/256-key blocks; the alt tower's head_dim 12 is below one vector)."""
    try:
        vm = _core.VisionModel(str(case.mmproj), n_threads=2, use_gpu=False, attention=kernel)
    except ValueError as e:
        assert "not available on this CPU" in str(e)
        pytest.skip(f"{kernel}: {e}")
    assert vm.attention == kernel
    for size in [(270, 600), (97, 131)]:
        patches, gh, gw = case.patches(*size)
        err = _rel_err(vm.encode(patches, gh, gw), case.reference(*size))
        assert err <= 1e-5, (kernel, size, err)


def test_unknown_attention_kernel_is_refused(case):
    with pytest.raises(ValueError, match="unknown; expected auto, ggml, avx2, avx512 or avx512_bf16"):
        _core.VisionModel(str(case.mmproj), attention="sse9")


@pytest.mark.parametrize("outtype,bound", [("f16", F16_BOUND), ("q8_0", Q8_BOUND)])
def test_lower_precision_files(case, convert_tiny, outtype, bound):
    _, mmproj = convert_tiny(case.ckpt, "f32", outtype)
    vm = _core.VisionModel(str(mmproj), n_threads=2, use_gpu=False)
    for size in [(112, 112), (270, 600)]:
        patches, gh, gw = case.patches(*size)
        err = _rel_err(vm.encode(patches, gh, gw), case.reference(*size))
        print(f"\n[{case.name} {outtype} {size[0]}x{size[1]}] rel err {err:.2e}")
        assert err <= bound


def test_repeated_and_alternating_sizes_are_stable(case):
    """Compute buffers are re-planned per image size; results must not depend on what ran before."""
    vm = _core.VisionModel(str(case.mmproj), n_threads=2, use_gpu=False)
    a, b = case.patches(270, 600), case.patches(56, 56)
    first = vm.encode(*a)
    vm.encode(*b)
    assert np.array_equal(vm.encode(*a), first)


def test_errors(case):
    with pytest.raises(GGUFFileError, match=r"architecture 'glm4'.*mmproj"):
        _core.VisionModel(str(case.text), use_gpu=False)
    with pytest.raises(GGUFFileError, match="cannot open"):
        _core.VisionModel(str(case.mmproj) + ".missing", use_gpu=False)
    vm = _core.VisionModel(str(case.mmproj), n_threads=1, use_gpu=False)
    patches, gh, gw = case.patches(112, 112)
    with pytest.raises(ValueError, match="shape"):
        vm.encode(patches[:, :-1], gh, gw)                      # wrong patch width
    with pytest.raises(ValueError, match="shape"):
        vm.encode(patches[:-4], gh, gw)                         # rows != grid_h * grid_w
    with pytest.raises(ValueError, match="shape"):
        vm.encode(patches.reshape(-1), gh, gw)                  # not 2-D
    with pytest.raises(ValueError, match="float32"):
        vm.encode(patches.astype(np.float64), gh, gw)
    with pytest.raises(ValueError, match="multiples of the merge size"):
        vm.encode(np.zeros((3 * gw, patches.shape[1]), np.float32), 3, gw)
    assert vm.encode(np.asfortranarray(patches), gh, gw).shape == (gh * gw // 4, case.vision_config.out_hidden_size)


def test_default_device_matches_cpu(case):
    """VisionModel's defaults (use_gpu=True): the CPU-only build runs on the CPU; a GPU build must agree
    with it (its attention kernel may round K/V to f16, hence the looser bound)."""
    cpu = _core.VisionModel(str(case.mmproj), n_threads=2, use_gpu=False)
    dflt = _core.VisionModel(str(case.mmproj))
    patches, gh, gw = case.patches(270, 600)
    want = cpu.encode(patches, gh, gw)
    got = dflt.encode(patches, gh, gw)
    if "+" not in dflt.devices:  # no GPU: the same kernels on the same data
        assert np.array_equal(got, want)
    assert _rel_err(got, want.astype(np.float64)) <= 1e-2


def test_matrices_converted_to_bf16_at_load(case, capsys):
    """matmul_type='bf16' (what 'auto' picks on AVX512_BF16 CPUs): the F32 file's ViT and merger matrices
    are held in BF16, and the embeddings stay within BF16_BOUND of transformers in float64."""
    vm = _core.VisionModel(str(case.mmproj), n_threads=2, use_gpu=False, matmul_type="bf16")
    f32 = _core.VisionModel(str(case.mmproj), n_threads=2, use_gpu=False)
    assert (vm.matmul_type, f32.matmul_type) == ("bf16", "f32")
    assert vm.weight_bytes < f32.weight_bytes
    for size in [(112, 112), (270, 600)]:
        patches, gh, gw = case.patches(*size)
        ref = case.reference(*size)
        err, err32 = _rel_err(vm.encode(patches, gh, gw), ref), _rel_err(f32.encode(patches, gh, gw), ref)
        with capsys.disabled():
            print(f"\n[{case.name} bf16 matrices {size[0]}x{size[1]}] rel err {err:.2e} (f32 {err32:.1e})")
        assert err32 < err <= BF16_BOUND


def _bf16_attention_or_skip(case, **kw):
    try:
        return _core.VisionModel(str(case.mmproj), n_threads=2, use_gpu=False, **kw)
    except ValueError as e:
        assert "not available on this CPU" in str(e)
        pytest.skip(f"avx512_bf16 attention: {e}")


def test_bf16_attention_matches_hf_within_bf16_bounds(case, capsys):
    """attention='avx512_bf16' with F32 matrices: q, k, v and the softmax weights rounded to BF16, sums
    in F32 (vdpbf16ps). Within BF16_BOUND of transformers in float64, and measurably not the F32 kernel
    (which is within 1e-5). Grids that are not multiples of the 48-query / 256-key blocks and an odd
    patch count per key block exercise every edge (the alt tower's head_dim 12 is below one vector)."""
    vm = _bf16_attention_or_skip(case, attention="avx512_bf16")
    f32 = _core.VisionModel(str(case.mmproj), n_threads=2, use_gpu=False, attention="avx512")
    assert (vm.attention, vm.matmul_type) == ("avx512_bf16", "f32")
    for size in [(270, 600), (97, 131), (56, 56)]:
        patches, gh, gw = case.patches(*size)
        ref = case.reference(*size)
        err, err32 = _rel_err(vm.encode(patches, gh, gw), ref), _rel_err(f32.encode(patches, gh, gw), ref)
        with capsys.disabled():
            print(f"\n[{case.name} bf16 attention {size[0]}x{size[1]}] rel err {err:.2e} (f32 {err32:.1e})")
        assert err32 < err <= BF16_BOUND


def test_a_bf16_tower_attends_in_bf16(case):
    """With the matrices in BF16 the tower's 'auto' attention is BF16 too where the CPU has AVX512_BF16
    and its products run faster than in F32: on the AMX tiles, or by a vdpbf16ps that does more
    multiply-adds per cycle than the F32 FMAs (a Zen 4, not a Sapphire Rapids Xeon: cpu_peak measures
    both); unless a kernel is named. Within BF16_BOUND of transformers either way."""
    if "avx512_bf16" not in _core._gemm_isas():
        pytest.skip("this CPU (or its OS) has no AVX512_BF16")
    vm = _core.VisionModel(str(case.mmproj), n_threads=2, use_gpu=False, matmul_type="bf16")
    named = _core.VisionModel(str(case.mmproj), n_threads=2, use_gpu=False, matmul_type="bf16", attention="avx512")
    peak = _core.cpu_peak(1)
    fast = _core._gemm_isa() == "amx" or peak["bf16_gops"] > peak["f32_gops"]  # the tiles, or a fast vdpbf16ps
    assert named.attention == "avx512"
    assert vm.attention == ("avx512_bf16" if fast else "avx512"), peak
    patches, gh, gw = case.patches(270, 600)
    ref = case.reference(270, 600)
    assert _rel_err(vm.encode(patches, gh, gw), ref) <= BF16_BOUND
    assert _rel_err(named.encode(patches, gh, gw), ref) <= BF16_BOUND


def test_f16_file_held_in_f32(case, convert_tiny):
    """matmul_type='f32' widens an F16 file's matrices: no activation rounding to F16 inside the matmuls,
    so the embeddings are at least as close to transformers as with the file's own F16 matrices."""
    _, mmproj = convert_tiny(case.ckpt, "f32", "f16")
    wide = _core.VisionModel(str(mmproj), n_threads=2, use_gpu=False, matmul_type="f32")
    plain = _core.VisionModel(str(mmproj), n_threads=2, use_gpu=False, matmul_type="file")
    assert (wide.matmul_type, plain.matmul_type) == ("f32", "f16")
    patches, gh, gw = case.patches(270, 600)
    ref = case.reference(270, 600)
    assert _rel_err(wide.encode(patches, gh, gw), ref) <= _rel_err(plain.encode(patches, gh, gw), ref) + 1e-6


def test_auto_matmul_type_follows_the_cpu(case, convert_tiny):
    _, mmproj = convert_tiny(case.ckpt, "f32", "f16")
    vm = _core.VisionModel(str(mmproj), n_threads=1, use_gpu=False, matmul_type="auto")
    bf16_dot = "AVX512_BF16" in _core.cpu_features() or _core._gemm_isa() in ("avx512_bf16", "amx")  # ggml's or ours
    assert vm.matmul_type == ("bf16" if bf16_dot else "f16")
    # quantized matrices stay as they are (the alt tower's 48-wide rows do not fit q8_0 blocks: f16 there)
    from gguf import GGUFReader

    _, q8 = convert_tiny(case.ckpt, "f32", "q8_0")
    stored = next(t.tensor_type.name.lower() for t in GGUFReader(q8).tensors if t.name == "v.blk.0.attn_qkv.weight")
    want = "bf16" if stored in ("f32", "f16") else stored
    assert _core.VisionModel(str(q8), n_threads=1, use_gpu=False, matmul_type="bf16").matmul_type == want
    with pytest.raises(ValueError, match="matmul_type 'int4' is unknown; expected auto, file, f32, f16 or bf16"):
        _core.VisionModel(str(mmproj), matmul_type="int4")


@pytest.fixture(scope="module")
def wide_head_case(tmp_path_factory, convert_tiny):
    """One ViT block with the 9B tower's head width (128: 2 heads of a 256-wide block), so that the
    attention's products fill whole AMX tiles (16 pairs of the head dimension, 32 keys, 16 query rows)."""
    from autoglm_gguf._tiny.checkpoint import make_config, write_checkpoint

    cfg = make_config(vision={"hidden_size": 256, "num_heads": 2, "depth": 1})
    ckpt = write_checkpoint(tmp_path_factory.mktemp("wide-head") / "glm4v", cfg, dtype="f32", seed=3)
    return Case("wide-head", ckpt, convert_tiny)


def test_bf16_attention_at_the_real_head_width(wide_head_case, capsys):
    """BF16 attention where the tiles apply (on a CPU with AMX: tdpbf16ps for the whole blocks, vdpbf16ps
    for the edges; elsewhere vdpbf16ps throughout), at 270x600 (about 800 patches: several blocks of
    keys, a partial last one, query blocks with a 16-row remainder): within BF16_BOUND of transformers,
    as the F32 attention is within F32_BOUND."""
    case = wide_head_case
    vm = _bf16_attention_or_skip(case, attention="avx512_bf16")
    f32 = _core.VisionModel(str(case.mmproj), n_threads=2, use_gpu=False, attention="avx512")
    patches, gh, gw = case.patches(270, 600)
    ref = case.reference(270, 600)
    err, err32 = _rel_err(vm.encode(patches, gh, gw), ref), _rel_err(f32.encode(patches, gh, gw), ref)
    with capsys.disabled():
        print(f"\n[wide head, bf16 attention ({_core._gemm_isa()})] rel err {err:.2e} (f32 {err32:.1e})")
    assert err32 <= F32_BOUND and err32 < err <= BF16_BOUND
    if _core._gemm_isa() != "amx":
        return
    # the tiles against vdpbf16ps on the same BF16 operands (a child: the setting is read once per
    # process): only the order of the F32 sums differs, far below the BF16 rounding
    import os
    import subprocess
    import sys

    out = case.mmproj.parent / "wide-head-vdpbf16ps.npy"
    np.save(case.mmproj.parent / "wide-head-patches.npy", patches)
    child = ("import sys, numpy as np\nfrom autoglm_gguf import _core\n"
             "vm = _core.VisionModel(sys.argv[1], n_threads=2, use_gpu=False, attention='avx512_bf16')\n"
             f"np.save(sys.argv[3], vm.encode(np.load(sys.argv[2]), {gh}, {gw}))\n")
    proc = subprocess.run([sys.executable, "-c", child, str(case.mmproj), str(case.mmproj.parent / "wide-head-patches.npy"),
                           str(out)], env=dict(os.environ, AUTOGLM_GEMM_ISA="avx512_bf16"), capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    tiles = vm.encode(patches, gh, gw)
    assert _rel_err(tiles, np.load(out)) <= 0.05 * err
