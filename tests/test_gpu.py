"""GPU offload against the CPU run of the same files: placement, logits, greedy tokens, image embeddings,
prefix and image-cache reuse, and running out of device memory.

These run on whatever GPU backend the extension was built with (scripts/vulkan-ci.sh builds Vulkan and
runs them on Mesa's lavapipe in CI; a CUDA or Metal build runs them on its device). In a CPU-only build
the offload tests skip with the reason, and the CPU-only behaviour of the same options is tested instead.
AUTOGLM_REQUIRE_GPU=1 turns the skip into a failure (so a GPU job cannot pass without a GPU).
AUTOGLM_GPU_REPORT=FILE appends one JSON line per measured comparison (the parity tables).

Bounds (GPU against CPU, same file). GPU backends trade precision for speed where the CPU does not:
ggml-vulkan loads F32 and F16 matmul tiles as F16 on devices with F16 arithmetic and rounds quantized
matmuls' activations differently from the CPU (which quantizes them to the weights' dot type, Q8_0 for
Q4_0). The tiny random-weight models amplify any rounding difference layer by layer (their Q4_0 logits
are ~50-90 % away from their own F32 logits), so the default bounds are loose. With
GGML_VK_DISABLE_F16=1, which scripts/vulkan-ci.sh sets for its second pass, the Vulkan kernels compute
F32 files in F32, and a prompt evaluated in one step must match the CPU to F32 rounding: that is what
shows that the offloaded graph is the CPU's graph and not merely close to it. Steps shorter than 32
tokens (decode, the text pieces around an image) go through ggml's CPU flash attention, which rounds Q
to F16, so there the reference itself is only F16-exact.
  - text logits, max |dlogit| / max |logit|: F32 file 1.5e-2 (strict 5e-4); Q4_0 file 0.25 (measured 0.13);
    decode steps 1.5e-2 (strict 1e-2); a prompt with an image, F32 files, 6e-2 (strict 1e-2);
  - image embeddings, max |d| / max |embedding|: F32 mmproj 1e-2 (strict 2e-5); F16 mmproj 1e-2;
  - greedy tokens and the share of positions with the same top token are measured and reported
    (AUTOGLM_GPU_REPORT); they follow from the logit bounds and are not asserted separately.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from autoglm_gguf import AutoGLM, _core
from autoglm_gguf._tiny.checkpoint import make_config, write_checkpoint
from autoglm_gguf.convert import ConvertOptions, convert_checkpoint
from autoglm_gguf.vision import ImageEncoder

GPUS = [d for d in _core.devices() if d["type"] in ("gpu", "igpu")]
GPU = GPUS[0]["name"] if GPUS else None
if GPU is None:
    _why = (f"no GPU device visible to ggml (backends compiled in: {', '.join(_core.backends())}; "
            "scripts/vulkan-ci.sh builds the Vulkan backend and runs these on lavapipe)")
    if os.environ.get("AUTOGLM_REQUIRE_GPU") == "1":
        raise RuntimeError(f"AUTOGLM_REQUIRE_GPU=1 but {_why}")
needs_gpu = pytest.mark.skipif(GPU is None, reason=_why if GPU is None else "")
# Mesa's lavapipe (the CI's software GPU) JIT-compiles ggml-vulkan's F16-weight matmul shader with
# LLVM 15 for ~14 minutes (measured: one F16 mmproj encode, cold shader cache); real GPUs compile it
# in well under a second. F16 weights run everywhere else; F32 and Q4_0 weights run on lavapipe too.
LAVAPIPE = bool(GPUS and "llvmpipe" in str(GPUS[0]["description"]))

STRICT = bool(GPU and GPU.startswith("Vulkan") and os.environ.get("GGML_VK_DISABLE_F16"))
# a wrong graph is off by O(1); q5_k_m: its Q5_1 matrices (the tiny widths are no multiple of 256) are
# held in our interleaved layout on the CPU-resident layers and as stored on the GPU's
TEXT_BOUND = {"f32": 5e-4 if STRICT else 1.5e-2, "q4_0": 0.25, "q5_k_m": 0.25}
# Steps of fewer than 32 tokens (decode; the text around an image) use ggml's CPU flash attention,
# which rounds Q to F16, so there the CPU reference itself is only F16-exact.
SHORT_STEP_BOUND = 1e-2 if STRICT else 1.5e-2
IMAGE_PROMPT_BOUND = 1e-2 if STRICT else 6e-2  # F32 files; the tower's rounding adds to the decoder's
EMBD_BOUND = {"f32": 2e-5 if STRICT else 1e-2, "f16": 1e-2}

# Two architectures: the tiny default made 4 layers deep (so 1 and "half" differ), and a variant with
# other widths, head counts, GQA ratio, rope sections and vocabulary. Its FFN width (160) is a multiple of
# 32 so that its Q4_0 file has no F16 fallback rows, whose shader lavapipe compiles for ~14 minutes (the
# CPU suite covers the fallback rows).
ARCHS = {
    "tiny4": (dict(num_hidden_layers=4), {}),
    "alt": (dict(hidden_size=96, vocab_size=509, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                 intermediate_size=160, rope_parameters={"rope_theta": 500000.0, "mrope_section": [2, 1, 1]}),
            dict(hidden_size=48, depth=3, num_heads=4, intermediate_size=72, image_size=84)),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """files(arch, text_type, mmproj_type) -> (text.gguf, mmproj.gguf), converted once per module."""
    cache: dict = {}

    def get(arch: str, text_type: str = "f32", mmproj_type: str = "f32") -> tuple[Path, Path]:
        key = (arch, text_type, mmproj_type)
        if key not in cache:
            ckpt_key = (arch,)
            if ckpt_key not in cache:
                text, vision = ARCHS[arch]
                cache[ckpt_key] = write_checkpoint(tmp_path_factory.mktemp(f"ckpt-{arch}") / arch,
                                                   make_config(text=text, vision=vision), dtype="f32", seed=3)
            out = tmp_path_factory.mktemp(f"gguf-{arch}-{text_type}-{mmproj_type}")
            t, m = out / f"{arch}-{text_type}.gguf", out / f"mmproj-{arch}-{mmproj_type}.gguf"
            convert_checkpoint(cache[ckpt_key], ConvertOptions(outfile=t, outtype=text_type, mmproj_outfile=m,
                                                               mmproj_outtype=mmproj_type, progress=False))
            cache[key] = (t, m)
        return cache[key]

    return get


def report(**row) -> None:
    path = os.environ.get("AUTOGLM_GPU_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"device": GPU, "strict": STRICT, **row}) + "\n")


def picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def expected_layers(n_layer: int, ngl: int, gpu: str) -> list[str]:
    n_on_gpu = n_layer if ngl < 0 or ngl > n_layer else ngl
    return ["CPU"] * (n_layer - n_on_gpu) + [gpu] * n_on_gpu  # the last layers go first, as llama.cpp


def ngl_settings(n_layer: int) -> list[int]:
    return sorted({0, 1, n_layer // 2, n_layer, -1}, key=lambda n: (n < 0, n))


PROMPT = [{"role": "system", "content": "You operate a phone for the user."},
          {"role": "user", "content": "Open Settings, then turn on Wi-Fi and tell me when it is done."}]


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max())


# ------------------------------------------------------------------------------------ CPU-only builds
@pytest.mark.skipif(GPU is not None, reason="a GPU is visible: the offload tests below cover this build")
def test_without_a_gpu_every_part_stays_on_the_cpu(files):
    text, mmproj = files("tiny4")
    llm = AutoGLM(text, mmproj_path=mmproj, n_ctx=256, n_gpu_layers=-1)
    p = llm.placement
    assert p["layers"] == ["CPU"] * 4 and p["output"] == "CPU" and p["kv_cache"] == ["CPU"] * 4
    assert p["vision"] == "CPU" and p["token_embd"] == "CPU"
    assert llm.placement_summary().startswith("layers 4/4 on CPU, output on CPU, KV cache 4/4 on CPU")


# ------------------------------------------------------------------------------------ placement
@needs_gpu
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_placement_follows_n_gpu_layers(files, arch):
    text, mmproj = files(arch)
    for ngl in ngl_settings(AutoGLM(text, n_ctx=64).hparams["n_layer"]):
        for offload in (True, False):
            llm = AutoGLM(text, mmproj_path=mmproj, n_ctx=128, n_gpu_layers=ngl, mmproj_offload=offload)
            n_layer = llm.hparams["n_layer"]
            p = llm.placement
            want = expected_layers(n_layer, ngl, GPU)
            assert p["layers"] == want, (ngl, p)
            assert p["kv_cache"] == want, (ngl, p)  # each layer's cache lives beside its weights
            # The output head joins the GPU only when every layer is there and more was asked (llama.cpp's
            # -ngl n_layer+1 / -1); the embedding lookup reads one row per token and stays on the CPU.
            assert p["output"] == (GPU if ngl < 0 or ngl > n_layer else "CPU"), (ngl, p)
            assert p["token_embd"] == "CPU"
            assert p["vision"] == (GPU if offload else "CPU")
            n_gpu = want.count(GPU)
            summary = llm.placement_summary()
            assert (f"{n_gpu}/{n_layer} on {GPU}" in summary) == (n_gpu > 0), summary
            assert f"vision on {p['vision']}" in summary


@needs_gpu
def test_cli_run_prints_where_the_layers_went(files):
    text, _ = files("tiny4")
    proc = subprocess.run([sys.executable, "-m", "autoglm_gguf.cli", "run", "-m", str(text), "-p", "hi", "-n", "4",
                           "-ngl", "2", "-c", "128"], capture_output=True, text=True,
                          timeout=1800)  # a guard only: on lavapipe the first GPU run JIT-compiles its shaders (minutes)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("placement:"))
    assert f"layers 2/4 on CPU, 2/4 on {GPU}, output on CPU, KV cache 2/4 on CPU, 2/4 on {GPU}" in line


# ------------------------------------------------------------------------------------ text parity
def argmax_agreement(got: np.ndarray, ref: np.ndarray) -> float:
    """Share of positions whose top token is the same (teacher-forced: both saw the same tokens)."""
    return float((got.argmax(-1) == ref.argmax(-1)).mean())


@needs_gpu
@pytest.mark.parametrize("text_type", ["f32", "q4_0", "q5_k_m"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_text_logits_and_greedy_match_the_cpu(files, arch, text_type):
    text, _ = files(arch, text_type)
    cpu = AutoGLM(text, n_ctx=256)
    prompt = cpu.apply_chat_template(PROMPT)
    ref = cpu.prompt_logits(prompt)
    ref_tokens = (cpu.generate(prompt, max_tokens=24), cpu.last_tokens)
    n_layer = cpu.hparams["n_layer"]
    for ngl in ngl_settings(n_layer):
        if ngl == 0:
            continue
        gpu = AutoGLM(text, n_ctx=256, n_gpu_layers=ngl)
        got = gpu.prompt_logits(prompt)
        err = rel_err(got, ref)
        out = gpu.generate(prompt, max_tokens=24)
        same = (out, gpu.last_tokens) == ref_tokens
        report(test="text", arch=arch, type=text_type, ngl=ngl, n_layer=n_layer, max_abs_dlogit=float(np.abs(got - ref).max()),
               rel=err, argmax_agreement=argmax_agreement(got, ref), greedy_equal=same)
        assert err <= TEXT_BOUND[text_type], (ngl, err)


@needs_gpu
def test_decode_on_the_gpu_matches_the_cpu_token_by_token(files):
    """Single-token decode steps (a different kernel path from prompt processing on every backend),
    teacher-forced with the CPU's greedy tokens."""
    text, _ = files("tiny4")
    cpu, gpu = AutoGLM(text, n_ctx=256), AutoGLM(text, n_ctx=256, n_gpu_layers=-1)
    ids = cpu.tokenize(cpu.apply_chat_template(PROMPT))
    lc = cpu._session.eval_tokens(ids, "last")
    lg = gpu._session.eval_tokens(ids, "last")
    worst, agree = 0.0, 0
    for _ in range(16):
        worst = max(worst, rel_err(lg, lc))
        nxt = int(np.argmax(lc[-1]))
        agree += int(np.argmax(lg[-1])) == nxt
        lc = cpu._session.eval_tokens([nxt], "last")
        lg = gpu._session.eval_tokens([nxt], "last")
    report(test="decode", arch="tiny4", type="f32", ngl=-1, rel=worst, argmax_agreement=agree / 16)
    assert worst <= SHORT_STEP_BOUND


