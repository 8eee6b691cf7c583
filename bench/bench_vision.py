"""Vision tower timing: one image's patches through VisionModel.encode (ViT + downsample + merger).

    python bench/bench_vision.py --mmproj MMPROJ.gguf [--grid 168x74] [--threads 2] [--reps 1] [--json out.json]
    python bench/bench_vision.py --make DIR [--outtype f16] ...   # write + convert a real-shaped random tower first

--make writes a random checkpoint with GLM-4.1V / AutoGLM-Phone-9B's vision shapes (depth 24, width 1536,
12 heads, out 4096, merger 13696; spec section 1) and a one-layer 4096-wide text model (only there
because the converter writes both files), converts it, and times the mmproj. The default grid 168 x 74
(12,432 patches -> 3,108 tokens) is a 1080x2400 screenshot under AutoGLM's serving budget
(max_pixels 5,000,000; spec C.5). Patches are random normal values (timing does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

REAL_VISION = {
    "depth": 24, "hidden_size": 1536, "num_heads": 12, "out_hidden_size": 4096, "intermediate_size": 13696,
    "image_size": 336, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
}
SMALL_TEXT = {"hidden_size": 4096, "num_hidden_layers": 1, "num_attention_heads": 32, "num_key_value_heads": 2,
              "intermediate_size": 128}


def make_mmproj(work: Path, outtype: str) -> Path:
    from autoglm_gguf._tiny.checkpoint import make_config, write_checkpoint
    from autoglm_gguf.convert import ConvertOptions, convert_checkpoint

    mmproj = work / f"mmproj-real-vision-{outtype}.gguf"
    if mmproj.exists():
        return mmproj
    ckpt = work / "real-vision-ckpt"
    if not (ckpt / "config.json").exists():
        cfg = make_config(text=SMALL_TEXT, vision=REAL_VISION)
        write_checkpoint(ckpt, cfg, dtype="bf16", seed=0, weight_std=0.02, max_shard_bytes=2 << 30, progress=True)
    convert_checkpoint(ckpt, ConvertOptions(outfile=work / "text-small-f16.gguf", outtype="f16", mmproj_outfile=mmproj,
                                            mmproj_outtype=outtype, progress=True))
    return mmproj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--mmproj", type=Path)
    src.add_argument("--make", type=Path, metavar="DIR")
    ap.add_argument("--outtype", default="f16", help="mmproj type for --make (f32, f16, q8_0)")
    ap.add_argument("--grid", default="168x74", help="patch grid HxW (multiples of 2)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--vision-type", default="auto", help="the matrices' type: file, auto, f32, f16, bf16")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from autoglm_gguf import _core

    mmproj = args.mmproj
    if args.make:
        args.make.mkdir(parents=True, exist_ok=True)
        mmproj = make_mmproj(args.make, args.outtype)
    gh, gw = (int(v) for v in args.grid.lower().split("x"))

    t0 = time.perf_counter()
    vm = _core.VisionModel(str(mmproj), n_threads=args.threads, use_gpu=not args.no_gpu, matmul_type=args.vision_type)
    t_load = time.perf_counter() - t0
    hp = vm.hparams
    p = hp["patch_size"]
    patches = np.random.default_rng(0).standard_normal((gh * gw, 3 * p * p), dtype=np.float32)

    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        out = vm.encode(patches, gh, gw)
        times.append(time.perf_counter() - t0)
    assert out.shape == (gh * gw // 4, hp["n_out"]) and np.isfinite(out).all()
    res = {
        "mmproj": str(mmproj), "hparams": hp, "devices": vm.devices, "weight_bytes": vm.weight_bytes,
        "matmul_type": vm.matmul_type, "grid": [gh, gw], "n_patches": gh * gw, "n_tokens": gh * gw // 4, "threads": args.threads,
        "load_s": round(t_load, 2), "encode_s": [round(t, 2) for t in times],
        "patches_per_s": round(gh * gw / min(times), 1),
        "max_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "cpu": platform.processor() or platform.machine(), "ggml": _core.ggml_version(),
    }
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
