"""Quality of each quantization type against F16, on a small GLM-4.1V trained on real text (train_small.py).

    python bench/quant_quality.py [--types q8_0,q4_k_m,...] [--eval-tokens 8192] [--chunk 256] \\
        [--threads 1] [--json bench/results/quant_quality_small.json]

Steps (every file lives in the trained model's cache directory, under quant/):

1. ``train_small.ensure_trained()``: the trained checkpoint, its held-out text and its calibration text
   (a sample of the *training* split, so it never overlaps the evaluation text).
2. The F16 text GGUF: ``autoglm-gguf convert MODEL --outtype f16 --no-mmproj -o small-F16.gguf``
   (``convert_checkpoint``).
3. The importance matrix, computed by our runtime from the F16 model on the calibration text, one
   ``{"messages": [{"role": "user", "content": PIECE}]}`` conversation per ~2,000-character piece:
   ``autoglm-gguf imatrix -m small-F16.gguf -f calib.jsonl -o small.imatrix.gguf`` (``imatrix.run``).
4. Each type, with and (where the type allows it) without the importance matrix:
   ``autoglm-gguf quantize small-F16.gguf small-TYPE[-imat].gguf TYPE [--imatrix small.imatrix.gguf]``
   (``quantize_gguf``; the one function ``quantize()`` below).
5. Both models evaluate the same held-out chunks (``--chunk`` tokens each, half English, half Chinese,
   every chunk from an empty context, the logits of every position from ``Session.eval_tokens(ids,
   "all")``), and per position: KL(F16 || type) = sum_v p16 (log p16 - log pq) over the whole
   vocabulary, whether the top token is the same, and the log-likelihood of the next held-out token
   (perplexity over positions 0..n-2 of each chunk).

Reported per type: mean and 99th-percentile KL (nats), top-1 agreement with F16, perplexity, the file
size and bits per weight (over all tensors, and over the decoder blocks' weight matrices only: in this
small model the 2,048 x 256 embedding and output matrices are a much larger share than in the 9B one,
so the second figure is the one that transfers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_small
from _proc import machine_info

TYPES = ["q8_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "iq4_xs", "iq4_nl", "q4_0",
         "q3_k_l", "q3_k_m", "q3_k_s", "iq3_s", "iq3_xxs", "q2_k", "iq2_xs", "iq2_xxs"]
NEEDS_IMATRIX = {"iq3_xxs", "iq2_xs", "iq2_xxs", "iq2_s", "iq2_m", "iq1_s", "iq1_m", "q2_k_s", "iq3_xs"}
IMATRIX_UNUSED = {"q8_0"}   # ggml's Q8_0 quantizer takes no importance weights: the file is the same


# ------------------------------------------------------------------------------------------ the tools

def convert_f16(model_dir: Path, out: Path, threads: int) -> None:
    from autoglm_gguf.convert import ConvertOptions, convert_checkpoint

    convert_checkpoint(model_dir, ConvertOptions(outfile=out, outtype="f16", mmproj=False, progress=False,
                                                 n_threads=threads, force=True))


def make_imatrix(f16: Path, calib_jsonl: Path, out: Path, threads: int) -> dict:
    """autoglm-gguf imatrix -m F16 -f calib.jsonl -o out; every decoder weight matrix must be in it."""
    import gguf

    from autoglm_gguf.calibration import load_calibration
    from autoglm_gguf.imatrix import run

    convs = load_calibration(calib_jsonl)
    res = run(str(f16), convs, out, datasets=[calib_jsonl.name], n_ctx=4096, n_threads=threads,
              progress=False)
    wanted = {t.name for t in gguf.GGUFReader(f16).tensors
              if t.name.startswith("blk.") and t.name.endswith(".weight") and len(t.shape) == 2}
    missing = sorted(wanted - set(res.sums))
    if missing:
        raise SystemExit(f"imatrix: {len(missing)} decoder matrices have no statistics: {missing}")
    return {"conversations": res.n_conversations, "tokens": res.n_tokens, "weights": len(res.sums)}


def quantize(f16: Path, out: Path, qtype: str, imatrix: Path | None, threads: int) -> None:
    """The one place a quantized file is made (autoglm-gguf quantize)."""
    from autoglm_gguf.quantize import quantize_gguf

    quantize_gguf(f16, out, qtype, imatrix=imatrix, n_threads=threads, force=True, progress=False)


# ------------------------------------------------------------------------------------------ measuring

def tensor_stats(path: Path) -> dict:
    import gguf

    r = gguf.GGUFReader(path)
    tot_b = tot_n = blk_b = blk_n = 0
    types: dict[str, int] = {}
    for t in r.tensors:
        n, b = int(t.n_elements), int(t.n_bytes)
        tot_b += b
        tot_n += n
        if t.name.startswith("blk.") and len(t.shape) >= 2 and int(min(t.shape)) > 1:
            blk_b += b
            blk_n += n
            key = t.tensor_type.name
            types[key] = types.get(key, 0) + n
    return {"file_bytes": path.stat().st_size, "bpw_all": 8 * tot_b / tot_n, "bpw_blocks": 8 * blk_b / blk_n,
            "block_types": {k: round(v / blk_n, 4) for k, v in sorted(types.items(), key=lambda kv: -kv[1])}}


def eval_chunks(tokenize, heldout: list[dict], n_tokens: int, chunk: int) -> list[tuple[str, list[int]]]:
    """Half the chunks from the English held-out text, half from the Chinese, each `chunk` consecutive
    tokens of that language's held-out stream (pieces joined with <|endoftext|>, in file order)."""
    eot = tokenize("<|endoftext|>", True)
    out = []
    per_lang = n_tokens // chunk // 2
    for lang in ("en", "zh"):
        stream: list[int] = []
        for p in heldout:
            if p["lang"] == lang:
                stream += tokenize(p["text"], False) + eot
            if len(stream) >= per_lang * chunk:
                break
        if len(stream) < per_lang * chunk:
            raise SystemExit(f"only {len(stream)} held-out {lang} tokens; lower --eval-tokens")
        out += [(lang, stream[i * chunk:(i + 1) * chunk]) for i in range(per_lang)]
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class Runner:
    def __init__(self, path: Path, threads: int, chunk: int):
        from autoglm_gguf import _core

        self.model = _core.TextModel(str(path), n_threads=threads)
        self.session = _core.Session(self.model, n_ctx=chunk, n_batch=chunk)

    def logprobs(self, ids: list[int]) -> np.ndarray:
        self.session.truncate(0)
        return _log_softmax(self.session.eval_tokens(ids, "all"))


