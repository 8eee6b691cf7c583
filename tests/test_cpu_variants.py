"""ggml's CPU kernels built once per x86 instruction-set level and chosen at run time
(native/src/backend_loader.h).

Every variant this machine can run is loaded in its own process (AUTOGLM_CPU_VARIANT) and must give
the reference results: F32 text logits within 1e-4 of transformers in float64 and the same greedy
tokens, F32/F16 image embeddings within the vision tower's bounds, quantized logits no further from
transformers than the best variant's (+10%, +0.05, the rule the suite applies to llama.cpp). Variants
this CPU or OS cannot run are skipped with that reason, and asking for one is a clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autoglm_gguf import _core

torch = pytest.importorskip("torch")
from transformers import AutoTokenizer, Glm4vForConditionalGeneration  # noqa: E402
from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil  # noqa: E402

HERE = Path(__file__).resolve().parent
VARIANTS = _core.cpu_variants()
pytestmark = [pytest.mark.skipif(not VARIANTS, reason="this build has one CPU backend compiled in "
                                                      "(built with AUTOGLM_CPU_VARIANTS=OFF)"),
              pytest.mark.slow]  # each runnable variant in a process of its own: 10 s and up

PROMPT = ("[gMASK]<sop><|system|>\nYou are a phone agent.<|user|>\nOpen Settings, then tap Wi-Fi. "
          "你好！ def f(x): return x ** 2<|assistant|>\n")
IMAGE = (270, 600)  # an odd, phone-shaped grid: every kernel's tails
GREEDY = 16

# What each x86 variant is compiled for (ggml's GGML_CPU_ALL_VARIANTS list), as /proc/cpuinfo names the
# flags: only to say in a skip which ones this machine lacks.
_AVX512 = ["avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"]
_HASWELL = ["sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"]
NEEDS = {"x64": [], "sse42": ["sse4_2"], "sandybridge": ["sse4_2", "avx"], "ivybridge": ["sse4_2", "avx", "f16c"],
         "piledriver": ["sse4_2", "avx", "f16c", "fma"], "haswell": _HASWELL, "skylakex": _HASWELL + _AVX512,
         "cannonlake": _HASWELL + _AVX512 + ["avx512vbmi"], "cascadelake": _HASWELL + _AVX512 + ["avx512_vnni"],
         "icelake": _HASWELL + _AVX512 + ["avx512vbmi", "avx512_vnni"],
         "cooperlake": _HASWELL + _AVX512 + ["avx512_vnni", "avx512_bf16"],
         "zen4": _HASWELL + _AVX512 + ["avx512vbmi", "avx512_vnni", "avx512_bf16"],
         "alderlake": _HASWELL + ["avx_vnni"],
         "sapphirerapids": _HASWELL + _AVX512 + ["avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8"]}


def _missing_flags(variant: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return "unknown"
    missing = [f for f in NEEDS.get(variant, []) if f not in flags]
    # all present: the OS has not enabled the state (XCR0: AVX-512 / AMX tile registers)
    return ", ".join(missing) if missing else "none in /proc/cpuinfo; the OS does not enable their register state"


def _run_worker(variant: str | None, job: dict, tmp: Path) -> tuple[dict, dict]:
    jf, out = tmp / f"job-{variant}.json", tmp / f"out-{variant}.npz"
    jf.write_text(json.dumps(job))
    env = dict(os.environ)
    env.pop("AUTOGLM_CPU_VARIANT", None)
    if variant:
        env["AUTOGLM_CPU_VARIANT"] = variant
    proc = subprocess.run([sys.executable, str(HERE / "_variant_worker.py"), str(jf), str(out)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"variant {variant}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(out) as z:
        return info, {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_checkpoint_f32, alt_checkpoint, convert_tiny):
    """The job every variant runs, transformers' float64 answers, and the best variant's own results."""
    tmp = tmp_path_factory.mktemp("variants")
    job: dict = {"text": [], "vision": []}
    ref: dict = {}
    for arch, ckpt in (("tiny", tiny_checkpoint_f32), ("alt", alt_checkpoint)):
        ids = AutoTokenizer.from_pretrained(ckpt)(PROMPT, add_special_tokens=False)["input_ids"]
        hf = Glm4vForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float64).eval()
        with torch.no_grad():
            ref[f"logits/{arch}"] = hf(input_ids=torch.tensor([ids])).logits[0].numpy()
            gen = hf.generate(input_ids=torch.tensor([ids]), max_new_tokens=GREEDY, do_sample=False,
                              eos_token_id=[], pad_token_id=0)
        ref[f"greedy/{arch}"] = gen[0, len(ids):].numpy()
        for outtype in ("f32", "q8_0", "q4_0"):
            text, _ = convert_tiny(ckpt, outtype, "f16")
            job["text"].append({"name": f"{arch}-{outtype}", "path": str(text), "ids": ids,
                                "greedy": GREEDY if outtype == "f32" else 0})
        proc = Glm4vImageProcessorPil.from_pretrained(ckpt)
        from PIL import Image

        rng = np.random.default_rng(7)
        img = Image.fromarray((rng.random((IMAGE[1], IMAGE[0], 3)) * 255).astype(np.uint8))
        px = proc(images=[img], size={"shortest_edge": 2 * 28 * 28, "longest_edge": 9633792}, return_tensors="pt")
        pv, grid = px["pixel_values"], px["image_grid_thw"]
        with torch.no_grad():
            ref[f"embd/{arch}"] = hf.model.get_image_features(pv.to(torch.float64), grid).pooler_output[0].numpy()
        vc = hf.config.vision_config
        p, t = vc.patch_size, vc.temporal_patch_size
        patches = np.ascontiguousarray(pv.numpy().reshape(pv.shape[0], 3, t, p, p)[:, :, 0].reshape(pv.shape[0], -1),
                                       dtype=np.float32)
        np.save(tmp / f"patches-{arch}.npy", patches)
        _, gh, gw = (int(v) for v in grid[0])
        for outtype in ("f32", "f16"):
            _, mmproj = convert_tiny(ckpt, "f32", outtype)
            job["vision"].append({"name": f"{arch}-{outtype}", "path": str(mmproj),
                                  "patches": str(tmp / f"patches-{arch}.npy"), "gh": gh, "gw": gw})
    best_info, best = _run_worker(None, job, tmp)
    return job, ref, best_info, best, tmp


def _rel(got, want):
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


@pytest.mark.parametrize("variant", [v["name"] for v in VARIANTS])
def test_variant_gives_the_reference_results(variant, reference):
    job, ref, _, best, tmp = reference
    entry = next(v for v in VARIANTS if v["name"] == variant)
    if not entry["runnable"]:
        pytest.skip(f"{variant}: this CPU or its OS cannot run it (ggml_backend_score 0); missing: "
                    f"{_missing_flags(variant)}")
    info, got = _run_worker(variant, job, tmp)
    assert info["variant"] == variant
    lines = [f"\n[{variant}] features: {' '.join(info['features'])}"]
    for arch in ("tiny", "alt"):
        err = float(np.abs(got[f"logits/{arch}-f32"] - ref[f"logits/{arch}"]).max())
        assert err <= 1e-4, (variant, arch, err)
        assert got[f"greedy/{arch}-f32"].tolist() == ref[f"greedy/{arch}"].tolist(), (variant, arch)
        q = []
        for outtype in ("q8_0", "q4_0"):
            key = f"logits/{arch}-{outtype}"
            ours = float(np.abs(got[key] - ref[f"logits/{arch}"]).max())
            base = float(np.abs(best[key] - ref[f"logits/{arch}"]).max())
            q.append(f"{outtype} {ours:.3f} (best variant {base:.3f}, |diff| {np.abs(got[key] - best[key]).max():.2e})")
            assert ours <= 1.1 * base + 0.05, (variant, key, ours, base)
        for outtype, bound in (("f32", 1e-3), ("f16", 2e-2)):
            err_v = _rel(got[f"embd/{arch}-{outtype}"], ref[f"embd/{arch}"])
            assert err_v <= bound, (variant, arch, outtype, err_v)
        lines.append(f"  {arch}: f32 logits max err {err:.1e}, greedy identical; quantized max err: {'; '.join(q)}; "
                     f"image embedding rel err f32 {_rel(got[f'embd/{arch}-f32'], ref[f'embd/{arch}']):.1e}")
    print("\n".join(lines))


def test_the_best_runnable_variant_is_used_by_default(reference):
    _, _, best_info, _, _ = reference
    runnable = [v for v in VARIANTS if v["runnable"]]
    assert runnable, "no variant can run here, yet the suite runs"
    top = max(v["score"] for v in runnable)
    assert best_info["variant"] in [v["name"] for v in runnable if v["score"] == top]
    # this process: the variant conftest.py pins for the llama.cpp comparisons, else the best
    assert _core.cpu_variant() == os.environ.get("AUTOGLM_CPU_VARIANT", best_info["variant"])
    # the features are the loaded module's: a variant at or above haswell was built with AVX2
    assert ("AVX2" in _core.cpu_features()) == (_core.cpu_variant() not in ("x64", "sse42", "sandybridge",
                                                                            "ivybridge", "piledriver"))
    assert ("AVX2" in best_info["features"]) == (best_info["variant"] not in ("x64", "sse42", "sandybridge",
                                                                            "ivybridge", "piledriver"))


def _load_with(variant: str, path: Path) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom autoglm_gguf import _core\n"
            "try:\n    _core.TextModel(sys.argv[1], n_threads=1)\n"
            "except ValueError as e:\n    print('ValueError:', e)\n")
    env = dict(os.environ, AUTOGLM_CPU_VARIANT=variant)
    return subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_an_unknown_variant_is_refused_with_the_choices(tiny_checkpoint, convert_tiny):
    text, _ = convert_tiny(tiny_checkpoint, "q4_0", "f16")
    proc = _load_with("pentium4", text)
    assert proc.returncode == 0, proc.stderr
    assert "ValueError: AUTOGLM_CPU_VARIANT=pentium4: no such CPU variant" in proc.stdout
    for v in VARIANTS:
        assert (v["name"] in proc.stdout.split("can run:")[1]) == v["runnable"]


def test_a_variant_this_cpu_cannot_run_is_refused_not_crashed(tiny_checkpoint, convert_tiny):
    unrunnable = [v["name"] for v in VARIANTS if not v["runnable"]]
    if not unrunnable:
        pytest.skip("this machine can run every variant the build has")
    text, _ = convert_tiny(tiny_checkpoint, "q4_0", "f16")
    proc = _load_with(unrunnable[-1], text)
    assert proc.returncode == 0, proc.stderr  # a SIGILL would be -4
    assert f"AUTOGLM_CPU_VARIANT={unrunnable[-1]}: this CPU or its operating system lacks instructions" in proc.stdout


def test_info_names_the_kernels_in_use():
    proc = subprocess.run([sys.executable, "-m", "autoglm_gguf.cli", "info"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"CPU kernels: {_core.cpu_variant()} (runnable here: " in proc.stdout
