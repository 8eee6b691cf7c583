"""Train a small GLM-4.1V (``Glm4vForConditionalGeneration``) on real text, for quantization-quality figures.

    python bench/train_small.py [--out DIR] [--threads 1] [--force]

Random weights make quantization errors meaningless (every type looks equally bad on noise), so
``bench/quant_quality.py`` measures them on this model instead: AutoGLM-Phone-9B's architecture at a
small size, trained for a few minutes on CPU until it predicts held-out text far better than a
unigram model.

Model (``autoglm_gguf._tiny.checkpoint.make_config``): text decoder 4 layers, hidden 256, FFN 768
(SwiGLU, so the converter's fused gate_up is 1536 rows of 256), 8 query heads and 2 KV heads (head_dim
32, grouped-query factor 4 as in the 9B model), partial rotary 0.5 (16 rotary dims) with M-RoPE
sections [2, 3, 3], q/k/v biases, untied lm_head. Every decoder matrix's row length is a multiple of
256, so every K-quant and IQ type applies without a row-size fallback. The vision tower is the test
suite's tiny one (2 blocks, 32 wide) and is not trained; only the text decoder is.

Tokenizer: a byte-level BPE of 2,028 tokens (256 bytes + 1,772 merges) plus GLM-4's 20 added tokens
(vocabulary 2,048), trained on the training split with the tiny test tokenizer's recipe (GLM-4's
pre-tokenizer regex, the same added tokens in the same order and flags, the same tokenizer_config,
chat template and generation config from ``autoglm_gguf._tiny.tokenizer``). The tiny test tokenizer
itself (480 BPE tokens learnt from a 2 KB sample) would spell almost all Chinese as raw UTF-8 bytes,
so it is not used.

Corpus (all offline, read from this machine; the exact files depend on what is installed, and the
corpus's SHA-256 is recorded in ``train_report.json``):

* English: the docstrings of CPython's standard library (module, class and function docstrings, read
  with ``ast`` from the ``.py`` sources of the running interpreter, without importing anything; the
  ``test``, ``idlelib``, ``turtledemo`` and ``lib2to3`` trees skipped; ~1.6 MB for CPython 3.11), and
  the license texts in ``/usr/share/common-licenses`` (GPL, LGPL, Apache, MPL, GFDL, Artistic, BSD, CC0).
* Chinese: every Simplified-Chinese message translation (``msgstr`` containing CJK ideographs) of the
  gettext catalogs in ``/usr/share/locale/zh_CN/LC_MESSAGES/*.mo`` (apt, coreutils, bash, git, glib,
  gtk, ...) and Vim's ``zh_CN.UTF-8`` catalog (~1.9 MB of UTF-8), the Chinese man pages in
  ``/usr/share/man/zh_CN`` (groff markup stripped), Vim's Chinese tutor (``tutor.zh_cn.utf-8``), and
  GnuPG's and systemd's zh_CN help texts.

Each source is cut into pieces of about 2,000 characters at line boundaries; a piece goes to the
held-out split when a hash of its source name and index falls in 10 % of the range (so ~10 % of the
text, drawn from every source). The tokenizer, the unigram baseline and the training see only the
training split. The cache directory also holds ``heldout.jsonl`` (the held-out pieces: evaluation text) and
``calib.jsonl`` (a fixed sample of *training* pieces, for importance-matrix calibration; never
evaluated on).

Training: plain torch, AdamW (lr 3e-3, betas 0.9/0.95, weight decay 0.1, 25 warm-up steps, cosine
to 10 %), gradient clipping 1.0, 280 steps of 4 random windows of 256 tokens from the training stream
(pieces joined with ``<|endoftext|>``; 287k tokens in all, a fifth of the training split), seed 0,
float32, one thread by default. Windows are 256 tokens (not 128) so that the quality script can
evaluate 256-token chunks without leaving the positions the model was trained on. The budget is what
fits in under 5 minutes on a shared 2-core machine: ~1,000 tokens/s with one thread (two threads ran
3x slower there while other jobs used the cores), i.e. ~4 minutes of training; a larger model or
more steps did not fit. 6e-3 gave a worse held-out loss than 3e-3 in the same steps. The held-out
loss is printed before and after, next to the held-out cross-entropy of the training split's unigram
distribution (the loss of a model that learnt nothing but token frequencies).

The result (an HF checkpoint directory the converter reads, plus the two text files and
``train_report.json``) is cached under ``~/.cache/autoglm-gguf/trained-small/<hash of SETTINGS, the
thread count and the Python version>/`` (bump SETTINGS["version"] when the code changes what is
built); reruns only print its path. ``--out DIR`` copies it there.
"""

