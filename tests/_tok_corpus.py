"""Texts for the tokenizer tests: a hand-picked corpus of the cases that break tokenizers, seeded random
strings, and a generated multi-script training corpus for a larger BPE vocabulary."""

from __future__ import annotations

import random

from autoglm_gguf._tiny.tokenizer import GLM_SPECIAL_TOKENS

CORPUS: list[str] = [
    # prose and scripts
    "Hello world",
    "The quick brown fox jumps over the lazy dog. The five boxing wizards jump quickly!",
    "Open the Settings app, tap on \"Wi-Fi\", then turn it on.",
    "今天天气很好，我们去公园散步吧。请打开设置，然后点击无线网络。",
    "我想在淘宝上买一本书，帮我搜索一下价格：¥128.00。",
    "こんにちは、世界。カタカナとひらがな、漢字も混ざる文章です。",
    "안녕하세요, 세계! 한국어 문장입니다.",
    "Café, naïve, résumé, façade, jalapeño, crème brûlée, São Paulo, Zürich, Ångström, Øresund, Straße.",
    "Ελληνικά: Καλημέρα κόσμε. Русский язык: привет, мир! Українська: ґанок, їжак.",
    "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "ᚠᚢᚦᚨᚱᚲ",
    # code, tabs and indentation
    "def add(a: int, b: int) -> int:\n    return a + b\n\n\nclass Point:\n\tdef __init__(self, x):\n\t\tself.x = x\n",
    "#include <stdio.h>\nint main(void) {\n\tprintf(\"hello, world\\n\");\n\treturn 0;\n}\n",
    "for (int i = 0; i < n; ++i) { xs[i] *= 2; }  // doubling\r\n",
    "    if x:\n        y = [1, 2, 3]\n    else:\n        y = {'a': None}\n",
    "const f = (x) => x ** 2; /* arrow */ let s = `template ${f(3)}`;",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    # digits
    "1", "12", "123", "1234", "1234567", "3.14159", "2026-11-21", "x1y22z333w4444v55555",
    "Call 555-0123 at 12:30; total $1,234.56 (15% off).", "٣٤٥٦ ①②③ ½¼ Ⅻ ௧௨௩ 𝟙𝟚𝟛",
    "0.000001 1e-9 0x1F 0b1010 100000000000000000000",
    # emoji and ZWJ sequences
    "😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷🇯🇵 ✌🏿", "emoji😀in👍words", "🙂🙂🙂",
    # whitespace
    "a  b", "a\tb", "a\r\nb", "a\n\n\nb", "trailing spaces   ", "   leading", "\u00a0nbsp\u00a0here\u00a0",
    "\u3000ideographic\u3000space\u3000", "\r\n\r\n  \n x", "mixed \t \n\t x", " ", "", "\n", "\r", "\t\t",
    "\u2028\u2029\x85\x0b\x0c", "x \n", "x  \n  y", "end with newline\n", "\n\n\n", "  \n\n  ",
    "\u2003em\u2009thin\u202fnarrow\u205fmath", "a\u200bb", "x\u180ey",
    # contractions
    "I'M here, You'Re there, we'VE, THEY'LL, she'D, it'S, don'T", "'s's's", "'ſ and 'ſt", "rock'n'roll",
    "''''", "'ll'LL'lL", " 're 've", "'S'T'M'D", "'Sally said 'tis 'twas",
    # added tokens in text
    "<|user|>\nhi<|assistant|>", "[gMASK]<sop><|system|>\nYou are a helpful assistant.<|user|>\nHi",
    "<|user|><|user|>", "<|use", "<|user", "<|user|", "<<|user|>>", "<|user|>>",
    "<think>reasoning</think><answer>ok</answer>", "[MASK][gMASK][sMASK]", "<|endoftext|>",
    "text<|begin_of_image|><|image|><|end_of_image|>text", "x <|observation|> y", " <|user|> ",
    "[gMASK]<sop><|user|>\n打开微信<|assistant|>\n<think>\n先打开应用</think>\n<answer>do(action=\"Launch\")</answer>",
    # odds and ends
    "https://example.com/path?q=1&r=2#frag", "email@example.com", "\"quoted\" 'single' `tick`",
    "C:\\Users\\name\\file.txt", "a\x00b\x01c\x7f", "\ufeffBOM", "e\u0301 n\u0303", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "∑∫√∞≠≤ ⊂⊃ ∀x∃y", "┌─┐│└┘", "\ue000\U000f0000", "𝐀𝐁𝐂 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\U000105c0\U000105c1 todhri",
    "!!! ??? --- *** ### @@@ %%% ^^^ &&& ||| ~~~ === +++ ::: ;;; ,,, ... /// \\\\\\",
    "(parentheses) [brackets] {braces} <angle>", "ÀÁÂÃÄÅ àáâãäå", "ǅǈǋ ǲ", "ΐΰ ﬁﬂﬀ",
]

