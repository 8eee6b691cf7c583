"""autoglm_gguf.timing, the one way the benchmarks time our runtime, and the public API it stands on
(generate from token ids, ignore_eos, AutoGLM.vision). Speed itself is never asserted here."""

from __future__ import annotations

import numpy as np
import pytest

from autoglm_gguf import AutoGLM, _core
from autoglm_gguf.bench import agent_prompt, random_image, system_prompt
from autoglm_gguf.timing import time_first_token, time_generation, time_image_encode


@pytest.fixture(scope="module")
def llm(tiny_checkpoint, convert_tiny):
    text, mmproj = convert_tiny(tiny_checkpoint, "f32")
    return AutoGLM(text, mmproj_path=mmproj, n_ctx=1024, n_threads=1)


def test_generation_counts_the_tokens_it_ran_and_leaves_the_context_alone(llm):
    llm.reset()
    llm.generate("Hello", max_tokens=2)
    n_past = llm.n_past
    prompt = list(range(10, 47))
    t = time_generation(llm, prompt, 9)
    assert (t.prompt_tokens, t.generated_tokens) == (37, 9)
    assert t.prompt_tokens_per_s > 0 and t.generation_tokens_per_s > 0
    assert llm.n_past == n_past  # timed in a context of its own
    assert time_generation(llm, prompt, 1).prompt_tokens == 37  # a new, empty context each time: nothing reused


def test_token_id_prompts_and_ignore_eos(llm):
    text = "[gMASK]<sop><|user|>\nOpen the settings<|assistant|>\n"
    llm.reset()
    expected = llm.generate(text, max_tokens=8)
    llm.reset()
    assert llm.generate(llm.tokenize(text), max_tokens=8) == expected
    with pytest.raises(ValueError, match="text"):
        llm.generate([11, 12], images=[random_image(56, 56, 0)])
    # a prompt the random weights end early (an end-of-generation token); ignore_eos runs to max_tokens
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = rng.integers(10, min(llm.n_vocab, 4000), 5).tolist()
        llm.reset()
        llm.generate(ids, max_tokens=64)
        if llm.last_finish_reason == "stop":
            break
    else:
        pytest.skip("no prompt of 200 ends early on these weights")
    assert len(llm.last_tokens) < 64
    llm.reset()
    llm.generate(ids, max_tokens=64, ignore_eos=True)
    assert llm.last_finish_reason == "length" and len(llm.last_tokens) == 64
    assert time_generation(llm, ids, 64).generated_tokens == 64


def test_image_encode_is_the_towers_work_past_the_cache(llm):
    img = random_image(300, 500, 4)
    hits, misses = llm.vision.hits, llm.vision.misses
    t = time_image_encode(llm.vision, img, max_pixels=200_000)
    assert (llm.vision.hits, llm.vision.misses) == (hits, misses)  # the cache is neither read nor filled
    h, w = _core.smart_resize(500, 300, max_pixels=200_000)
    patch, merge = llm.vision.hparams["patch_size"], llm.vision.hparams["merge_size"]
    assert (t.grid_h * patch, t.grid_w * patch) == (h, w)
    assert t.image_tokens == t.grid_h * t.grid_w // merge**2 == (h // 28) * (w // 28)
    assert t.preprocess_s > 0 and t.encode_s > 0
    np.testing.assert_array_equal(t.embeddings, llm.embed_image(img, image_max_pixels=200_000))


def test_first_token_cold_then_reusing_the_prefix(llm):
    system = system_prompt(llm.tokenize, 40)
    img = random_image(112, 168, 5)
    llm.reset()
    llm.vision.clear_cache()
    cold = time_first_token(llm, agent_prompt(system, 0), images=[img])
    n_text = len(llm.tokenize(agent_prompt(system, 0)))  # the slot's <|image|> is one token, the image 24
    assert cold.prompt_tokens == n_text - 1 + (112 // 28) * (168 // 28) and cold.reused_tokens == 0
    assert cold.image_encode_s > 0 and cold.prompt_s > 0
    assert cold.seconds >= cold.image_encode_s + cold.prompt_s  # the wall time holds both phases
    assert llm.last_tokens and len(llm.last_tokens) == 1
    warm = time_first_token(llm, agent_prompt(system, 1), images=[img])  # step 2: the history as text
    assert warm.prompt_tokens > cold.prompt_tokens and warm.reused_tokens > 40
