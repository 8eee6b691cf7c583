"""Random-weight models of AutoGLM-Phone-9B's exact shapes (or smaller presets), for benchmarks only.

    python bench/make_synthetic.py OUT_DIR [--preset 9b|1b|tiny] [--outtype q4_0] [--mmproj-outtype f16]
    python bench/make_synthetic.py OUT_DIR --hf [--shard-gb 5]      # a bf16 HF checkpoint instead

Default: writes OUT_DIR/<name>-<OUTTYPE>.gguf and OUT_DIR/mmproj-<name>-<MMPROJ_OUTTYPE>.gguf straight
from generated weights: no checkpoint on disk, no torch, a few hundred MB of memory (tensors are
generated in row blocks and quantized as they stream through the converter). --hf writes the
Hugging Face checkpoint instead (~20 GB for 9b), what the converter benchmark reads.

Presets (spec section 1): 9b = GLM-4.1V-9B / AutoGLM-Phone-9B: 40 layers, 4096 wide, 32/2 heads,
FFN 13696, vocab 151552, M-RoPE [8, 12, 12]; ViT 24 x 1536, 12 heads, merger 13696. 1b = a quick
~1B-parameter text model with a 12-block ViT of the same width. tiny = the test suite's shape;
tiny-vocab = the same with the full 151,552-entry vocabulary (real special-token ids, a few MB).
Weights are scaled random normals (std 0.02, norms 1 + N(0, 0.1)) so activations stay finite. The
tokenizer is our small test BPE with the 20 GLM-4 added tokens at their real ids (151329..151348,
<|image|> = 151343), the ids between them unused, so both runtimes load and tokenize the files; the
text the models produce is meaningless, which does not change their speed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from autoglm_gguf._tiny.checkpoint import TINY_TEXT, TINY_VISION, make_config, tensor_specs, write_checkpoint
from autoglm_gguf._tiny.tokenizer import special_token_id, write_json, write_tokenizer_files
from autoglm_gguf._tiny.weights import random_rows

GLM_SPECIAL_BASE = 151329  # <|endoftext|>: the first of GLM-4's 20 added tokens (GGUF mode)
PRESETS = {
    "9b": (
        {"vocab_size": 151552, "hidden_size": 4096, "intermediate_size": 13696, "num_hidden_layers": 40,
         "num_attention_heads": 32, "num_key_value_heads": 2, "max_position_embeddings": 65536,
         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                             "mrope_section": [8, 12, 12]}},
        {"depth": 24, "hidden_size": 1536, "num_heads": 12, "out_hidden_size": 4096, "intermediate_size": 13696,
         "image_size": 336, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
    ),
    "1b": (
        {"vocab_size": 151552, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 16,
         "num_attention_heads": 16, "num_key_value_heads": 2, "max_position_embeddings": 65536,
         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                             "mrope_section": [8, 12, 12]}},
        {"depth": 12, "hidden_size": 1536, "num_heads": 12, "out_hidden_size": 2048, "intermediate_size": 6144,
         "image_size": 336, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
    ),
    "tiny": (TINY_TEXT, TINY_VISION),
    # the tiny shapes with GLM-4's full vocabulary: real special-token ids at a few MB (tests)
    "tiny-vocab": (dict(TINY_TEXT, vocab_size=151552), TINY_VISION),
}
NAMES = {"9b": "AutoGLM-Phone-9B-synthetic", "1b": "GLM4V-1B-synthetic", "tiny": "GLM4V-tiny-synthetic",
         "tiny-vocab": "GLM4V-tiny-vocab-synthetic"}


def synthetic_config(preset: str, layers: int | None, real_ids: bool) -> tuple[dict, int]:
    """(config, first added-token id or 0 for the test tokenizer's own layout)."""
    text, vision = PRESETS[preset]
    text = dict(text, **({"num_hidden_layers": layers} if layers else {}))
    base = GLM_SPECIAL_BASE if real_ids and text["vocab_size"] > GLM_SPECIAL_BASE + 20 else None
    if base is None:
        return make_config(text=text, vision=vision), 0
    sid = lambda t: special_token_id(t, base)
    text["pad_token_id"] = sid("<|endoftext|>")
    top = {"image_token_id": sid("<|image|>"), "video_token_id": sid("<|video|>"),
           "image_start_token_id": sid("<|begin_of_image|>"), "image_end_token_id": sid("<|end_of_image|>"),
           "video_start_token_id": sid("<|begin_of_video|>"), "video_end_token_id": sid("<|end_of_video|>")}
    return make_config(text=text, vision=vision, **top), base


def write_ggufs(out_dir: Path, preset: str, cfg: dict, base: int, outtype: str, mmproj_outtype: str, seed: int,
                threads: int) -> dict:
    from autoglm_gguf.convert import ConvertOptions, convert_loaded, load_checkpoint
    from autoglm_gguf.convert.safetensors_io import TensorRef

    @dataclass(frozen=True)
    class SyntheticTensor(TensorRef):
        """A TensorRef whose rows are generated on demand (_tiny.weights.random_rows)."""
        kind: str = "w"
        zero_from: int | None = None

        def read_rows(self, r0, r1):
            return random_rows(self.name, self.shape, self.kind, r0, r1, seed=seed, weight_std=0.02,
                               zero_rows_from=self.zero_from)

    n_tok = base + 20 if base else None
    tensors = {}
    for name, shape, kind in tensor_specs(cfg):
        n = 1
        for d in shape:
            n *= d
        tensors[name] = SyntheticTensor(name, Path("synthetic"), "BF16", shape, 0, 2 * n, kind,
                                        n_tok if name == "lm_head.weight" else None)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / NAMES[preset]
        d.mkdir()
        cfg = dict(cfg, dtype="bfloat16")
        write_json(d / "config.json", cfg)
        write_tokenizer_files(d, cfg, special_base=base or 480)
        ckpt = load_checkpoint(d, tensors=tensors)
        opts = ConvertOptions(outfile=out_dir / f"{NAMES[preset]}-{outtype.upper()}.gguf", outtype=outtype,
                              mmproj_outfile=out_dir / f"mmproj-{NAMES[preset]}-{mmproj_outtype.upper()}.gguf",
                              mmproj_outtype=mmproj_outtype, force=True, progress=True, n_threads=threads)
        return convert_loaded(ckpt, opts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="9b")
    ap.add_argument("--layers", type=int, help="override the number of text layers")
    ap.add_argument("--outtype", default="q4_0", help="text GGUF type (q4_0, q8_0, f16, bf16, f32)")
    ap.add_argument("--mmproj-outtype", default="f16", help="mmproj type (f16, f32, q8_0)")
    ap.add_argument("--hf", action="store_true", help="write a bf16 Hugging Face checkpoint instead of GGUFs")
    ap.add_argument("--shard-gb", type=float, default=5.0, help="--hf: shard size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-t", "--threads", type=int, default=0)
    args = ap.parse_args()

    cfg, base = synthetic_config(args.preset, args.layers, real_ids=not args.hf)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.hf:  # the test tokenizer's layout (added tokens right after its BPE), as transformers reads it
        path = write_checkpoint(args.out_dir, cfg, dtype="bf16", seed=args.seed, weight_std=0.02,
                                max_shard_bytes=int(args.shard_gb * 1e9), progress=True)
        size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        what = f"{path}: {size / 1e9:.2f} GB"
    else:
        files = write_ggufs(args.out_dir, args.preset, cfg, base, args.outtype, args.mmproj_outtype, args.seed,
                            args.threads)
        what = ", ".join(f"{p} ({v['bytes'] / 1e9:.2f} GB)" for p, v in files.items())
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"wrote {what} in {dt:.1f} s, peak RSS {rss:.0f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
