"""The native GLM-4 tokenizer (autoglm_gguf._core.Tokenizer) against HF tokenizers.

Two vocabularies: the tiny checkpoint's (480 BPE tokens, read back from our converted GGUF, so many
merges are missing and BPE stops early) and a ~5000-token BPE trained here on generated multi-script
text with the same GLM-4 pre-tokenizer. Ids must equal HF's (add_special_tokens=False) in both
ignore_merges modes, decode(encode(s)) must give s back byte for byte, and the pre-tokenizer's Unicode
classes must agree with HF's regex engine on every code point.
"""

from __future__ import annotations

import json
import random
import threading
import time

import gguf
import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from _tok_corpus import CORPUS, random_strings, training_corpus
from autoglm_gguf import _core
from autoglm_gguf._tiny.tokenizer import GLM4_PRETOKENIZER_REGEX, GLM_SPECIAL_TOKENS

pytestmark = pytest.mark.slow  # every Unicode scalar and long inputs against the HF tokenizer: ~13 s

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
NON_SPECIAL = {"<think>", "</think>", "<answer>", "</answer>"}  # USER_DEFINED in the GGUF
RANDOM = random_strings(200, seed=1234)
LONG = ["a" * 20000, " " * 20000 + "x", "中" * 20000, "7" * 10000, "ab" * 10000, "\n" * 5000 + " \t" * 5000,
        "!?" * 8000, "👍" * 5000]
ALL_TEXTS = CORPUS + RANDOM


# --------------------------------------------------------------------------------------------------
# Vocabularies: (GGUF arrays, HF tokenizer.json text)
# --------------------------------------------------------------------------------------------------

def hf_tokenizer(tokenizer_json: str, *, ignore_merges: bool, added_tokens: bool = True) -> Tokenizer:
    data = json.loads(tokenizer_json)
    data["model"]["ignore_merges"] = ignore_merges
    if not added_tokens:
        data["added_tokens"] = []
    return Tokenizer.from_str(json.dumps(data))


@pytest.fixture(scope="module")
def tiny_vocab(tiny_checkpoint, convert_tiny):
    text_gguf, _ = convert_tiny(tiny_checkpoint)
    fields = gguf.GGUFReader(text_gguf).fields
    arrays = (fields["tokenizer.ggml.tokens"].contents(), [int(t) for t in fields["tokenizer.ggml.token_type"].contents()],
              fields["tokenizer.ggml.merges"].contents())
    return arrays, (tiny_checkpoint / "tokenizer.json").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def big_vocab():
    """A 5000-token byte-level BPE with GLM-4's pre-tokenizer and added tokens, and GGUF arrays written
    by the converter's rules: tokens by id, added tokens CONTROL (special) or USER_DEFINED, ids the
    tokenizer leaves undefined '[PAD<id>]' UNUSED, merges as 'left right'."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GLM4_PRETOKENIZER_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=5000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    n_bpe = tok.get_vocab_size()
    assert n_bpe == 5000
    tok.add_tokens([AddedToken(t, special=t not in NON_SPECIAL, normalized=False, lstrip=False, rstrip=False,
                               single_word=False) for t in GLM_SPECIAL_TOKENS])
    data = json.loads(tok.to_str())
    n_vocab = (n_bpe + len(GLM_SPECIAL_TOKENS) + 63) // 64 * 64
    tokens, types = [f"[PAD{i}]" for i in range(n_vocab)], [UNUSED] * n_vocab
    for t, i in data["model"]["vocab"].items():
        tokens[i], types[i] = t, NORMAL
    for a in data["added_tokens"]:
        tokens[a["id"]], types[a["id"]] = a["content"], USER_DEFINED if a["content"] in NON_SPECIAL else CONTROL
    merges = [" ".join(pair) for pair in data["model"]["merges"]]
    return (tokens, types, merges), tok.to_str()


@pytest.fixture(scope="module", params=["tiny", "big"])
def vocab(request):
    return request.getfixturevalue(f"{request.param}_vocab")


@pytest.fixture(scope="module", params=[True, False], ids=["ignore_merges", "merges_only"])
def pair(request, vocab):
    """(ours, HF) with the same ignore_merges setting, and HF without added tokens (pure text)."""
    (tokens, types, merges), tj = vocab
    im = request.param
    return (_core.Tokenizer(tokens, types, merges, ignore_merges=im), hf_tokenizer(tj, ignore_merges=im),
            hf_tokenizer(tj, ignore_merges=im, added_tokens=False))


# --------------------------------------------------------------------------------------------------
# Pre-tokenizer and Unicode classes
# --------------------------------------------------------------------------------------------------

SCALARS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def hf_members(pattern: str) -> set[int]:
    """Code points HF's regex engine puts in a class: Split(removed) drops them, the rest survive."""
    pieces = pre_tokenizers.Split(Regex(pattern), behavior="removed").pre_tokenize_str("".join(map(chr, SCALARS)))
    return set(SCALARS) - {ord(ch) for text, _ in pieces for ch in text}