def compare(ref: list[np.ndarray], path: Path, chunks, threads: int, chunk: int) -> dict:
    run = Runner(path, threads, chunk)
    kls, agree, nll, langs = [], [], [], []
    for (lang, ids), lp16 in zip(chunks, ref):
        lpq = run.logprobs(ids)
        kl = (np.exp(lp16) * (lp16 - lpq)).sum(axis=-1)
        kls.append(kl)
        agree.append(lp16.argmax(-1) == lpq.argmax(-1))
        nll.append(-lpq[np.arange(len(ids) - 1), ids[1:]])
        langs += [lang] * len(ids)
    kl, ag, langs = np.concatenate(kls), np.concatenate(agree), np.array(langs)
    res = {"kl_mean": float(kl.mean()), "kl_p99": float(np.percentile(kl, 99)), "kl_max": float(kl.max()),
           "top1_agree": float(ag.mean()), "ppl": float(np.exp(np.concatenate(nll).mean()))}
    for lang in ("en", "zh"):
        res[f"kl_mean_{lang}"] = float(kl[langs == lang].mean())
        res[f"top1_agree_{lang}"] = float(ag[langs == lang].mean())
    return res


# ------------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trained", type=Path, help="a train_small.py result directory (model/, heldout.jsonl, "
                    "calib.jsonl, train_report.json; e.g. from its --out); default: train_small's cache, "
                    "trained if needed")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--eval-tokens", type=int, default=8192)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="for training, quantizing and evaluating "
                    "(default 1: on a shared 2-core machine one thread is steadier than two)")
    ap.add_argument("--no-imatrix", action="store_true",
                    help="skip the importance matrix and the types that need it")
    ap.add_argument("--json", type=Path,
                    default=Path(__file__).resolve().parent / "results" / "quant_quality_small.json")
    args = ap.parse_args(argv)
    types = [t.strip().lower() for t in args.types.split(",") if t.strip()]

    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    d = args.trained or train_small.ensure_trained(threads=args.threads)
    timings["train (or cache)"] = time.perf_counter() - t
    report = json.loads((d / "train_report.json").read_text())
    work = d / "quant"
    work.mkdir(exist_ok=True)
    print(f"model: {d / 'model'}\n  held-out loss {report['heldout_loss_after']} (before training "
          f"{report['heldout_loss_before']}, unigram {report['baseline']['unigram_xent_heldout']})",
          file=sys.stderr)

    f16 = work / "small-F16.gguf"
    t = time.perf_counter()
    convert_f16(d / "model", f16, args.threads)
    timings["convert f16"] = time.perf_counter() - t

    imat = None
    if not args.no_imatrix:
        calib = work / "calib.jsonl"
        with open(calib, "w", encoding="utf-8") as f:
            for line in (d / "calib.jsonl").read_text(encoding="utf-8").splitlines():
                f.write(json.dumps({"messages": [{"role": "user", "content": json.loads(line)["text"]}]},
                                   ensure_ascii=False) + "\n")
        imat = work / "small.imatrix.gguf"
        t = time.perf_counter()
        imat_info = make_imatrix(f16, calib, imat, args.threads)
        timings["imatrix"] = time.perf_counter() - t
        print(f"imatrix: {imat_info} in {timings['imatrix']:.1f} s", file=sys.stderr)

    heldout = [json.loads(x) for x in (d / "heldout.jsonl").read_text(encoding="utf-8").splitlines()]
    ref_run = Runner(f16, args.threads, args.chunk)
    chunks = eval_chunks(ref_run.model.tokenize, heldout, args.eval_tokens, args.chunk)
    t = time.perf_counter()
    ref = [ref_run.logprobs(ids) for _, ids in chunks]
    timings["eval f16"] = time.perf_counter() - t
    ref_nll = np.concatenate([-lp[np.arange(len(ids) - 1), ids[1:]] for (_, ids), lp in zip(chunks, ref)])
    # How sharp the reference is: top-1 agreement counts near-ties as misses, and a small model has many.
    top2 = np.sort(np.concatenate(ref), axis=-1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    f16_info = {"ppl": float(np.exp(ref_nll.mean())), "top1_prob_mean": float(np.exp(top2[:, 1]).mean()),
                "top1_top2_gap_median": float(np.median(gap)),
                "share_gap_below_0.01": float((gap < 0.01).mean()),
                "share_gap_below_0.1": float((gap < 0.1).mean())}
    print(f"F16: {f16_info}", file=sys.stderr)
    rows = [{"type": "f16", "imatrix": False, **tensor_stats(f16), "kl_mean": 0.0, "kl_p99": 0.0,
             "kl_max": 0.0, "top1_agree": 1.0, "ppl": f16_info["ppl"]}]
    del ref_run

    from autoglm_gguf.errors import ConversionError, GGUFFileError

    failures: list[dict] = []
    for qtype in types:
        for use_im in ([False] if qtype not in NEEDS_IMATRIX else []) + (
                [True] if imat is not None and qtype not in IMATRIX_UNUSED else []):
            out = work / f"small-{qtype.upper()}{'-imat' if use_im else ''}.gguf"
            t = time.perf_counter()
            try:
                quantize(f16, out, qtype, imat if use_im else None, args.threads)
            except (ConversionError, GGUFFileError) as e:
                print(f"{qtype:8s} imatrix={use_im!s:5s} FAILED: {e}", file=sys.stderr)
                failures.append({"type": qtype, "imatrix": use_im, "error": str(e)})
                continue
            tq = time.perf_counter() - t
            t = time.perf_counter()
            row = {"type": qtype, "imatrix": use_im, **tensor_stats(out),
                   **compare(ref, out, chunks, args.threads, args.chunk)}
            row.update(quantize_s=round(tq, 2), eval_s=round(time.perf_counter() - t, 2))
            rows.append(row)
            print(f"{qtype:8s} imatrix={use_im!s:5s} KL {row['kl_mean']:.5f} p99 {row['kl_p99']:.4f} "
                  f"top1 {100 * row['top1_agree']:.2f}% ppl {row['ppl']:.3f} bpw {row['bpw_blocks']:.2f} "
                  f"({tq:.1f} s + {row['eval_s']:.1f} s)", file=sys.stderr)
            out.unlink()

    timings["total"] = time.perf_counter() - t_all
    result = {"model": {"dir": str(d), "train_report": {k: report[k] for k in (
                  "settings", "corpus", "baseline", "tokens", "heldout_loss_before", "heldout_loss_after",
                  "train_seconds", "total_seconds", "threads", "torch", "parameters")}},
              "eval": {"tokens": sum(len(ids) for _, ids in chunks), "chunk": args.chunk,
                       "chunks": len(chunks),
                       "langs": {lang: sum(1 for c in chunks if c[0] == lang) for lang in ("en", "zh")}},
              "imatrix": ({"file": imat.name, **imat_info} if imat else None), "f16": f16_info,
              "threads": args.threads, "machine": machine_info(),
              "timings_s": {k: round(v, 2) for k, v in timings.items()}, "rows": rows, "failures": failures}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    return 1 if failures else 0


def markdown(result: dict) -> str:
    lines = ["| type | imatrix | file KiB | bpw (all) | bpw (blocks) | mean KL | p99 KL | top-1 agree "
             "| PPL |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['type'].upper()} | {'yes' if r['imatrix'] else 'no'} | "
                     f"{r['file_bytes'] / 1024:,.0f} | {r['bpw_all']:.2f} | {r['bpw_blocks']:.2f} | "
                     f"{r['kl_mean']:.5f} | {r['kl_p99']:.4f} | "
                     f"{100 * r['top1_agree']:.2f}% | {r['ppl']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
