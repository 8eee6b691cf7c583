"""Images end to end (AutoGLM with an mmproj) against transformers: embeddings, prompt logits at every
position, greedy tokens, several images, earlier turns, the embeddings cache, prefix reuse, bad input."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, Glm4vForConditionalGeneration
from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

from autoglm_gguf import AutoGLM, AutoGLMError
from autoglm_gguf.errors import ImageError


def picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, width, height])
    noise = rng.integers(0, 128, size=(height, width, 3), dtype=np.uint16)
    ramp = (np.arange(width)[None, :, None] * 127 // max(1, width - 1)).astype(np.uint16)
    return (noise + ramp).astype(np.uint8)


class Case:
    def __init__(self, ckpt, text, mmproj):
        self.ckpt = ckpt
        self.tok = AutoTokenizer.from_pretrained(ckpt)
        self.hf = Glm4vForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float64).eval()
        self.proc = Glm4vImageProcessorPil.from_pretrained(ckpt)
        self.llm = AutoGLM(text, mmproj_path=mmproj, n_ctx=1024, n_threads=2, kv_type="f32",
                           vision_matmul_type="file")  # F32 arithmetic: the 1e-4 parity
        self.image_id = self.tok.convert_tokens_to_ids("<|image|>")

    def hf_inputs(self, messages, images):
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        px = self.proc(images=[Image.fromarray(a) for a in images], return_tensors="pt")
        grids = px["image_grid_thw"]
        parts = text.split("<|image|>")
        ids: list[int] = []
        for i, part in enumerate(parts):
            ids += self.tok(part, add_special_tokens=False)["input_ids"]
            if i < len(grids):
                ids += [self.image_id] * (int(grids[i].prod()) // 4)
        mm = [1 if t == self.image_id else 0 for t in ids]
        return ids, dict(pixel_values=px["pixel_values"].double(), image_grid_thw=grids, mm_token_type_ids=torch.tensor([mm]))

    def hf_logits(self, messages, images):
        ids, extra = self.hf_inputs(messages, images)
        with torch.no_grad():
            return self.hf(input_ids=torch.tensor([ids]), **extra).logits[0].numpy()

    def f32_bound(self, messages, images, ref):
        """1e-4, or transformers' own float32 error where that is larger: on image prompts of the wider
        test model float32 rounding alone reaches 4e-4..8e-4 (ours measured 1.7e-4..3.6e-4)."""
        if not hasattr(self, "hf32"):
            self.hf32 = Glm4vForConditionalGeneration.from_pretrained(self.ckpt, dtype=torch.float32).eval()
        ids, extra = self.hf_inputs(messages, images)
        extra = {k: (v.float() if v.dtype == torch.float64 else v) for k, v in extra.items()}
        with torch.no_grad():
            r32 = self.hf32(input_ids=torch.tensor([ids]), **extra).logits[0].double().numpy()
        return max(1e-4, float(np.abs(r32 - ref).max()))

    def hf_greedy(self, messages, images, n):
        ids, extra = self.hf_inputs(messages, images)
        with torch.no_grad():
            out = self.hf.generate(input_ids=torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=[],
                                   pad_token_id=0, **extra)
        return out[0, len(ids):].tolist()


@pytest.fixture(scope="module", params=["tiny", "alt"])
def case(request, tiny_checkpoint_f32, alt_checkpoint, convert_tiny):
    ckpt = tiny_checkpoint_f32 if request.param == "tiny" else alt_checkpoint
    text, mmproj = convert_tiny(ckpt, "f32", "f32")
    return Case(ckpt, text, mmproj)


def user(images, text):
    return {"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]}


@pytest.mark.parametrize("size", [(112, 112), (270, 600), (97, 131), (300, 200)])
def test_embed_image_matches_transformers(case, size):
    arr = picture(*size)
    px = case.proc(images=[Image.fromarray(arr)], return_tensors="pt")
    with torch.no_grad():
        ref = case.hf.model.get_image_features(px["pixel_values"].double(), px["image_grid_thw"]).pooler_output[0].numpy()
    ours = case.llm.embed_image(arr)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-3 * np.abs(ref).max()


def test_the_default_tower_is_bf16_where_the_cpu_has_it_within_the_bf16_bound(case):
    """AutoGLM's default vision_matmul_type is "auto": BF16 matrices and attention on an AVX512_BF16 CPU (as
    vLLM and SGLang run this ViT), the file's type elsewhere. Its embeddings stay within the tower tests'
    BF16 bound (3% of the largest value) of transformers in float64, and equal the pinned F32 path's where
    the CPU has no BF16."""
    from autoglm_gguf import AutoGLM, _core

    llm = AutoGLM(case.llm.model_path, mmproj_path=case.llm.mmproj_path, n_ctx=256, n_threads=2)
    want = _core.VisionModel(case.llm.mmproj_path, n_threads=1, use_gpu=False, matmul_type="auto").matmul_type
    assert llm._vision.model.matmul_type == want and want in ("bf16", "f32")
    arr = picture(270, 600, seed=4)
    px = case.proc(images=[Image.fromarray(arr)], return_tensors="pt")
    with torch.no_grad():
        ref = case.hf.model.get_image_features(px["pixel_values"].double(), px["image_grid_thw"]).pooler_output[0].numpy()
    ours, f32 = llm.embed_image(arr), case.llm.embed_image(arr)
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err <= 3e-2
    if want == "bf16":
        assert err > np.abs(f32 - ref).max() / np.abs(ref).max()  # measurably not the F32 path
    else:
        assert np.array_equal(ours, f32)


@pytest.mark.parametrize("size", [(112, 56), (56, 112), (112, 112)])  # no resize: identical pixels in both
def test_image_prompt_logits_and_greedy_match_transformers(case, size):
    arr = picture(*size, seed=1)
    messages = [user([arr], "What is on the screen?")]
    ref = case.hf_logits(messages, [arr])
    prompt = case.llm.apply_chat_template(messages)
    ours = case.llm.prompt_logits(prompt, images=[arr])
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= case.f32_bound(messages, [arr], ref)
    case.llm.generate(prompt, images=[arr], max_tokens=32)
    assert case.llm.last_tokens == case.hf_greedy(messages, [arr], 32)


def test_two_images_and_an_image_in_an_earlier_turn(case):
    a, b = picture(112, 56, seed=2), picture(56, 112, seed=3)
    messages = [user([a], "First screen."), {"role": "assistant", "content": "do(action=\"Tap\", element=[1,2])"},
                user([b, a], "Now these two.")]
    images = [a, b, a]
    ref = case.hf_logits(messages, images)
    prompt = case.llm.apply_chat_template(messages)
    assert np.abs(case.llm.prompt_logits(prompt, images=images) - ref).max() <= case.f32_bound(messages, images, ref)
    case.llm.generate(prompt, images=images, max_tokens=16)
    assert case.llm.last_tokens == case.hf_greedy(messages, images, 16)


def test_embedding_cache_and_agent_style_prefix_reuse(case):
    llm = case.llm
    s1, s2 = picture(112, 56, seed=4), picture(112, 56, seed=5)
    system = {"role": "system", "content": "You are a phone agent. " * 20}
    step1 = [system, user([s1], "Open Settings.")]
    p1 = llm.apply_chat_template(step1)
    n_step1 = len(llm.prompt_logits(p1, images=[s1]))  # cells of step 1 (text tokens + image tokens)
    llm.reset()
    hits = llm._vision.hits
    llm.generate(p1, images=[s1], max_tokens=4)
    step2 = step1 + [{"role": "assistant", "content": llm.detokenize(llm.last_tokens)}, user([s2], "Next step.")]
    p2 = llm.apply_chat_template(step2)
    warm = llm.generate(p2, images=[s1, s2], max_tokens=12)
    reused = llm.last_timings["prompt_tokens_reused"]
    assert llm._vision.hits >= hits + 2  # s1 (twice) came from the embeddings cache
    assert reused >= n_step1  # step 1 (system prompt and its screenshot) was not recomputed
    llm.reset()
    cold = llm.generate(p2, images=[s1, s2], max_tokens=12)
    assert llm.last_timings["prompt_tokens_reused"] == 0
    assert warm == cold


def test_changed_image_invalidates_from_its_slot(case):
    llm = case.llm
    a, b = picture(112, 56, seed=6), picture(112, 56, seed=7)
    prompt = llm.apply_chat_template([user([a], "x")])
    llm.generate(prompt, images=[a], max_tokens=1)
    llm.generate(prompt, images=[b], max_tokens=1)
    before = llm.tokenize(prompt.split("<|begin_of_image|><|image|><|end_of_image|>")[0] + "<|begin_of_image|>")
    assert llm.last_timings["prompt_tokens_reused"] == len(before)


def test_openai_image_parts(case, tmp_path):
    arr = picture(112, 56, seed=8)
    path = tmp_path / "screen.png"
    Image.fromarray(arr).save(path)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    outs = []
    for url in (data_url, str(path), path.as_uri()):
        msg = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}]}
        outs.append(case.llm.create_chat_completion([msg], max_tokens=6)["choices"][0]["message"]["content"])
    assert outs[0] == outs[1] == outs[2]
    with pytest.raises(AutoGLMError, match="offline"):
        case.llm.create_chat_completion([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])


def test_bad_image_input(case, files_text_only):
    llm = case.llm
    prompt = llm.apply_chat_template([user([None], "x")])
    with pytest.raises(ImageError):
        llm.generate(prompt, images=[b"definitely not an image"])
    with pytest.raises(ImageError):
        llm.generate(prompt, images=[np.zeros((0, 10, 3), np.uint8)])
    with pytest.raises((ImageError, ValueError), match="aspect ratio|200"):
        llm.generate(prompt, images=[np.zeros((1, 10000, 3), np.uint8)])
    with pytest.raises(AutoGLMError, match="1 image slot.*2 image"):
        llm.generate(prompt, images=[picture(56, 56), picture(56, 56)])
    with pytest.raises(AutoGLMError, match="mmproj"):
        files_text_only.generate(prompt, images=[picture(56, 56)])
    assert isinstance(llm.generate(prompt, images=[picture(112, 56)], max_tokens=3), str)  # still usable


@pytest.fixture(scope="module")
def files_text_only(tiny_checkpoint_f32, convert_tiny):
    return AutoGLM(convert_tiny(tiny_checkpoint_f32, "f32", "f32")[0], n_ctx=256)


def test_cli_image(case, tmp_path):
    arr = picture(112, 56, seed=9)
    path = tmp_path / "s.png"
    Image.fromarray(arr).save(path)
    text, mmproj = case.llm.model_path, case.llm.mmproj_path
    proc = subprocess.run([sys.executable, "-m", "autoglm_gguf.cli", "run", "-m", text, "--mmproj", mmproj,
                           "--image", str(path), "-p", "Describe.", "-n", "6", "-c", "512", "--vision-type", "file"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "images:" in proc.stderr and "tokens, encoded in" in proc.stderr
    expected = case.llm.generate(case.llm.apply_chat_template([user([arr], "Describe.")]), images=[arr], max_tokens=6)
    assert proc.stdout == expected + "\n"


def test_embedding_cache_is_the_cores_and_evicted_embeddings_stay_valid(case):
    from autoglm_gguf import _core
    from autoglm_gguf.vision import ImageEncoder, prompt_pieces

    enc = ImageEncoder(case.llm.mmproj_path, cache_bytes=1)  # room for the newest entry only
    a = enc.encode(picture(56, 56, seed=1))
    kept = a.embeddings.copy()
    assert not a.embeddings.flags.writeable
    b = enc.encode(picture(56, 56, seed=2))  # evicts a
    assert np.array_equal(a.embeddings, kept) and a.key != b.key
    assert (enc.hits, enc.misses) == (0, 2)
    assert enc.encode(picture(56, 56, seed=2)).key == b.key and enc.hits == 1
    enc.encode(picture(56, 56, seed=1))
    assert enc.misses == 3  # a had been evicted
    # The same pixels at another resize budget are another image.
    assert enc.encode(picture(56, 56, seed=1), max_pixels=56 * 56 * 40).key != a.key
    # The slot split is the core's: a slot/image count mismatch names both counts.
    m = case.llm._model
    with pytest.raises(AutoGLMError, match="1 image slot.*2 image"):
        prompt_pieces(m, "<|begin_of_image|><|image|><|end_of_image|>hi", [a, b])
    runs = _core.tokenize_around_images(m, "x<|begin_of_image|><|image|><|end_of_image|>y", 1)
    assert len(runs) == 2 and runs[0][-1] == m.tokenize("<|begin_of_image|>", True)[0]