def test_unicode_classes_match_hf():
    ours = {1: set(), 2: set(), 3: set()}
    for c in SCALARS:
        k = _core.unicode_class(c)
        if k:
            ours[k].add(c)
    for k, pattern in ((1, r"\p{L}"), (2, r"\p{N}"), (3, r"\s")):
        theirs = hf_members(pattern)
        assert ours[k] == theirs, (f"{pattern} differs from tokenizers (tables are Unicode "
                                   f"{_core.unicode_tables_version()}): only ours "
                                   f"{sorted(map(hex, ours[k] - theirs))[:10]}, only HF {sorted(map(hex, theirs - ours[k]))[:10]}")


def test_pretokenizer_matches_hf():
    split = pre_tokenizers.Split(Regex(GLM4_PRETOKENIZER_REGEX), behavior="isolated")
    texts = ["".join(map(chr, SCALARS))] + ALL_TEXTS + LONG
    for s in texts:
        assert _core.glm4_pretokenize(s) == [p.encode() for p, _ in split.pre_tokenize_str(s)], repr(s[:80])


def test_contraction_case_folding():
    # Oniguruma folds case for the contractions: ASCII, and U+017F (long s) folds to 's'; U+FB06 (the
    # 'st' ligature) folds to two letters and is not a contraction. After a space, "'" goes with the space.
    got = _core.glm4_pretokenize("I'M You'Re x'ſ x'ﬆ 'll")
    assert got == [s.encode() for s in ["I", "'M", " You", "'Re", " x", "'ſ", " x", "'ﬆ", " '", "ll"]]


# --------------------------------------------------------------------------------------------------
# Encoding against HF
# --------------------------------------------------------------------------------------------------

def test_encode_matches_hf(pair):
    ours, hf, _ = pair
    for s in ALL_TEXTS + LONG:
        ids = ours.encode(s)
        assert ids == hf.encode(s, add_special_tokens=False).ids, repr(s[:80])
        assert ours.decode(ids) == s.encode(), repr(s[:80])


def test_batch_matches_hf_and_threads(pair):
    """encode releases the GIL: concurrent calls give the same ids as sequential ones."""
    ours, hf, _ = pair
    texts = RANDOM * 2
    expected = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    results: dict[int, list[int]] = {}

    def work(k):
        for i in range(k, len(texts), 4):
            results[i] = ours.encode(texts[i])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(texts))] == expected


def crafted_vocab(ignore_merges: bool):
    """A hand-made vocabulary where merge order matters: 'abc' is a token, but for the word 'abc' the
    merge 'b c' (rank 0) wins over 'a b', so plain BPE ends at ['a', 'bc'] and only ignore_merges finds
    'abc'. Repeated letters test the leftmost-first rule among equal ranks."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = [("b", "c"), ("a", "b"), ("ab", "c"), ("a", "a"), ("aa", "a"), ("aa", "aa"), ("\u0120", "a"),
              ("\u0120a", "a"), ("c", "c"), ("cc", "c"), ("\u0120", "\u0120")]
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GLM4_PRETOKENIZER_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokens = sorted(vocab, key=vocab.get)
    ours = _core.Tokenizer(tokens, [NORMAL] * len(tokens), [f"{a} {b}" for a, b in merges], ignore_merges=ignore_merges)
    return ours, hf


@pytest.mark.parametrize("ignore_merges", [True, False])
def test_merge_order_and_ignore_merges(ignore_merges):
    ours, hf = crafted_vocab(ignore_merges)
    abc = ours.find("abc")
    assert ours.encode("abc") == ([abc] if ignore_merges else [ours.find("a"), ours.find("bc")])
    rng = random.Random(7)
    texts = ["abc", "aaaa", "aaaaa", "aaaaaaa", " aaa", "   ", "cccc abcabc", "ab c"]
    texts += ["".join(rng.choice("abc  ") for _ in range(rng.randint(1, 24))) for _ in range(300)]
    for s in texts:
        assert ours.encode(s) == hf.encode(s, add_special_tokens=False).ids, repr(s)


def test_transformers_agrees(tiny_checkpoint, tiny_vocab):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(tiny_checkpoint)
    ours = _core.Tokenizer(*tiny_vocab[0], ignore_merges=False)  # the tiny tokenizer.json's setting
    for s in CORPUS + RANDOM[:50]:
        assert ours.encode(s) == hf.encode(s, add_special_tokens=False), repr(s)


def test_parse_special_false_is_plain_text(pair, vocab):
    """Added tokens' text is tokenized like any text (HF with no added tokens at all is the reference)."""
    ours, _, plain = pair
    types = vocab[0][1]
    added = {i for i, t in enumerate(types) if t in (CONTROL, USER_DEFINED)}
    for s in ALL_TEXTS:
        ids = ours.encode(s, parse_special=False)
        assert not added & set(ids), repr(s)
        assert ids == plain.encode(s, add_special_tokens=False).ids, repr(s)
        assert ours.decode(ids) == s.encode()