from __future__ import annotations

import argparse
import ast
import gettext
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    "version": 1,
    "layers": 4,
    "hidden": 256,
    "ffn": 768,
    "heads": 8,
    "kv_heads": 2,
    "partial_rotary": 0.5,
    "mrope_section": [2, 3, 3],
    "n_bpe": 2028,              # + 20 GLM-4 added tokens = vocabulary 2048
    "piece_chars": 2000,
    "heldout_per_mille": 100,
    "seq_len": 256,
    "batch": 4,
    "steps": 280,
    "lr": 3e-3,
    "min_lr_frac": 0.1,
    "warmup": 25,
    "weight_decay": 0.1,
    "betas": [0.9, 0.95],
    "clip": 1.0,
    "init_std": 0.02,
    "seed": 0,
    "eval_windows": 48,
    "calib_chars": 60000,
}

CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "autoglm-gguf" / "trained-small"
_CJK = re.compile("[\u4e00-\u9fff]")


# ------------------------------------------------------------------------------------------ corpus

def _stdlib_docstrings() -> list[tuple[str, str, str]]:
    std = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "site-packages", "dist-packages", "__pycache__", "idlelib", "turtledemo",
            "lib2to3"}
    docs = []
    for root, dirs, files in os.walk(std):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            path = Path(root) / f
            try:
                tree = ast.parse(path.read_bytes())
            except (SyntaxError, ValueError):
                continue
            parts = []
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    d = ast.get_docstring(node)
                    if d and len(d) > 20:
                        parts.append(d.strip())
            if parts:
                docs.append((f"py:{path.relative_to(std)}", "en", "\n\n".join(parts)))
    return docs


def _licenses() -> list[tuple[str, str, str]]:
    seen, docs = set(), []
    for p in sorted(Path("/usr/share/common-licenses").glob("*")):
        real = p.resolve()
        if real in seen or not real.is_file():
            continue
        seen.add(real)
        docs.append((f"license:{real.name}", "en", real.read_text(encoding="utf-8", errors="replace")))
    return docs


def _mo_catalogs() -> list[tuple[str, str, str]]:
    files = sorted(Path("/usr/share/locale/zh_CN/LC_MESSAGES").glob("*.mo"))
    files += sorted(Path("/usr/share/vim").glob("vim*/lang/zh_CN.UTF-8/LC_MESSAGES/vim.mo"))
    docs = []
    for f in files:
        try:
            with open(f, "rb") as fp:
                cat = gettext.GNUTranslations(fp)._catalog  # type: ignore[attr-defined]
        except (OSError, UnicodeDecodeError, ValueError):  # gettext: OSError on a bad magic number
            continue
        msgs = [v.strip() for k, v in cat.items() if k and isinstance(v, str) and _CJK.search(v)]
        if msgs:
            docs.append((f"mo:{f.parent.parent.parent.name}/{f.name}", "zh", "\n".join(msgs)))
    return docs


_GROFF_TEXT_MACROS = ("SH", "SS", "TP", "IP", "B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "TH")
_GROFF_ESC = re.compile(r"\\f[BIRPC]|\\f\(..|\\f\[[^\]]*\]|\\s[+-]?\d|\\&|\\c|\\%")


def _groff_text(src: str) -> str:
    out = []
    for line in src.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\}')):
            continue
        if line.startswith((".", "'")):
            m = re.match(r"[.']\s*(\w+)\s*(.*)", line)
            if not m or m.group(1) not in _GROFF_TEXT_MACROS:
                continue
            line = m.group(2).replace('"', "")
        line = _GROFF_ESC.sub("", line).replace("\\-", "-").replace("\\(em", "—").replace("\\e", "\\")
        line = re.sub(r"\\\(..", "", line)
        if line.strip():
            out.append(line)
    return "\n".join(out)


