"""Write a random-weight checkpoint with the real AutoGLM-Phone-9B / GLM-4.1V-9B shapes (bf16, sharded).

For benchmarks only (never in CI): ~19 GB on disk. The shapes follow GLM-4.1V-9B-Thinking's config
(spec section 1); the tokenizer is our tiny test tokenizer padded out to the real 151,552-entry
vocabulary, so the files convert and load like the real model's, though the text they produce is
meaningless.

    python bench/make_synthetic.py /data/AutoGLM-Phone-9B-synthetic
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from autoglm_gguf.tiny_checkpoint import make_config, write_checkpoint

GLM41V_TEXT = {
    "vocab_size": 151552, "hidden_size": 4096, "intermediate_size": 13696, "num_hidden_layers": 40,
    "num_attention_heads": 32, "num_key_value_heads": 2, "max_position_embeddings": 65536,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                        "mrope_section": [8, 12, 12]},
}
GLM41V_VISION = {
    "depth": 24, "hidden_size": 1536, "num_heads": 12, "out_hidden_size": 4096, "intermediate_size": 13696,
    "image_size": 336, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--layers", type=int, default=40, help="text layers (40 = the real model)")
    ap.add_argument("--shard-gb", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = make_config(text={**GLM41V_TEXT, "num_hidden_layers": args.layers}, vision=GLM41V_VISION)
    t0 = time.perf_counter()
    path = write_checkpoint(args.out_dir, cfg, dtype="bf16", seed=args.seed, weight_std=0.02,
                            max_shard_bytes=int(args.shard_gb * 1e9), progress=True)
    dt = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"wrote {path}: {size / 1e9:.2f} GB in {dt:.1f} s ({size / 1e9 / dt:.2f} GB/s), peak RSS {rss:.0f} MiB",
          file=sys.stderr)


if __name__ == "__main__":
    main()