# ------------------------------------------------------------------------------------ vision parity
@needs_gpu
@pytest.mark.parametrize("mmproj_type", ["f32", pytest.param("f16", marks=pytest.mark.skipif(
    LAVAPIPE, reason="lavapipe needs ~14 min to JIT ggml-vulkan's F16-weight matmul shader (see LAVAPIPE)"))])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_image_embeddings_match_the_cpu(files, arch, mmproj_type):
    _, mmproj = files(arch, "f32", mmproj_type)
    cpu = ImageEncoder(str(mmproj), use_gpu=False)
    gpu = ImageEncoder(str(mmproj), use_gpu=True)
    assert cpu.model.weights_device == "CPU" and gpu.model.weights_device == GPU
    for size in [(112, 56), (150, 230), (333, 97)]:
        img = picture(*size, seed=size[0])
        ref, got = cpu.encode(img), gpu.encode(img)
        assert (got.grid_h, got.grid_w) == (ref.grid_h, ref.grid_w)
        err = rel_err(got.embeddings, ref.embeddings)
        report(test="vision", arch=arch, type=mmproj_type, size=f"{size[0]}x{size[1]}", tokens=len(ref.embeddings), rel=err)
        assert err <= EMBD_BOUND[mmproj_type], (size, err)


@needs_gpu
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_image_prompt_on_the_gpu_matches_the_cpu(files, arch):
    text, mmproj = files(arch)
    img = picture(140, 260, seed=7)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Tap the blue button."}]}]
    # the towers in the file's type on both (auto is BF16 on an AVX512_BF16 CPU, the file's on a GPU)
    cpu = AutoGLM(text, mmproj_path=mmproj, n_ctx=512, mmproj_offload=False, vision_matmul_type="file")
    prompt = cpu.apply_chat_template(msgs)
    ref = cpu.prompt_logits(prompt, images=[img])
    cpu.reset()
    ref_out = cpu.generate(prompt, images=[img], max_tokens=16)
    for ngl, offload in [(-1, True), (1, True), (-1, False), (0, True)]:
        gpu = AutoGLM(text, mmproj_path=mmproj, n_ctx=512, n_gpu_layers=ngl, mmproj_offload=offload,
                      vision_matmul_type="file")
        got = gpu.prompt_logits(prompt, images=[img])
        err = rel_err(got, ref)
        gpu.reset()
        out = gpu.generate(prompt, images=[img], max_tokens=16)
        report(test="image_prompt", arch=arch, ngl=ngl, mmproj_offload=offload, rel=err,
               argmax_agreement=argmax_agreement(got, ref), greedy_equal=out == ref_out)
        assert err <= IMAGE_PROMPT_BOUND, (ngl, offload, err)


