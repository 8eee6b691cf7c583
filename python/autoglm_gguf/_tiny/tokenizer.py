"""The tiny test tokenizer and side files of a random GLM-4.1V checkpoint: a byte-level BPE with
GLM-4's pre-tokenizer and special tokens in their real order, tokenizer_config.json, the
GLM-4.1V-style chat template, generation_config.json and preprocessor_config.json.

Split out of checkpoint.py (which writes the weights and config); see its docstring.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

# --------------------------------------------------------------------------------------
# Tokenizer layout
# --------------------------------------------------------------------------------------

#: GLM-4 / GLM-4.1V added tokens in their real order (offset i <-> real id 151329 + i).
#: Offsets 16..19 are our plausible guess (see checkpoint.py's docstring); the first 16 are confirmed.
GLM_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # +0  151329  eos / pad
    "[MASK]",  # +1
    "[gMASK]",  # +2  151331  first prompt token
    "[sMASK]",  # +3
    "<sop>",  # +4  151333  second prompt token
    "<eop>",  # +5
    "<|system|>",  # +6
    "<|user|>",  # +7  151336  stop token
    "<|assistant|>",  # +8
    "<|observation|>",  # +9  151338  stop token
    "<|begin_of_image|>",  # +10 151339
    "<|end_of_image|>",  # +11 151340
    "<|begin_of_video|>",  # +12 151341
    "<|end_of_video|>",  # +13 151342
    "<|image|>",  # +14 151343  image placeholder
    "<|video|>",  # +15 151344
    "<think>",  # +16 (guess)
    "</think>",  # +17 (guess)
    "<answer>",  # +18 (guess)
    "</answer>",  # +19 (guess) plays the role of 151348, the 4th eos id
)
#: Added tokens that are *not* special (decoded even with skip_special_tokens=True).
NON_SPECIAL = frozenset({"<think>", "</think>", "<answer>", "</answer>"})

#: Size of the trained byte-level BPE vocabulary (256 byte symbols + 224 merges).
N_BPE = 480
TINY_VOCAB = 512  # N_BPE + 20 added tokens = 500, rounded up to a multiple of 64


def special_token_id(tok: str, base: int = N_BPE) -> int:
    """Id of added token `tok` when the 20 added tokens start at `base` (N_BPE, or GLM-4's 151329)."""
    return base + GLM_SPECIAL_TOKENS.index(tok)


#: GLM-4 pre-tokenizer regex (spec A.4; llama.cpp's CHATGLM4 pre-type).
GLM4_PRETOKENIZER_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------

# A small built-in training corpus: English prose, code, digits, punctuation, Chinese,
# accented Latin, Greek/Cyrillic and a few emoji, so that byte-level BPE gets multi-byte
# merges and the GLM-4 pre-tokenizer regex sees every branch.
CORPUS = r"""
The quick brown fox jumps over the lazy dog. The five boxing wizards jump quickly.
Open the Settings app, tap on "Wi-Fi", then turn it on. Swipe up to go back to the home screen.
I'm sure you'll find it; we've done it before, and they're ready. It's what she'd say, isn't it?
Click the button at the top right corner of the screen, then type the message and press Send.
Launch WeChat, search for the contact named Alice, and send her the photo from yesterday.
The assistant reads the screenshot, thinks about the task, and answers with an action.
A vision-language model encodes the image into patches; each patch becomes a token.
Tokens are embedded, rotated with rotary position embeddings, and passed through attention layers.
def add(a: int, b: int) -> int:
    return a + b

class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __repr__(self):
        return f"Point({self.x}, {self.y})"

for i in range(10):
    if i % 2 == 0:
        print(i, "is even")
    else:
        print(i, "is odd")

#include <stdio.h>
int main(void) { printf("hello, world\n"); return 0; }
const xs = [1, 2, 3].map((x) => x * 2); // [2, 4, 6]
{"action": "tap", "element": [500, 120]}  {"action": "type", "text": "hello"}
do(action="Tap", element=[312, 845])  do(action="Swipe", start=[500, 800], end=[500, 200])
finish(message="done")  Launch(app="Settings")  Back()  Home()
0 1 2 3 4 5 6 7 8 9 10 11 12 42 99 100 123 256 512 999 1000 1024 2048 4096 12345 65536 3.14159 2.71828
Call me at 555-0123 on 2025-07-01 at 12:30; the total is $1,234.56 (15% off).
今天天气很好，我们去公园散步吧。请打开设置，然后点击无线网络。
你好，世界！这是一个测试。模型会先思考，然后给出答案。
我想在淘宝上买一本书，帮我搜索一下价格。打开微信，给妈妈发消息说我晚上回家吃饭。
Café, naïve, résumé, façade, jalapeño, crème brûlée, São Paulo, Zürich, Ångström, Øresund.
Überraschung! Straße, Fußgänger, Mädchen, schön, élève, hôtel, où est la gare? ¿Qué tal? ¡Hola!
Ελληνικά και Русский язык: привет, мир. こんにちは、世界。안녕하세요. 😀 👍 🎉
Hello   world	tabs	and   multiple    spaces
Line one
Line two

Paragraph three... (with parentheses) [brackets] {braces} <angle> 'quotes' "double quotes" `ticks`
!!! ??? --- *** ### @@@ %%% ^^^ &&& ||| ~~~ === +++ ::: ;;; ,,, ... /// \\\
"""


def build_tokenizer_json(special_base: int = N_BPE) -> str:
    """The tiny byte-level BPE's ``tokenizer.json`` text, with the 20 added tokens at ``special_base``..
    (right after the BPE by default; 151329 puts them at GLM-4's real ids, the ids between then
    being unused)."""
    if special_base == N_BPE:
        return _build_tokenizer_json()
    if special_base < N_BPE:
        raise ValueError(f"special_base must be >= {N_BPE} (the BPE's size)")
    data = json.loads(_build_tokenizer_json())
    for i, entry in enumerate(data["added_tokens"]):
        entry["id"] = special_base + i
    return json.dumps(data, ensure_ascii=False, indent=1)


@functools.lru_cache(maxsize=1)
def _build_tokenizer_json() -> str:
    """Train the tiny byte-level BPE (deterministic) and return its ``tokenizer.json`` text."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GLM4_PRETOKENIZER_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=N_BPE,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(CORPUS.splitlines(keepends=True), trainer=trainer)
    if tok.get_vocab_size() != N_BPE:
        raise RuntimeError(f"tiny BPE has {tok.get_vocab_size()} tokens, expected {N_BPE}")
    tok.add_tokens(
        [
            AddedToken(
                t,
                special=t not in NON_SPECIAL,
                normalized=False,
                lstrip=False,
                rstrip=False,
                single_word=False,
            )
            for t in GLM_SPECIAL_TOKENS
        ]
    )
    # Make the special flags explicit (add_tokens marks everything non-special).
    data = json.loads(tok.to_str())
    for entry in data["added_tokens"]:
        entry["special"] = entry["content"] not in NON_SPECIAL
    for i, entry in enumerate(data["added_tokens"]):
        if entry["id"] != N_BPE + i or entry["content"] != GLM_SPECIAL_TOKENS[i]:
            raise RuntimeError("unexpected added-token layout")
    return json.dumps(data, ensure_ascii=False, indent=1)


#: GLM-4.1V-style chat template (our own wording; spec D.2 output format).
CHAT_TEMPLATE = r"""{#- GLM-4.1V-style chat template (autoglm-gguf tiny test checkpoint). -#}
{%- macro render_content(content) -%}
{%- if content is string -%}
{{- content -}}
{%- elif content is not none -%}
{%- for part in content -%}
{%- if part is string -%}
{{- part -}}
{%- elif part.type == 'video' or 'video' in part -%}
{{- '<|begin_of_video|><|video|><|end_of_video|>' -}}
{%- elif part.type == 'image' or 'image' in part -%}
{{- '<|begin_of_image|><|image|><|end_of_image|>' -}}
{%- elif part.type == 'text' -%}
{{- part.text -}}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{{- '[gMASK]<sop>' -}}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{{- '<|system|>\n' -}}{{- render_content(message.content) -}}
{%- elif message.role == 'user' -%}
{{- '<|user|>\n' -}}{{- render_content(message.content) -}}
{%- elif message.role == 'assistant' -%}
{{- '<|assistant|>' -}}{%- if message.metadata -%}{{- message.metadata -}}{%- endif -%}
{{- '\n' -}}{{- render_content(message.content) -}}
{%- elif message.role == 'observation' or message.role == 'tool' -%}
{{- '<|observation|>\n' -}}{{- render_content(message.content) -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|assistant|>\n' -}}
{%- endif -%}
"""

_OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def write_tokenizer_files(out: Path, config: dict, special_base: int = N_BPE) -> None:
    (out / "tokenizer.json").write_text(build_tokenizer_json(special_base), encoding="utf-8")
    eot = "<|endoftext|>"
    write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "processor_class": "Glm4vProcessor",
            "added_tokens_decoder": {
                str(special_base + i): {
                    "content": t,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": t not in NON_SPECIAL,
                }
                for i, t in enumerate(GLM_SPECIAL_TOKENS)
            },
            "additional_special_tokens": [
                t for t in GLM_SPECIAL_TOKENS if t not in NON_SPECIAL and t != eot
            ],
            "eos_token": eot,
            "pad_token": eot,
            "clean_up_tokenization_spaces": False,
            "do_lower_case": False,
            "remove_space": False,
            "model_max_length": int(config["text_config"].get("max_position_embeddings", 4096)),
            "padding_side": "left",
            "model_input_names": ["input_ids", "attention_mask"],
        },
    )
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    sid = functools.partial(special_token_id, base=special_base)
    eos = [sid(eot), sid("<|user|>"), sid("<|observation|>"), sid(GLM_SPECIAL_TOKENS[-1])]
    write_json(
        out / "generation_config.json",
        {"do_sample": False, "eos_token_id": eos, "pad_token_id": sid(eot)},
    )
    vc = config["vision_config"]
    write_json(
        out / "preprocessor_config.json",
        {
            "image_processor_type": "Glm4vImageProcessor",
            "processor_class": "Glm4vProcessor",
            "do_resize": True,
            "size": {"shortest_edge": 12544, "longest_edge": 9633792},
            "resample": 3,
            "patch_size": vc["patch_size"],
            "temporal_patch_size": vc["temporal_patch_size"],
            "merge_size": vc["spatial_merge_size"],
            "image_mean": _OPENAI_CLIP_MEAN,
            "image_std": _OPENAI_CLIP_STD,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "do_convert_rgb": True,
        },
    )