# Sampling pools for random strings: scripts, digits, punctuation, whitespace, apostrophes, specials.
_POOLS: list[str] = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "éèêëàâäôöûüçñßøåæœÉÈÀÇÑ",
    "αβγδεζηθλμνξπρστφχψωΑΒΓΔΩ",
    "абвгдежзиклмнопрстуфхцчшщыэюяАБВГДЖ",
    "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可",
    "あいうえおかきくけこさしすせそアイウエオカキクケコ",
    "가나다라마바사아자차카타파하",
    "0123456789٠١٢٣٤٥٦٧٨٩①②③½",
    ".,;:!?-_()[]{}<>/\\|@#$%^&*+=~`\"",
    "，。！？、；：「」『』（）",
    "    \t\n\r\u00a0\u3000\u2028",
    "''''sStTmMdDlLrReEvVſ",
    "😀👍🏽🙂\u200d❤️\ufe0f🇫🇷",
    "\u0301\u0308\u200b\u200c\ufeff\ue000",
]


def random_strings(n: int, seed: int) -> list[str]:
    """n seeded random strings mixing the pools (with runs, so that words and whitespace runs occur) and,
    now and then, an added token."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 12)):
            if rng.random() < 0.08:
                parts.append(rng.choice(GLM_SPECIAL_TOKENS))
            else:
                pool = rng.choice(_POOLS)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
        out.append("".join(parts))
    return out


def training_corpus(seed: int = 0, n_lines: int = 12000) -> list[str]:
    """Generated multi-script text (about 0.8 MB) for training a ~5000-token BPE: syllable-built words
    that repeat often enough to get long merges, plus the hand-picked corpus."""
    rng = random.Random(seed)
    latin = ["ka", "to", "ri", "en", "an", "er", "in", "on", "st", "th", "qu", "pre", "ing", "tion", "é", "ü", "ß"]
    greek = ["κα", "το", "ρι", "λο", "γο", "ση", "με"]
    cyr = ["при", "вет", "мир", "ст", "ко", "на", "ть"]
    cjk = [chr(c) for c in range(0x4E00, 0x4E00 + 300, 3)]
    kana = [chr(c) for c in range(0x3042, 0x3094, 2)]
    hangul = [chr(c) for c in range(0xAC00, 0xAC00 + 2000, 37)]

    def word(sylls: list[str], lo: int, hi: int) -> str:
        return "".join(rng.choice(sylls) for _ in range(rng.randint(lo, hi)))

    vocab = {
        "latin": [word(latin, 1, 4) for _ in range(600)],
        "greek": [word(greek, 1, 3) for _ in range(150)],
        "cyr": [word(cyr, 1, 3) for _ in range(150)],
        "cjk": [word(cjk, 1, 3) for _ in range(300)],
        "kana": [word(kana, 2, 4) for _ in range(150)],
        "hangul": [word(hangul, 1, 3) for _ in range(150)],
    }
    lines = []
    for i in range(n_lines):
        kind = rng.choice(list(vocab))
        words = [rng.choice(vocab[kind]) for _ in range(rng.randint(3, 12))]
        if kind == "latin":
            words = [w.capitalize() if rng.random() < 0.2 else w for w in words]
            line = " ".join(words) + rng.choice([".", ",", "!", "?", "'s", " 123", ""])
        elif kind in ("cjk", "kana", "hangul"):
            line = rng.choice(["", " "]).join(words) + rng.choice(["。", "，", "！", "？"])
        else:
            line = " ".join(words) + "."
        if i % 7 == 0:
            line = rng.choice(["    ", "\t", "  "]) + line + " " + str(rng.randint(0, 99999))
        lines.append(line + rng.choice(["\n", "\n", "\r\n", "\n\n"]))
    lines += [s + "\n" for s in CORPUS] * 20
    return lines
