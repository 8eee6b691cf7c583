"""llama.cpp (llama-cpp-python 0.3.36) loads the GGUFs that OUR converter writes and reproduces transformers.

Both tiny random checkpoints (the default one, and conftest's ``alt`` variant with other widths, head counts,
GQA ratio, M-RoPE sections, rope theta, depth and a 6x6 ViT position table) are converted with
``outtype=f32`` / ``mmproj_outtype=f32`` so the GGUF weights equal the HF weights exactly, then:

Text (``llama_cpp.Llama``):
  * tokenization: ``Llama.tokenize(add_bos=False, special=True)`` == HF ``AutoTokenizer`` ids
    (``add_special_tokens=False``) for English, code, digits, whitespace runs, newlines, CJK, accented
    and other scripts, emoji, added tokens and chat-template renderings; detokenize round-trips;
  * the GGUF's ``tokenizer.chat_template`` is the checkpoint's and renders the same prompt;
  * greedy decoding: HF ``generate(do_sample=False, max_new_tokens=16)`` (stopping disabled) ==
    llama.cpp argmax decoding for 16 steps (low-level ``llama_decode`` loop, and the high-level
    ``Llama.generate(temp=0, top_k=1, repeat_penalty=1)``); the logits of all 16 steps agree to a few
    1e-5 (asserted <= 1e-4 x max|logit|).

Image + text (``llama_cpp.mtmd_cpp``, llama.cpp's libmtmd), two non-square images per checkpoint:
  * ``mtmd_tokenize`` of the prompt with the media marker gives exactly HF's token stream (mtmd inserts
    ``<|begin_of_image|>`` / ``<|end_of_image|>`` itself; the image chunk has as many embeddings as HF
    has ``<|image|>`` placeholders, and llama.cpp keeps the image size: no resize, no padding);
  * the M-RoPE positions llama.cpp decodes with (text p -> (p,p,p); image token -> (n_past, n_past+row,
    n_past+col); ``n_past`` afterwards) equal HF ``get_rope_index``;
  * image embeddings (``mtmd_encode_chunk`` + ``mtmd_get_output_embd``) vs HF ``get_image_features``;
  * greedy decoding after the image: HF ``generate`` == llama.cpp (``mtmd_helper_eval_chunks`` then
    one ``llama_batch`` per token at pos ``n_past + i``, where ``n_past`` counts M-RoPE positions, not
    tokens, as mtmd-cli does) for 16 steps.

Numerics: llama.cpp's ``ggml_conv_2d`` always builds an F16 im2col (the input is cast to F16, and the
F32 kernel is then converted to F16 for the dot products), so the ViT patch embedding and the merger's
2x2 downsample conv run with F16-rounded operands. That alone makes the image embeddings differ by
~1e-3 relative and the logits after an image by ~0.05-0.2 (on logits of ~30), which is the size of the
random tiny models' smaller top1-top2 margins. Hence:
  * a second set of comparisons is against HF with exactly that rounding emulated (inputs and weights
    of ``patch_embed.proj`` and ``downsample`` rounded to F16): embeddings then agree to ~1e-4 relative,
    logits to ~1e-4 relative, and the 16 greedy tokens must be identical;
  * the image content is chosen so that the plain-HF greedy comparison has margins well above that noise
    (see IMAGE_SEED), and a failure message says whether a divergence is a near-tie.
Other llama.cpp settings used for exactness: F32 K/V cache (the default F16 cache costs ~1e-3 relative
on the logits) and flash attention off (the flash-attention paths cast K/V to F16).

The diffs are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import copy
import ctypes
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
llama_cpp = pytest.importorskip("llama_cpp")
mtmd = pytest.importorskip("llama_cpp.mtmd_cpp")
PIL_Image = pytest.importorskip("PIL.Image")

from transformers import AutoTokenizer, GenerationConfig, Glm4vForConditionalGeneration  # noqa: E402
from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil  # noqa: E402

pytestmark = pytest.mark.llamacpp

N_NEW = 16  # greedy steps compared
N_CTX = 512
N_THREADS = 2

# (width, height): multiples of 28 inside both pixel budgets (HF: 2*w*h >= 12544 with its 2-frame rule;
# llama.cpp: w*h >= 8 merged tokens = 6272), so neither runtime resizes or pads. Non-square, one
# landscape (merged grid 3 rows x 4 cols) and one portrait (4 x 2), so swapped H/W streams show up.
IMAGE_SIZES = [(112, 84), (56, 112)]

TEXT_SAMPLES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "12345",
    "3.14159 and 65536, 1000000",
    "def add(a: int, b: int) -> int:\n    return a + b\n",
    "  leading and   multiple    spaces\t\ttabs  ",
    "line one\nline two\n\n\nparagraph\r\nwindows\n",
    "   \n\n  \t  trailing   ",
    "今天天气很好，我们去公园散步吧。",
    "Café, naïve, résumé, São Paulo, Zürich, Ångström",
    "Ελληνικά, привет мир, こんにちは, 안녕하세요 😀 👍",
    'do(action="Tap", element=[312, 845]) {"action": "type"}',
    "I'm sure you'll find it; we've done it, they're ready. IT'S FINE",
    "<think>x</think><answer>y</answer>",
    "[gMASK]<sop><|system|>\nYou are helpful.<|user|>\nHi<|assistant|>\n",
    "<|begin_of_image|><|image|><|end_of_image|><|endoftext|>",
]

CHAT_TEXT = [
    {"role": "system", "content": "You are a phone agent."},
    {"role": "user", "content": "Open the Settings app and tap Wi-Fi."},
]
CHAT_IMAGE = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is on the screen?"}]},
]


# --------------------------------------------------------------------------------------------------
# llama.cpp plumbing
# --------------------------------------------------------------------------------------------------


def _quiet_mtmd_logs() -> None:
    """Route libmtmd/clip logs through llama-cpp-python's own (level-filtered) log callback, which lives
    as long as the llama_cpp package (so libmtmd never calls a freed ctypes callback at exit)."""
    from llama_cpp import _logger

    mtmd.mtmd_helper_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


class LlamaRuntime:
    """A text model + context (``llama_cpp.Llama``) plus a libmtmd context and a llama_batch; close() frees
    them in dependency order (mtmd context and batch before the model)."""

    def __init__(self, text_gguf, mmproj_gguf):
        self.llm = llama_cpp.Llama(
            model_path=str(text_gguf),
            n_ctx=N_CTX,
            n_batch=N_CTX,
            n_ubatch=N_CTX,
            n_threads=N_THREADS,
            n_threads_batch=N_THREADS,
            type_k=llama_cpp.GGML_TYPE_F32,
            type_v=llama_cpp.GGML_TYPE_F32,
            flash_attn=False,
            verbose=False,
        )
        self.n_vocab = self.llm.n_vocab()
        self.n_embd = self.llm.n_embd()
        self.batch = llama_cpp.llama_batch_init(N_CTX, 0, 1)
        _quiet_mtmd_logs()
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = N_THREADS
        params.warmup = False
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.mctx = mtmd.mtmd_init_from_file(str(mmproj_gguf).encode(), self.llm.model, params)
        if not self.mctx:
            self.close()
            raise RuntimeError(f"mtmd_init_from_file failed for {mmproj_gguf}")

    @property
    def ctx(self):
        return self.llm.ctx

    def close(self) -> None:
        if getattr(self, "mctx", None):
            mtmd.mtmd_free(self.mctx)
            self.mctx = None
        if getattr(self, "batch", None) is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        if getattr(self, "llm", None) is not None:
            self.llm.close()
            self.llm = None

    # -- low-level decoding ------------------------------------------------------------------------

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        self.llm.reset()  # the high-level wrapper's n_tokens bookkeeping

    def last_logits(self) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def decode(self, tokens, pos0: int) -> np.ndarray:
        """Decode text tokens at positions pos0, pos0+1, ... (1-D positions; for an M-RoPE model llama.cpp
        uses (p, p, p, 0)); returns the logits of the last one."""
        b = self.batch
        b.n_tokens = len(tokens)
        for i, tok in enumerate(tokens):
            b.token[i] = int(tok)
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = i == len(tokens) - 1
        rc = llama_cpp.llama_decode(self.ctx, b)
        assert rc == 0, f"llama_decode returned {rc}"
        return self.last_logits()

    def greedy(self, first_logits: np.ndarray, pos: int, n: int = N_NEW):
        """Greedy (argmax) continuation for n steps; no EOG stopping. Returns (ids, per-step logits)."""
        ids, steps = [], []
        logits = first_logits
        for _ in range(n):
            steps.append(logits)
            tok = int(np.argmax(logits))
            ids.append(tok)
            logits = self.decode([tok], pos)
            pos += 1
        return ids, np.stack(steps)


# --------------------------------------------------------------------------------------------------
# HF side
# --------------------------------------------------------------------------------------------------


def _greedy_config(**extra) -> GenerationConfig:
    # eos_token_id=[] (not None: None is filled in from the checkpoint's generation_config) disables stopping;
    # pad_token_id is then never used.
    return GenerationConfig(do_sample=False, max_new_tokens=N_NEW, eos_token_id=[], pad_token_id=0,
                            output_logits=True, return_dict_in_generate=True, **extra)


def _hf_generate(model, input_ids: list[int], **kwargs):
    ids = torch.tensor([input_ids])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             generation_config=_greedy_config(), **kwargs)
    new = out.sequences[0, len(input_ids):].tolist()
    logits = torch.stack(out.logits, 0)[:, 0].float().numpy()
    assert len(new) == N_NEW, f"transformers stopped after {len(new)} tokens"
    return new, logits


def _round_f16(t):
    return t.to(torch.float16).to(torch.float32)


def _emulate_llamacpp_conv_precision(model):
    """A copy of the HF model whose two convolutions see F16-rounded inputs and weights, like llama.cpp's
    ggml_conv_2d (F16 im2col; the F32 kernel is converted to F16 for the dot product; F32 accumulation)."""
    emu = copy.deepcopy(model)
    vis = emu.model.visual
    with torch.no_grad():
        for conv in (vis.patch_embed.proj, vis.downsample):
            conv.weight.copy_(_round_f16(conv.weight))
            conv.register_forward_pre_hook(lambda mod, args: (_round_f16(args[0]), *args[1:]))
    return emu


@dataclass
class HFSide:
    tok: object
    model: object
    image_processor: object
    emulated: object = None

    def emulated_model(self):
        if self.emulated is None:
            self.emulated = _emulate_llamacpp_conv_precision(self.model)
        return self.emulated


# --------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    ckpt: object
    text_gguf: object
    mmproj_gguf: object
    hf: HFSide
    rt: LlamaRuntime
    cache: dict = field(default_factory=dict)


@pytest.fixture(scope="module", params=["tiny", "alt"])
def case(request, convert_tiny):
    ckpt = request.getfixturevalue("tiny_checkpoint_f32" if request.param == "tiny" else "alt_checkpoint")
    text_gguf, mmproj_gguf = convert_tiny(ckpt, "f32", "f32")
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = Glm4vForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).eval()
    hf = HFSide(tok, model, Glm4vImageProcessorPil.from_pretrained(ckpt))
    rt = LlamaRuntime(text_gguf, mmproj_gguf)
    try:
        yield Case(request.param, ckpt, text_gguf, mmproj_gguf, hf, rt)
    finally:
        rt.close()


def _chat_text(tok, messages) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# --------------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------------


def test_tokenization_matches_hf(case):
    tok, llm = case.hf.tok, case.rt.llm
    samples = TEXT_SAMPLES + [_chat_text(tok, CHAT_TEXT), _chat_text(tok, CHAT_IMAGE)]
    assert "<|begin_of_image|><|image|><|end_of_image|>" in samples[-1]
    for s in samples:
        want = tok(s, add_special_tokens=False).input_ids
        got = llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)
        assert got == want, f"tokenization differs for {s!r}:\n llama.cpp {got}\n HF        {want}"
        assert llm.detokenize(got, special=True) == s.encode("utf-8"), f"detokenize round trip for {s!r}"
    # add_bos=True must not add anything either (GLM-4 has no BOS; [gMASK]<sop> comes from the template).
    assert llm.tokenize(b"Hello", add_bos=True, special=True) == tok("Hello", add_special_tokens=False).input_ids


def test_gguf_chat_template_renders_like_hf(case):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    tok, llm = case.hf.tok, case.rt.llm
    template = llm.metadata.get("tokenizer.chat_template")
    assert template == tok.chat_template
    fmt = Jinja2ChatFormatter(template=template, eos_token="<|endoftext|>", bos_token="")
    assert fmt(messages=CHAT_TEXT).prompt == _chat_text(tok, CHAT_TEXT)


def test_text_greedy_matches_transformers(case):
    tok, rt = case.hf.tok, case.rt
    prompt = tok(_chat_text(tok, CHAT_TEXT), add_special_tokens=False).input_ids
    assert prompt[:2] == tok.convert_tokens_to_ids(["[gMASK]", "<sop>"])

    t0 = time.perf_counter()
    hf_ids, hf_logits = _hf_generate(case.hf.model, prompt)
    t_hf = time.perf_counter() - t0

    # High-level API: temperature 0 / top_k 1, no repeat penalty.
    rt.clear()
    hl_ids = []
    for t in rt.llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        hl_ids.append(int(t))
        if len(hl_ids) == N_NEW:
            break

    # Low-level: explicit batches, argmax, logits of every step.
    t0 = time.perf_counter()
    rt.clear()
    lc_ids, lc_logits = rt.greedy(rt.decode(prompt, 0), len(prompt))
    t_lc = time.perf_counter() - t0
    rt.clear()

    diff = np.abs(lc_logits - hf_logits)
    scale = float(np.abs(hf_logits).max())
    print(f"\n[{case.name}] text: prompt {len(prompt)} tokens; HF {hf_ids}; llama.cpp {lc_ids}; "
          f"logits max|diff| step0 {diff[0].max():.3g}, all {N_NEW} steps {diff.max():.3g} "
          f"(max|logit| {scale:.3g}); HF generate {t_hf:.2f}s, llama.cpp {t_lc:.2f}s")
    assert lc_ids == hf_ids
    assert hl_ids == hf_ids
    assert diff.max() <= 1e-4 * max(1.0, scale), f"logits differ by {diff.max():.3g}"


# --------------------------------------------------------------------------------------------------
# image + text
# --------------------------------------------------------------------------------------------------


# The random tiny models have many near-ties (top1-top2 logit margins of a few 1e-2) while llama.cpp's F16
# conv rounding moves the logits by up to ~0.1-0.3 after an image, so the image content is chosen (seed
# scan over 0..24) such that on every greedy step of every case HF's top1-top2 margin is > 4.7x the
# largest logit difference at that step: identical tokens are then guaranteed, not luck.
IMAGE_SEED = 24


def _image(width: int, height: int):
    rng = np.random.default_rng([IMAGE_SEED, width, height])
    arr = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    # a gradient under the noise, so the picture is not pure noise
    arr = (arr // 2 + (np.arange(width)[None, :, None] * 127 // max(1, width - 1))).astype(np.uint8)
    return arr


@dataclass
class ImageRun:
    hf_ids: list  # HF prompt ids (with N x <|image|>)
    mm_token_type_ids: list
    grid_thw: object
    hf_positions: np.ndarray  # (3, L) from get_rope_index
    hf_features: np.ndarray
    hf_features_emulated: np.ndarray
    hf_new: list
    hf_logits: np.ndarray
    hf_emu_new: list
    hf_emu_logits: np.ndarray
    lc_stream: list  # llama.cpp chunks flattened, image embeddings shown as <|image|> ids
    lc_positions: np.ndarray  # (3, L): T, H, W streams llama.cpp decodes with
    lc_image_nx_ny: tuple
    lc_n_past: int
    lc_features: np.ndarray
    lc_new: list
    lc_logits: np.ndarray
    t_hf: float
    t_lc: float


def _run_image(case: Case, width: int, height: int) -> ImageRun:
    key = (width, height)
    if key in case.cache:
        return case.cache[key]
    hf, rt = case.hf, case.rt
    tok = hf.tok
    arr = _image(width, height)
    text = _chat_text(tok, CHAT_IMAGE)
    image_tok = "<|image|>"
    image_id = tok.convert_tokens_to_ids(image_tok)

    # ---- HF: processor-equivalent inputs (placeholder expanded to grid_t*grid_h*grid_w/4 copies)
    px = hf.image_processor(images=[PIL_Image.fromarray(arr)], return_tensors="pt")
    grid = px["image_grid_thw"]
    n_img = int(grid.prod()) // 4
    ids = tok(text.replace(image_tok, image_tok * n_img), add_special_tokens=False).input_ids
    mm = [1 if t == image_id else 0 for t in ids]
    model = hf.model
    t0 = time.perf_counter()
    with torch.no_grad():
        positions, _ = model.model.get_rope_index(torch.tensor([ids]), torch.tensor([mm]), image_grid_thw=grid)
        feats = model.model.get_image_features(px["pixel_values"], grid).pooler_output[0].numpy()
        emu = hf.emulated_model()
        feats_emu = emu.model.get_image_features(px["pixel_values"], grid).pooler_output[0].numpy()
    mm_inputs = {"pixel_values": px["pixel_values"], "image_grid_thw": grid,
                 "mm_token_type_ids": torch.tensor([mm])}
    hf_new, hf_logits = _hf_generate(model, ids, **mm_inputs)
    emu_new, emu_logits = _hf_generate(emu, ids, **mm_inputs)
    t_hf = time.perf_counter() - t0

    # ---- llama.cpp: prompt with the media marker where HF's template has the image triple
    t0 = time.perf_counter()
    marker = mtmd.mtmd_default_marker().decode()
    lc_text = text.replace("<|begin_of_image|><|image|><|end_of_image|>", marker)
    assert lc_text.count(marker) == 1
    buf = (ctypes.c_uint8 * arr.size).from_buffer_copy(arr.tobytes())
    bitmap = mtmd.mtmd_bitmap_init(width, height, buf)
    chunks = mtmd.mtmd_input_chunks_init()
    try:
        text_b = lc_text.encode("utf-8")
        inp = mtmd.mtmd_input_text()
        inp.text = text_b
        inp.text_len = len(text_b)
        inp.add_special = False
        inp.parse_special = True
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        rc = mtmd.mtmd_tokenize(rt.mctx, chunks, ctypes.byref(inp), bitmaps, 1)
        assert rc == 0, f"mtmd_tokenize returned {rc}"

        stream, pos_t, pos_h, pos_w = [], [], [], []
        n_pos = 0
        feats_lc, nx_ny = None, None
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            ctype = mtmd.mtmd_input_chunk_get_type(chunk)
            if ctype == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                toks = [ptr[j] for j in range(n.value)]
                stream += toks
                span = list(range(n_pos, n_pos + len(toks)))
                pos_t += span
                pos_h += span
                pos_w += span
                n_pos += len(toks)
            else:
                assert ctype == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE
                assert feats_lc is None, "expected one image chunk"
                image_tokens = mtmd.mtmd_input_chunk_get_tokens_image(chunk)
                n_tok = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                nx_ny = (mtmd.mtmd_image_tokens_get_nx(image_tokens), mtmd.mtmd_image_tokens_get_ny(image_tokens))
                stream += [image_id] * n_tok
                for k in range(n_tok):
                    p = mtmd.mtmd_image_tokens_get_decoder_pos(image_tokens, n_pos, k)
                    pos_t.append(p.t)
                    pos_h.append(p.y)  # mtmd-helper feeds streams (t, y, x, z): y -> H section, x -> W section
                    pos_w.append(p.x)
                n_pos += mtmd.mtmd_input_chunk_get_n_pos(chunk)
                rc = mtmd.mtmd_encode_chunk(rt.mctx, chunk)
                assert rc == 0, f"mtmd_encode_chunk returned {rc}"
                embd = mtmd.mtmd_get_output_embd(rt.mctx)
                feats_lc = np.ctypeslib.as_array(embd, shape=(n_tok, rt.n_embd)).copy()
        assert feats_lc is not None, "mtmd_tokenize produced no image chunk"

        # Evaluate the whole prompt (text chunks + image chunk with its M-RoPE positions), then decode
        # token by token at pos = n_past + i, as mtmd-cli does.
        rt.clear()
        new_n_past = llama_cpp.llama_pos(0)
        rc = mtmd.mtmd_helper_eval_chunks(rt.mctx, rt.ctx, chunks, 0, 0, N_CTX, True, ctypes.byref(new_n_past))
        assert rc == 0, f"mtmd_helper_eval_chunks returned {rc}"
        lc_new, lc_logits = rt.greedy(rt.last_logits(), new_n_past.value)
        rt.clear()
        n_past_helper = mtmd.mtmd_helper_get_n_pos(chunks)
        assert n_past_helper == new_n_past.value == n_pos
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
    t_lc = time.perf_counter() - t0

    run = ImageRun(ids, mm, grid, positions[:, 0].numpy(), feats, feats_emu, hf_new, hf_logits, emu_new, emu_logits,
                   stream, np.array([pos_t, pos_h, pos_w]), nx_ny, new_n_past.value, feats_lc, lc_new, lc_logits,
                   t_hf, t_lc)
    case.cache[key] = run
    return run


@pytest.mark.parametrize("width,height", IMAGE_SIZES, ids=[f"{w}x{h}" for w, h in IMAGE_SIZES])
def test_image_prompt_tokens_and_mrope_positions(case, width, height):
    r = _run_image(case, width, height)
    _, gh, gw = (int(v) for v in r.grid_thw[0])
    # HF keeps the size (grid in 14-px patches) and so does llama.cpp (merged grid nx x ny, no padding).
    assert (gw * 14, gh * 14) == (width, height)
    assert r.lc_image_nx_ny == (gw // 2, gh // 2) == (width // 28, height // 28)
    # Same token stream: mtmd adds <|begin_of_image|> / <|end_of_image|> around the image chunk itself.
    assert r.lc_stream == r.hf_ids
    # Same M-RoPE positions (T, H, W) for every prompt token, and n_past = max position + 1.
    np.testing.assert_array_equal(r.lc_positions, r.hf_positions)
    assert r.lc_n_past == int(r.hf_positions.max()) + 1
    assert r.lc_n_past == len(r.hf_ids) - gh * gw // 4 + max(gh, gw) // 2


@pytest.mark.parametrize("width,height", IMAGE_SIZES, ids=[f"{w}x{h}" for w, h in IMAGE_SIZES])
def test_image_embeddings_match_transformers(case, width, height):
    r = _run_image(case, width, height)
    assert r.lc_features.shape == r.hf_features.shape
    scale = float(np.abs(r.hf_features).max())
    d_plain = float(np.abs(r.lc_features - r.hf_features).max())
    d_emu = float(np.abs(r.lc_features - r.hf_features_emulated).max())
    print(f"\n[{case.name} {width}x{height}] image embeddings {r.lc_features.shape}: max|diff| vs HF {d_plain:.3g}, "
          f"vs HF with llama.cpp's F16 conv rounding {d_emu:.3g} (max|embd| {scale:.3g})")
    assert d_plain <= 5e-3 * scale
    assert d_emu <= 2e-4 * scale


def _margins(logits: np.ndarray) -> np.ndarray:
    top2 = np.sort(logits, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _first_mismatch(a: list, b: list):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


@pytest.mark.parametrize("width,height", IMAGE_SIZES, ids=[f"{w}x{h}" for w, h in IMAGE_SIZES])
def test_image_greedy_matches_transformers(case, width, height):
    """llama.cpp's 16 greedy tokens after an image == transformers' (plain F32 model)."""
    r = _run_image(case, width, height)
    diff = np.abs(r.lc_logits - r.hf_logits)
    scale = float(np.abs(r.hf_logits).max())
    margins = _margins(r.hf_logits)
    print(f"\n[{case.name} {width}x{height}] image+text: prompt {len(r.hf_ids)} tokens, n_past {r.lc_n_past}; "
          f"HF {r.hf_new}; llama.cpp {r.lc_new}; logits max|diff| step0 {diff[0].max():.3g}, all steps "
          f"{diff.max():.3g} (max|logit| {scale:.3g}, smallest HF top1-top2 margin {margins.min():.3g}); "
          f"HF {r.t_hf:.2f}s, llama.cpp {r.t_lc:.2f}s")
    k = _first_mismatch(r.lc_new, r.hf_new)
    assert k is None, (
        f"greedy tokens diverge at step {k}: llama.cpp {r.lc_new[k]} vs HF {r.hf_new[k]}; HF top1-top2 margin there "
        f"{margins[k]:.3g}, logits max|diff| up to that step {diff[:k + 1].max():.3g}. A margin of the order of the "
        f"diff is a near-tie broken by llama.cpp's F16 conv rounding (see the *_f16_conv test), not a conversion bug")
    assert diff[0].max() <= 2e-2 * max(1.0, scale)


@pytest.mark.parametrize("width,height", IMAGE_SIZES, ids=[f"{w}x{h}" for w, h in IMAGE_SIZES])
def test_image_greedy_matches_transformers_f16_conv(case, width, height):
    """Same, against transformers with llama.cpp's F16 conv rounding emulated: tokens equal, logits tight."""
    r = _run_image(case, width, height)
    diff = np.abs(r.lc_logits - r.hf_emu_logits)
    scale = float(np.abs(r.hf_emu_logits).max())
    print(f"\n[{case.name} {width}x{height}] image+text vs HF with F16 conv rounding: HF {r.hf_emu_new}; "
          f"logits max|diff| step0 {diff[0].max():.3g}, all steps {diff.max():.3g} (max|logit| {scale:.3g}, "
          f"smallest HF top1-top2 margin {_margins(r.hf_emu_logits).min():.3g})")
    assert r.lc_new == r.hf_emu_new
    # Not ~1e-6 like the text path: where llama.cpp's and HF's ViT outputs (equal to ~1e-5) straddle an F16
    # rounding boundary, the downsample conv's F16 input still differs by one F16 ulp.
    assert diff.max() <= 3e-3 * max(1.0, scale)