def _zh_texts() -> list[tuple[str, str, str]]:
    docs = []
    for f in sorted(Path("/usr/share/man/zh_CN").glob("*/*.gz")):
        try:
            with gzip.open(f) as fp:
                txt = _groff_text(fp.read().decode("utf-8", errors="replace"))
        except (OSError, EOFError):
            continue
        if _CJK.search(txt):
            docs.append((f"man:{f.parent.name}/{f.name}", "zh", txt))
    for f in sorted(Path("/usr/share/vim").glob("vim*/tutor/tutor.zh_cn.utf-8")) + [
            Path("/usr/share/gnupg/help.zh_CN.txt"), Path("/usr/lib/systemd/catalog/systemd.zh_CN.catalog")]:
        if f.is_file():
            docs.append((f"file:{f.name}", "zh", f.read_text(encoding="utf-8", errors="replace")))
    return docs


def _pieces(text: str, size: int) -> list[str]:
    out, cur, n = [], [], 0
    for line in text.splitlines(keepends=True):
        cur.append(line)
        n += len(line)
        if n >= size:
            out.append("".join(cur))
            cur, n = [], 0
    if cur and "".join(cur).strip():
        out.append("".join(cur))
    return out


def build_corpus(settings: dict) -> tuple[list[dict], list[dict]]:
    """(train pieces, held-out pieces), each {"src", "lang", "text"}, in a fixed order."""
    train, held = [], []
    for src, lang, text in _stdlib_docstrings() + _licenses() + _mo_catalogs() + _zh_texts():
        for i, piece in enumerate(_pieces(text, settings["piece_chars"])):
            h = int.from_bytes(hashlib.blake2b(f"{src}#{i}".encode(), digest_size=8).digest(), "little")
            (held if h % 1000 < settings["heldout_per_mille"] else train).append(
                {"src": f"{src}#{i}", "lang": lang, "text": piece})
    return train, held


# ------------------------------------------------------------------------------------------ tokenizer

