"""Conversation contexts: a generation is bound to its session, one session refuses a second thread,
and several contexts over one loaded model run side by side with the results they give alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from autoglm_gguf import AutoGLM, ContextFullError, SessionBusyError, _core

PROMPT = "[gMASK]<sop><|user|>\nOpen Settings and turn on Wi-Fi.<|assistant|>\n"


def test_a_stale_generation_cannot_continue(tiny_f32_model_file):
    llm = AutoGLM(tiny_f32_model_file, n_ctx=512, n_threads=2)
    first = llm.generate(PROMPT, max_tokens=8, stream=True)
    next(first)
    llm.generate(PROMPT + "ok", max_tokens=2)  # something else used the session meanwhile
    with pytest.raises(SessionBusyError, match="start a new generation"):
        next(first)
    # A fresh generation is fine, and equals one on an untouched model.
    again = llm.generate(PROMPT, max_tokens=8)
    assert again == AutoGLM(tiny_f32_model_file, n_ctx=512, n_threads=2).generate(PROMPT, max_tokens=8)


def test_a_generation_survives_reads_but_not_truncation(tiny_f32_model_file):
    llm = AutoGLM(tiny_f32_model_file, n_ctx=512, n_threads=2)
    g = llm.generate(PROMPT, max_tokens=6, stream=True)
    first = next(g)
    assert llm.n_past > 0 and llm.tokenize("x")  # reads do not disturb it
    rest = "".join(g)
    assert first + rest == llm.generate(PROMPT, max_tokens=6)
    g = llm.generate(PROMPT, max_tokens=6, stream=True)
    next(g)
    llm.reset()
    with pytest.raises(SessionBusyError):
        next(g)


def test_a_second_thread_on_a_busy_session_gets_a_clear_error(tiny_f32_model_file):
    llm = AutoGLM(tiny_f32_model_file, n_ctx=4096, n_batch=1, n_threads=1)
    long_prompt = "[gMASK]<sop><|user|>\n" + "swipe up " * 100
    in_prefill, other_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold_in_prefill(done, total):
        if done == 5:
            in_prefill.set()
            other_done.wait(30)  # the session is mid-evaluation (and locked) while the other thread tries

    def other():
        in_prefill.wait(30)
        try:
            llm.generate(PROMPT, max_tokens=2)
        except BaseException as e:
            errors.append(e)
        finally:
            other_done.set()

    t = threading.Thread(target=other)
    t.start()
    out = llm.generate(long_prompt, max_tokens=3, progress=hold_in_prefill)
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], SessionBusyError), errors
    assert "in use by another thread" in str(errors[0])
    assert out == AutoGLM(tiny_f32_model_file, n_ctx=4096, n_threads=1).generate(long_prompt, max_tokens=3)


def test_contexts_share_the_model_and_run_side_by_side(tiny_f32_model_file):
    base = AutoGLM(tiny_f32_model_file, n_ctx=1024, n_threads=2)
    prompts = [PROMPT, "[gMASK]<sop><|user|>\nsearch for cats<|assistant|>\n",
               "[gMASK]<sop><|user|>\n" + "go back " * 40 + "<|assistant|>\n"]
    alone = [base.generate(p, max_tokens=12) for p in prompts]
    contexts = [base] + [base.new_context() for _ in prompts[1:]]
    assert all(c._model is base._model for c in contexts)
    results: dict[int, str] = {}

    def run(i):
        for _ in range(3):
            results[i] = contexts[i].generate(prompts[i], max_tokens=12)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(prompts))] == alone
    small = base.new_context(n_ctx=16)
    assert small.n_ctx == 16 and base.n_ctx == 1024
    with pytest.raises(ContextFullError):
        small.generate(prompts[2], max_tokens=2)


def test_native_errors_arrive_as_package_exceptions(tiny_f32_model_file, tmp_path):
    from autoglm_gguf import GGUFFileError

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(GGUFFileError):
        _core.TextModel(str(bad))
    m = _core.TextModel(str(tiny_f32_model_file))
    s = _core.Session(m, n_ctx=8)
    with pytest.raises(ContextFullError):
        s.eval_tokens(list(range(20)), "last")


def test_openai_penalties_count_generated_tokens_only():
    logits = np.array([5.0, 4.9, 1, 1, 1, 1, 1, 1], np.float32)
    prompt = [0, 0, 0, 0]  # token 0 fills the prompt
    greedy = {"temperature": 0.0, "frequency_penalty": 1.0}
    llama = _core.Sampler(_core.SamplingParams(**greedy, penalty_last_n=-1))
    openai = _core.Sampler(_core.SamplingParams(**greedy, openai_penalties=True))
    assert llama.sample(logits, prompt, 4) == 1          # llama.cpp's window counts the prompt: 5 - 4 < 4.9
    assert openai.sample(logits, prompt, 4) == 0         # OpenAI/vLLM: prompt tokens are not counted
    assert openai.sample(logits, prompt + [0], 4) == 1   # one generated 0: 5 - 1 < 4.9
    rep = _core.Sampler(_core.SamplingParams(temperature=0.0, repeat_penalty=2.0, openai_penalties=True))
    assert rep.sample(logits, prompt, 4) == 1             # repetition penalty does see the prompt: 5 / 2 < 4.9
