"""Run in a child process by test_cpu_variants.py, with AUTOGLM_CPU_VARIANT naming the build of ggml's
CPU kernels to use (the choice is made once per process).

argv: job.json out.npz. The job lists text models (path, prompt ids, greedy steps) and vision towers
(path, patches .npy, grid). Writes their logits / greedy tokens / embeddings to out.npz and prints one
JSON line: the variant in use and its features.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from autoglm_gguf import _core


def main() -> None:
    with open(sys.argv[1]) as f:
        job = json.load(f)
    out: dict[str, np.ndarray] = {}
    for t in job["text"]:
        model = _core.TextModel(t["path"], n_threads=2)
        out[f"logits/{t['name']}"] = _core.Session(model, n_ctx=256, kv_type="f32").eval_tokens(t["ids"], "all")
        if t.get("greedy"):
            s = _core.Session(model, n_ctx=256, kv_type="f32")
            logits = s.eval_tokens(t["ids"], "last")[0]
            toks = []
            for _ in range(t["greedy"]):
                toks.append(int(np.argmax(logits)))
                logits = s.eval_tokens([toks[-1]], "last")[0]
            out[f"greedy/{t['name']}"] = np.array(toks)
    for v in job["vision"]:
        vm = _core.VisionModel(v["path"], n_threads=2, use_gpu=False)
        out[f"embd/{v['name']}"] = vm.encode(np.load(v["patches"]), v["gh"], v["gw"])
    np.savez(sys.argv[2], **out)
    print(json.dumps({"variant": _core.cpu_variant(), "features": _core.cpu_features()}))


if __name__ == "__main__":
    main()