def train_tokenizer(texts: list[str], n_bpe: int) -> str:
    """tokenizer.json text: the tiny test tokenizer's recipe (autoglm_gguf._tiny.tokenizer) with n_bpe tokens
    learnt from `texts`, GLM-4's 20 added tokens right after them."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    from autoglm_gguf._tiny.tokenizer import GLM4_PRETOKENIZER_REGEX, GLM_SPECIAL_TOKENS, NON_SPECIAL

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GLM4_PRETOKENIZER_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=n_bpe, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() != n_bpe:
        raise RuntimeError(f"BPE has {tok.get_vocab_size()} tokens, expected {n_bpe}")
    tok.add_tokens([AddedToken(t, special=t not in NON_SPECIAL, normalized=False, lstrip=False, rstrip=False,
                               single_word=False) for t in GLM_SPECIAL_TOKENS])
    data = json.loads(tok.to_str())
    for i, entry in enumerate(data["added_tokens"]):
        entry["special"] = entry["content"] not in NON_SPECIAL
        if entry["id"] != n_bpe + i or entry["content"] != GLM_SPECIAL_TOKENS[i]:
            raise RuntimeError("unexpected added-token layout")
    return json.dumps(data, ensure_ascii=False, indent=1)


# ------------------------------------------------------------------------------------------ model

def model_config(settings: dict) -> dict:
    from autoglm_gguf._tiny.checkpoint import make_config
    from autoglm_gguf._tiny.tokenizer import GLM_SPECIAL_TOKENS, special_token_id

    base = settings["n_bpe"]
    vocab = base + len(GLM_SPECIAL_TOKENS)
    text = {"vocab_size": vocab, "hidden_size": settings["hidden"], "intermediate_size": settings["ffn"],
            "num_hidden_layers": settings["layers"], "num_attention_heads": settings["heads"],
            "num_key_value_heads": settings["kv_heads"], "max_position_embeddings": 4096,
            "initializer_range": settings["init_std"],
            "pad_token_id": special_token_id("<|endoftext|>", base),
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                "partial_rotary_factor": settings["partial_rotary"],
                                "mrope_section": list(settings["mrope_section"])}}
    top = {k: special_token_id(t, base) for k, t in (
        ("image_token_id", "<|image|>"), ("video_token_id", "<|video|>"),
        ("image_start_token_id", "<|begin_of_image|>"), ("image_end_token_id", "<|end_of_image|>"),
        ("video_start_token_id", "<|begin_of_video|>"), ("video_end_token_id", "<|end_of_video|>"))}
    return make_config(text=text, **top)


def _windows(stream: np.ndarray, n: int, seq: int, rng: np.random.Generator) -> np.ndarray:
    starts = rng.integers(0, len(stream) - seq - 1, size=n)
    return np.stack([stream[s:s + seq + 1] for s in starts])


def _loss(model, batch, torch, F):
    """Next-token cross-entropy of the windows: a scalar tensor (torch is passed in, imported lazily)."""
    x = torch.from_numpy(batch[:, :-1]).long()
    y = torch.from_numpy(batch[:, 1:]).long()
    pos = torch.arange(x.shape[1])[None, None, :].expand(3, x.shape[0], -1)  # text: 3 equal M-RoPE streams
    logits = model(input_ids=x, position_ids=pos).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _eval(model, windows: dict[str, np.ndarray], torch, F) -> dict[str, float]:
    model.eval()
    out = {}
    with torch.no_grad():
        for name, w in windows.items():
            losses = [float(_loss(model, w[i:i + 8], torch, F)) for i in range(0, len(w), 8)]
            out[name] = round(float(np.mean(losses)), 4)
    model.train()
    return out


def settings_key(settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(sys.version.split()[0].encode())  # the stdlib docstrings depend on the Python version
    return h.hexdigest()[:16]


def build(out: Path, settings: dict, threads: int, log=print) -> dict:
    import torch
    import torch.nn.functional as F
    from tokenizers import Tokenizer
    from transformers import Glm4vForConditionalGeneration

    from autoglm_gguf._tiny.checkpoint import write_checkpoint
    from autoglm_gguf._tiny.tokenizer import write_tokenizer_files

    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    train, held = build_corpus(settings)
    digest = hashlib.sha256()
    for p in train + held:
        digest.update(p["src"].encode() + b"\0" + p["text"].encode() + b"\0")
    nbytes = lambda ps, lang: sum(len(p["text"].encode()) for p in ps if p["lang"] == lang)
    corpus = {"sha256": digest.hexdigest(), "train_pieces": len(train), "heldout_pieces": len(held),
              "train_bytes": {"en": nbytes(train, "en"), "zh": nbytes(train, "zh")},
              "heldout_bytes": {"en": nbytes(held, "en"), "zh": nbytes(held, "zh")}}
    log(f"corpus: {corpus} ({time.perf_counter() - t_start:.1f} s)")

    cfg = model_config(settings)
    ckpt = write_checkpoint(out / "init", cfg, dtype="f32", seed=settings["seed"],
                            weight_std=settings["init_std"], tokenizer=False)
    write_tokenizer_files(ckpt, cfg, special_base=settings["n_bpe"])
    tok_json = train_tokenizer([p["text"] for p in train], settings["n_bpe"])
    (ckpt / "tokenizer.json").write_text(tok_json, encoding="utf-8")
    tok = Tokenizer.from_str(tok_json)
    eot = tok.token_to_id("<|endoftext|>")

    def stream(pieces):
        ids = []
        for enc in tok.encode_batch([p["text"] for p in pieces], add_special_tokens=False):
            ids.extend(enc.ids)
            ids.append(eot)
        return np.asarray(ids, dtype=np.int64)

    train_ids = stream(train)
    held_by_lang = {lang: stream([p for p in held if p["lang"] == lang]) for lang in ("en", "zh")}
    held_ids = stream(held)
    vocab = cfg["text_config"]["vocab_size"]
    counts = np.bincount(train_ids, minlength=vocab).astype(np.float64) + 0.5
    unigram = counts / counts.sum()
    nxt = held_ids[1:]
    baseline = {"unigram_xent_heldout": round(float(-np.log(unigram[nxt]).mean()), 4),
                "unigram_entropy_train": round(float(-(unigram * np.log(unigram)).sum()), 4)}
    log(f"tokens: train {len(train_ids):,}, held-out {len(held_ids):,} "
        f"(en {len(held_by_lang['en']):,}, zh {len(held_by_lang['zh']):,}); chars/token train "
        f"{sum(len(p['text']) for p in train) / len(train_ids):.2f}; unigram baseline {baseline}")

    rng = np.random.default_rng(settings["seed"])
    seq = settings["seq_len"]
    eval_w = {"all": _windows(held_ids, settings["eval_windows"], seq, rng),
              **{lang: _windows(ids, settings["eval_windows"] // 2, seq, rng)
                 for lang, ids in held_by_lang.items()}}

    torch.manual_seed(settings["seed"])
    model = Glm4vForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32,
                                                          attn_implementation="sdpa")
    for p in model.model.visual.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": settings["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=settings["lr"], betas=tuple(settings["betas"]))
    steps, warm = settings["steps"], settings["warmup"]

    def lr_at(step):
        if step < warm:
            return settings["lr"] * (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        lo = settings["min_lr_frac"]
        return settings["lr"] * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t)))

    before = _eval(model, eval_w, torch, F)
    log(f"held-out loss before training: {before} (unigram cross-entropy {baseline['unigram_xent_heldout']})")
    model.train()
    t0 = time.perf_counter()
    curve = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = _loss(model, _windows(train_ids, settings["batch"], seq, rng), torch, F)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings["clip"])
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            el = time.perf_counter() - t0
            curve.append({"step": step, "train_loss": round(loss.item(), 4), "seconds": round(el, 1)})
            log(f"step {step:5d}  loss {loss.item():.4f}  lr {lr_at(step):.2e}  {el:6.1f} s")
    train_s = time.perf_counter() - t0
    after = _eval(model, eval_w, torch, F)
    log(f"held-out loss after training:  {after} (unigram cross-entropy {baseline['unigram_xent_heldout']})")

    final = out / "model"
    model.eval()
    model.save_pretrained(final)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                 "preprocessor_config.json"):
        shutil.copy(ckpt / name, final / name)
    shutil.rmtree(ckpt)
    with open(out / "heldout.jsonl", "w", encoding="utf-8") as f:
        for p in held:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    # Calibration: a fixed, language-balanced sample of training pieces (never the held-out ones).
    pick = np.random.default_rng(settings["seed"] + 1).permutation(len(train))
    with open(out / "calib.jsonl", "w", encoding="utf-8") as f:
        got = {"en": 0, "zh": 0}
        for i in pick:
            p = train[i]
            if got[p["lang"]] < settings["calib_chars"] // 2:
                got[p["lang"]] += len(p["text"])
                f.write(json.dumps(p, ensure_ascii=False) + "\n")
    report = {"settings": settings, "corpus": corpus, "baseline": baseline,
              "tokens": {"train": len(train_ids), "heldout": len(held_ids)},
              "heldout_loss_before": before, "heldout_loss_after": after, "curve": curve,
              "train_seconds": round(train_s, 1), "total_seconds": round(time.perf_counter() - t_start, 1),
              "threads": threads, "torch": torch.__version__, "python": sys.version.split()[0],
              "parameters": {"text": sum(p.numel() for n, p in model.named_parameters() if "visual" not in n),
                             "vision": sum(p.numel() for p in model.model.visual.parameters())}}
    (out / "train_report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def ensure_trained(*, threads: int = 1, force: bool = False, log=print) -> Path:
    """The cache directory of the trained model (train it first if needed): model/ (HF checkpoint),
    heldout.jsonl, calib.jsonl, train_report.json."""
    cached = CACHE_ROOT / settings_key({**SETTINGS, "threads": threads})
    if (cached / "train_report.json").is_file() and not force:
        return cached
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=cached.name + ".", dir=CACHE_ROOT))
    try:
        build(tmp, SETTINGS, threads, log=log)
        if cached.exists():
            shutil.rmtree(cached)
        os.replace(tmp, cached)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cached


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="copy the result (model/, heldout.jsonl, calib.jsonl, "
                    "train_report.json) to this directory")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="retrain even if cached")
    args = ap.parse_args(argv)
    d = ensure_trained(threads=args.threads, force=args.force)
    rep = json.loads((d / "train_report.json").read_text())
    print(f"held-out loss: before {rep['heldout_loss_before']}, after {rep['heldout_loss_after']}; "
          f"unigram cross-entropy {rep['baseline']['unigram_xent_heldout']}; "
          f"trained {rep['train_seconds']} s")
    if args.out:
        shutil.copytree(d, args.out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("quant"))
        d = args.out
    print(d / "model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