# ------------------------------------------------------------------------------------ reuse
@needs_gpu
def test_prefix_and_image_cache_reuse_on_the_gpu_match_a_cold_run(files):
    """An agent's step 2 on the GPU: the system prompt and step 1's screenshot come from the KV cache
    (on the device) and the embeddings cache; the answer equals a cold evaluation of the same prompt."""
    text, mmproj = files("tiny4")
    llm = AutoGLM(text, mmproj_path=mmproj, n_ctx=1024, n_gpu_layers=-1)
    s1, s2 = picture(112, 224, seed=1), picture(112, 224, seed=2)
    system = {"role": "system", "content": "You are a phone agent. " * 10}
    step1 = [system, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Open Settings."}]}]
    p1 = llm.apply_chat_template(step1)
    n_step1 = len(llm.prompt_logits(p1, images=[s1]))  # cells of step 1's prompt
    llm.reset()
    llm.generate(p1, images=[s1], max_tokens=6)
    step2 = step1 + [{"role": "assistant", "content": llm.detokenize(llm.last_tokens)},
                     {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Next."}]}]
    p2 = llm.apply_chat_template(step2)
    hits = llm._vision.hits
    warm = llm.generate(p2, images=[s1, s2], max_tokens=12)
    assert llm.last_timings["prompt_tokens_reused"] >= n_step1  # step 1 came from the KV cache on the device
    assert llm._vision.hits >= hits + 1  # s1 again, from the embeddings cache
    warm_logits = llm.prompt_logits(p2, images=[s1, s2])  # from an empty context, images cached
    llm.reset()
    llm._vision.clear_cache()
    cold = llm.generate(p2, images=[s1, s2], max_tokens=12)
    assert llm.last_timings["prompt_tokens_reused"] == 0
    assert warm == cold
    cold_logits = llm.prompt_logits(p2, images=[s1, s2])
    np.testing.assert_array_equal(warm_logits, cold_logits)  # cached embeddings are the same bytes


# ------------------------------------------------------------------------------------ device memory
@needs_gpu
@pytest.mark.skipif(not GPU or not GPU.startswith("Vulkan"),
                    reason="limits the device's buffer size through GGML_VK_FORCE_MAX_BUFFER_SIZE (Vulkan only)")
def test_weights_that_do_not_fit_the_device_are_a_clear_error_and_the_cpu_still_works(files, tmp_path):
    text, _ = files("tiny4")
    script = textwrap.dedent(f"""
        from autoglm_gguf import AutoGLM, OutOfMemoryError
        try:
            AutoGLM({str(text)!r}, n_ctx=128, n_gpu_layers=-1)
        except OutOfMemoryError as e:
            print("ERROR:", e)
        else:
            raise SystemExit("loaded although no weight fits the device")
        llm = AutoGLM({str(text)!r}, n_ctx=128, n_gpu_layers=0)
        print("CPU:", len(llm.generate(llm.apply_chat_template([{{"role": "user", "content": "hi"}}]), max_tokens=4)))
    """)
    env = {**os.environ, "GGML_VK_FORCE_MAX_BUFFER_SIZE": "4096"}  # no weight matrix of the model fits
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    err = next(ln for ln in proc.stdout.splitlines() if ln.startswith("ERROR:"))
    assert "of Vulkan0 memory for the GLM-4 model weights" in err and "Vulkan0 reports" in err and "-ngl" in err, err
    assert any(ln.startswith("CPU:") for ln in proc.stdout.splitlines())
