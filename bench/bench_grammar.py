"""Per-token cost of the agent's answer grammar at GLM-4's vocabulary size (151,552 ids).

    python bench/bench_grammar.py [--vocab 151552] [--answers 200] [--corpus DIR] [--out results/grammar_cost.json]

The real GLM-4 tokenizer is not available offline, so a byte-level BPE of the same size is trained
with `tokenizers` on local text (Python sources: code, English, punctuation, digits) plus our
tokenizer's mixed-script sample; llguidance's mask cost depends on the vocabulary's size and byte
structure, not on which merges it learned. Then uniformly random allowed tokens walk the grammar (the
worst case: every answer explores the whole action set), and each step's mask computation and token
commit are timed, as the native generator calls them (Constraint.fill_mask + accept).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np


def corpus_texts(root: Path, limit_bytes: int) -> list[str]:
    """Up to limit_bytes of the UTF-8 .py files under root (a few stdlib tests are Latin-1: skipped)."""
    out, total = [], 0
    for p in sorted(root.rglob("*.py")):
        try:
            out.append(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        total += len(out[-1])
        if total >= limit_bytes:
            break
    return out


def byte_level_decoder() -> dict[str, int]:
    """Character -> byte of the byte-level BPE alphabet (printable bytes stand for themselves, the
    others are shifted above U+0100), so each token's exact bytes can be recovered."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, shift = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(256 + shift)] = b
            shift += 1
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=151552)
    ap.add_argument("--answers", type=int, default=200)
    ap.add_argument("--corpus", default=sysconfig.get_paths()["stdlib"])
    ap.add_argument("--corpus-mb", type=int, default=60)
    ap.add_argument("--out")
    args = ap.parse_args()

    import llguidance
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from autoglm_gguf._tiny.tokenizer import CORPUS
    from autoglm_gguf.actions import parse_answer
    from autoglm_gguf.agent.answer_grammar import answer_grammar
    from autoglm_gguf.grammar import Constraint

    specials = ["<|endoftext|>", "<|user|>", "<|observation|>", "<think>", "</think>", "<answer>", "</answer>"]
    t0 = time.perf_counter()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = corpus_texts(Path(args.corpus), args.corpus_mb << 20) + [CORPUS] * 200
    tok.train_from_iterator(texts, trainer)
    train_s = time.perf_counter() - t0
    n = tok.get_vocab_size()
    print(f"trained a {n}-token byte-level BPE in {train_s:.0f} s on {len(texts) - 200} files", flush=True)

    # The vocabulary as llguidance sees ours: each id's bytes, special tokens marked with 0xff.
    tokens = []
    special_ids = [tok.token_to_id(s) for s in specials]
    to_byte = byte_level_decoder()
    for i in range(n):
        text = tok.id_to_token(i)
        tokens.append(b"\xff" + text.encode() if i in special_ids else bytes(to_byte[ch] for ch in text))

    class Wrapper:
        eos_token_id = special_ids[0]
        bos_token_id = None
        special_token_ids = special_ids

        def __init__(self):
            self.tokens = tokens

        def __call__(self, data: bytes):
            return tok.encode(data.decode("utf-8", "replace"), add_special_tokens=False).ids

    t0 = time.perf_counter()
    lltok = llguidance.LLTokenizer(llguidance.TokenizerWrapper(Wrapper()), n_vocab=n, eos_token=special_ids[:3])
    tokenizer_s = time.perf_counter() - t0

    grammar = answer_grammar(max_thinking_tokens=128, max_string_chars=40)
    rng = random.Random(0)
    per_token, parsed, lengths = [], 0, []
    mask = np.zeros((n + 31) // 32, dtype=np.uint32)
    eos = set(special_ids[:3])
    t_all = time.perf_counter()
    for _ in range(args.answers):
        c = Constraint(lltok, grammar)
        out = []
        while True:
            mask[:] = 0
            t0 = time.perf_counter()
            c.fill_mask(mask.ctypes.data, mask.nbytes)
            t_mask = time.perf_counter() - t0
            allowed = np.flatnonzero(np.unpackbits(mask.view(np.uint8), bitorder="little")[:n])
            t = int(allowed[rng.randrange(len(allowed))])
            if t in eos:
                per_token.append(t_mask)
                break
            t0 = time.perf_counter()
            more = c.accept(t)
            per_token.append(t_mask + time.perf_counter() - t0)
            out.append(t)
            if not more:
                break
        lengths.append(len(out))
        parsed += parse_answer(tok.decode(out, skip_special_tokens=False)).parsed is not None
    walk_s = time.perf_counter() - t_all
    ms = sorted(x * 1e3 for x in per_token)
    result = {"vocab": n, "train_s": train_s, "llg_tokenizer_s": tokenizer_s, "answers": args.answers,
              "parsed": parsed, "tokens": len(ms), "median_ms": statistics.median(ms),
              "p90_ms": ms[int(0.9 * (len(ms) - 1))], "p99_ms": ms[int(0.99 * (len(ms) - 1))], "max_ms": ms[-1],
              "mean_tokens_per_answer": statistics.mean(lengths), "walk_s": walk_s,
              "llguidance": llguidance.__version__, "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