def test_special_tokens(tiny_vocab):
    (tokens, types, merges), _ = tiny_vocab
    tok = _core.Tokenizer(tokens, types, merges)
    user, asst = tok.find("<|user|>"), tok.find("<|assistant|>")
    assert user >= 0 and asst >= 0 and tok.token_type(user) == CONTROL
    think = tok.find("<think>")
    assert tok.token_type(think) == USER_DEFINED
    assert tok.encode("<|user|><|assistant|>") == [user, asst]
    assert tok.encode("<think>") == [think]
    assert user not in tok.encode("<|use") and user not in tok.encode("<|user")
    ids = tok.encode("<<|user|>>")
    assert ids.count(user) == 1 and tok.decode(ids) == b"<<|user|>>"
    for sid in (user, asst, think):
        assert tok.token_bytes(sid) == tokens[sid].encode()
    assert tok.find("no such token") == -1


def test_overlapping_added_tokens_leftmost_longest():
    """Overlapping added tokens: HF's matcher is leftmost-longest; a repeated text keeps the lower id."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    added = ["<a", "<ab>", "ab>x", "b>", "<ab>"]
    hf = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    hf.add_tokens([AddedToken(t, normalized=False) for t in added[:4]])
    ours = _core.Tokenizer(alphabet + added, [NORMAL] * 256 + [CONTROL, CONTROL, USER_DEFINED, CONTROL, CONTROL], [])
    for s in ("<ab>x", "x<ab>x", "<a<ab>", "ab>x<a", "<<ab>>", "b>b><ab"):
        ids = ours.encode(s)  # no merges: text between added tokens is one token per byte on both sides
        assert ids == hf.encode(s).ids, s
        assert ours.decode(ids) == s.encode()
    assert ours.find("<ab>") == 257 and 260 not in ours.encode("<ab><ab>")


def test_token_bytes_and_unused(big_vocab):
    (tokens, types, merges), _ = big_vocab
    tok = _core.Tokenizer(tokens, types, merges)
    assert tok.n_vocab == len(tokens)
    unused = types.index(UNUSED)
    assert tok.token_bytes(unused) == b"" and tok.decode([unused]) == b""
    space_id = tok.find("\u0120")  # byte-level 'Ġ' is the space byte
    assert tok.token_bytes(space_id) == b" "
    assert tok.token_bytes(tok.find("\u010a")) == b"\n"
    # Every normal token's bytes re-encode to bytes that decode back (the byte map is a bijection).
    for i in range(0, tok.n_vocab, 7):
        if types[i] == NORMAL:
            b = tok.token_bytes(i)
            assert bytes(_byte_level_decode(tokens[i])) == b


def _byte_level_decode(text: str) -> list[int]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:] + [256 + n for n in range(256 - len(bs))]
    cs_to_b = dict(zip([chr(c) for c in cs], bs + [b for b in range(256) if b not in bs]))
    return [cs_to_b[ch] for ch in text]


def test_bad_ids(tiny_vocab):
    tok = _core.Tokenizer(*tiny_vocab[0])
    for bad in (-1, tok.n_vocab, 2**31, -(2**40)):
        with pytest.raises(ValueError, match="out of range"):
            tok.token_bytes(bad)
        with pytest.raises(ValueError, match="out of range"):
            tok.decode([0, bad])
        with pytest.raises(ValueError, match="out of range"):
            tok.token_type(bad)


def test_invalid_utf8_round_trips(tiny_vocab):
    """C++ callers may pass any bytes: invalid UTF-8 is kept byte for byte (each bad byte is 'other')."""
    tok = _core.Tokenizer(*tiny_vocab[0])
    for raw in (b"\xff", b"ab\xfe\xffcd", b"\xe4\xb8", b"x\xe4\xb8 y", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                b"\x80\x80hello", "中".encode()[:2] + "文".encode()):
        assert tok.decode(tok.encode(raw)) == raw
    assert _core.glm4_pretokenize(b"ab\xff\xfecd") == [b"ab", b"\xff\xfe", b"cd"]
    assert _core.glm4_pretokenize(b" \xffx") == [b" \xff", b"x"]


def test_utf8_complete_prefix():
    s = "a中😀é".encode()  # 1 + 3 + 4 + 2 bytes
    full = len(s)
    expected_cut = {0: 0, 1: 1, 2: 1, 3: 1, 4: 4, 5: 4, 6: 4, 7: 4, 8: 8, 9: 8, 10: 10}
    for n, cut in expected_cut.items():
        assert _core.utf8_complete_prefix(s[:n]) == cut, n
    assert _core.utf8_complete_prefix(s) == full
    # Bytes that can never complete are not held back (a stream would stall on them forever).
    for junk in (b"x\x80", b"x\xff", b"x\xc0", b"x\xe0\x80", b"x\xed\xa0", b"x\xf4\x90", b"\x80\x80\x80\x80"):
        assert _core.utf8_complete_prefix(junk) == len(junk), junk


def test_streaming_decode(big_vocab):
    tok = _core.Tokenizer(*big_vocab[0])
    for s in ("今天天气很好", "😀👍🏽👨‍👩‍👧", "Café ελληνικά"):
        buf, shown = b"", ""
        for i in tok.encode(s):
            buf += tok.token_bytes(i)
            cut = _core.utf8_complete_prefix(buf)
            shown += buf[:cut].decode()  # never raises: only whole characters are released
            buf = buf[cut:]
        assert shown + buf.decode() == s and buf == b""


@pytest.mark.parametrize("change, message", [
    (lambda t, y, m: (t, y[:-1], m), "token types"),
    (lambda t, y, m: (t, [7] + y[1:], m), "has type 7"),
    (lambda t, y, m: (t, y, m + ["nospace"]), "not of the form"),
    (lambda t, y, m: (t, y, m + ["a \u4e00\u4e01"]), "is not a token"),
    (lambda t, y, m: ([("X" if s == "a" else s) for s in t], y, []), "for byte 0x61"),
    (lambda t, y, m: ([], [], []), "empty"),
])
def test_malformed_vocab_errors(tiny_vocab, change, message):
    tokens, types, merges = tiny_vocab[0]
    with pytest.raises(_core.NativeError, match=message):
        _core.Tokenizer(*change(list(tokens), list(types), list(merges)))


# --------------------------------------------------------------------------------------------------
# Speed (printed, not asserted)
# --------------------------------------------------------------------------------------------------

def test_speed(big_vocab, capsys):
    (tokens, types, merges), tj = big_vocab
    ours, hf = _core.Tokenizer(tokens, types, merges), hf_tokenizer(tj, ignore_merges=True)
    raw = "".join(training_corpus(seed=9, n_lines=20000)).encode()[: 1 << 20]  # ~1 MB, cut on a character
    text = raw[: _core.utf8_complete_prefix(raw)].decode()
    t0 = time.perf_counter()
    ids = ours.encode(text)
    t1 = time.perf_counter()
    ref = hf.encode(text, add_special_tokens=False).ids
    t2 = time.perf_counter()
    assert ids == ref
    with capsys.disabled():
        print(f"\n[tokenizer speed] {len(text.encode()) / 1e6:.2f} MB, {len(ids)} tokens: ours "
              f"{len(ids) / (t1 - t0) / 1e6:.2f} M tok/s ({t1 - t0:.3f} s), HF tokenizers "
              f"{len(ref) / (t2 - t1) / 1e6:.2f} M tok/s ({t2 - t1:.3f} s)")
