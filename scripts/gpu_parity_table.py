"""Print the GPU-vs-CPU parity measurements that tests/test_gpu.py wrote (AUTOGLM_GPU_REPORT, one JSON
object per line) as Markdown tables: the worst case per setting.

    python scripts/gpu_parity_table.py build/vulkan/gpu-parity.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def worst(rows: list[dict], key: tuple[str, ...]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for r in rows:
        k = tuple(r.get(f) for f in key)
        best = out.get(k)
        if best is None:
            out[k] = dict(r)
        else:
            best["rel"] = max(best["rel"], r["rel"])
            if "argmax_agreement" in r:
                best["argmax_agreement"] = min(best.get("argmax_agreement", 1.0), r["argmax_agreement"])
            if "max_abs_dlogit" in r:
                best["max_abs_dlogit"] = max(best.get("max_abs_dlogit", 0.0), r["max_abs_dlogit"])
            if "greedy_equal" in r:
                best["greedy_equal"] = best.get("greedy_equal", True) and r["greedy_equal"]
    return out


def ngl_name(ngl: int, n_layer: int | None) -> str:
    if ngl < 0:
        return "all + output (-1)"
    return f"{ngl}" + (f" of {n_layer}" if n_layer else "")


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    by_test = defaultdict(list)
    for r in rows:
        by_test[r["test"]].append(r)
    device = rows[0]["device"] if rows else "?"
    mode = "GGML_VK_DISABLE_F16=1 (F32 arithmetic)" if rows and rows[0].get("strict") else "default precision"
    print(f"GPU parity against the CPU run of the same file, on {device}, {mode}\n")
    if by_test["text"]:
        print("| text model | type | -ngl | max abs dlogit | max rel dlogit | top-token agreement | greedy (24 tokens) |\n"
              "|---|---|---|---|---|---|---|")
        for (arch, typ, ngl), r in sorted(worst(by_test["text"], ("arch", "type", "ngl")).items(),
                                          key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] < 0, kv[0][2])):
            dist = f"{r['argmax_agreement']:.0%}"
            print(f"| {arch} | {typ} | {ngl_name(ngl, r.get('n_layer'))} | {r['max_abs_dlogit']:.2e} | {r['rel']:.2e} | {dist} | "
                  f"{'identical' if r['greedy_equal'] else 'DIFFERENT'} |")
        print()
    for r in by_test["decode"]:
        print(f"decode, 16 single-token steps ({r['arch']}, {r['type']}, -ngl {r['ngl']}): max rel dlogit {r['rel']:.2e}, "
              f"top-token agreement {r['argmax_agreement']:.0%}\n")
    if by_test["image_prompt"]:
        print("| image prompt | -ngl | vision on GPU | max rel dlogit | top-token agreement | greedy (16 tokens) |\n"
              "|---|---|---|---|---|---|")
        for (arch, ngl, off), r in sorted(worst(by_test["image_prompt"], ("arch", "ngl", "mmproj_offload")).items()):
            print(f"| {arch} | {ngl_name(ngl, None)} | {'yes' if off else 'no'} | {r['rel']:.2e} | {r['argmax_agreement']:.0%} | "
                  f"{'identical' if r['greedy_equal'] else 'DIFFERENT'} |")
        print()
    if by_test["vision"]:
        print("| vision tower | mmproj type | image | tokens | max rel d(embedding) |\n|---|---|---|---|---|")
        for r in sorted(by_test["vision"], key=lambda r: (r["arch"], r["type"], r["tokens"])):
            print(f"| {r['arch']} | {r['type']} | {r['size']} | {r['tokens']} | {r['rel']:.2e} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
