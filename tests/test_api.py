"""The Python API (AutoGLM) and the `run` CLI on the tiny checkpoints."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, Glm4vForConditionalGeneration

from autoglm_gguf import AutoGLM, AutoGLMError, ContextFullError, GGUFFileError

MESSAGES = [{"role": "system", "content": "You are a phone agent."},
            {"role": "user", "content": "Open Settings and turn on Wi-Fi."},
            {"role": "assistant", "content": "do(action=\"Launch\", app=\"Settings\")"},
            {"role": "user", "content": [{"type": "text", "text": "Now "}, {"type": "text", "text": "Bluetooth."}]}]


@pytest.fixture(scope="module")
def files(tiny_checkpoint_f32, convert_tiny):
    return tiny_checkpoint_f32, convert_tiny(tiny_checkpoint_f32, "f32", "f16")[0]


@pytest.fixture(scope="module")
def llm(files):
    return AutoGLM(files[1], n_ctx=512, n_threads=2, kv_type="f32", seed=7)


@pytest.fixture(scope="module")
def hf(files):
    return Glm4vForConditionalGeneration.from_pretrained(files[0], dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def hf_tok(files):
    return AutoTokenizer.from_pretrained(files[0])


def test_chat_template_matches_transformers(llm, hf_tok):
    for msgs in (MESSAGES, MESSAGES[1:2], MESSAGES[:3]):
        for gen in (True, False):
            ref = hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            assert llm.apply_chat_template(msgs, add_generation_prompt=gen) == ref
    assert llm.chat_template == hf_tok.chat_template


@pytest.mark.parametrize("text", ["Hello world", "[gMASK]<sop><|user|>\n你好，世界！ 12345<|assistant|>\n",
                                  "  leading spaces\n\n\ttabs", "emoji 👍🏽 and café"])
def test_tokenize_matches_transformers_and_round_trips(llm, hf_tok, text):
    ids = llm.tokenize(text)
    assert ids == hf_tok(text, add_special_tokens=False)["input_ids"]
    assert llm.detokenize(ids) == text


def test_special_tokens_can_be_disabled(llm):
    ids = llm.tokenize("<|user|>", special=False)
    assert len(ids) > 1 and llm.detokenize(ids) == "<|user|>"
    assert len(llm.tokenize("<|user|>")) == 1


def test_greedy_generation_matches_transformers(llm, hf, hf_tok):
    prompt = llm.apply_chat_template(MESSAGES)
    text = llm.generate(prompt, max_tokens=64)
    ids = hf_tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = hf.generate(input_ids=ids, max_new_tokens=64, do_sample=False, pad_token_id=0)[0, ids.shape[1]:].tolist()
    eog = set(hf.generation_config.eos_token_id)
    ref = ref[: next((i for i, t in enumerate(ref) if t in eog), len(ref))]
    assert llm.last_tokens == ref
    assert text == llm.detokenize(ref)
    assert llm.last_finish_reason == ("length" if len(ref) == 64 else "stop")


def test_stream_equals_non_stream(llm):
    prompt = llm.apply_chat_template(MESSAGES[:2])
    for kw in ({}, {"temperature": 0.9, "top_k": 40, "seed": 3}):
        whole = llm.generate(prompt, max_tokens=40, **kw)
        assert "".join(llm.generate(prompt, max_tokens=40, stream=True, **kw)) == whole


def test_seeds(llm):
    prompt = llm.apply_chat_template(MESSAGES[:2])
    a = llm.generate(prompt, max_tokens=24, temperature=1.0, seed=1)
    assert llm.generate(prompt, max_tokens=24, temperature=1.0, seed=1) == a
    assert llm.generate(prompt, max_tokens=24, temperature=1.0, seed=2) != a


def test_prefix_reuse_computes_only_new_tokens_and_gives_the_same_logits(files):
    llm = AutoGLM(files[1], n_ctx=512, n_threads=2, kv_type="f32")
    first = llm.apply_chat_template(MESSAGES[:2])
    llm.generate(first, max_tokens=1)
    n_first = len(llm.tokenize(first))
    second = first + "<|assistant|>\nok<|user|>\nmore"
    llm.generate(second, max_tokens=1)
    t = llm.last_timings
    assert t["prompt_tokens"] == len(llm.tokenize(second))
    assert t["prompt_tokens_reused"] == n_first
    assert llm.n_past == t["prompt_tokens"]  # the last sampled token is not decoded when nothing reads it
    warm = llm._session.eval_tokens(llm.tokenize(" next"), "last")  # continue from the reused cache
    cold = llm.prompt_logits(second + " next")[-1]
    assert np.abs(warm[0] - cold).max() < 1e-4


def test_stop_strings_are_not_emitted(llm):
    prompt = llm.apply_chat_template(MESSAGES[:2])
    full = llm.generate(prompt, max_tokens=40)
    stop = full[10:13]
    out = llm.generate(prompt, max_tokens=40, stop=[stop, "never-appears"])
    assert out == full[: full.index(stop)] and llm.last_finish_reason == "stop"
    assert "".join(llm.generate(prompt, max_tokens=40, stop=stop, stream=True)) == out


def test_chat_completion_shapes(llm):
    r = llm.create_chat_completion(MESSAGES[:2], max_tokens=8)
    assert r["object"] == "chat.completion" and r["choices"][0]["message"]["role"] == "assistant"
    assert r["choices"][0]["finish_reason"] in ("stop", "length")
    assert r["usage"]["completion_tokens"] <= 8
    chunks = list(llm.create_chat_completion(MESSAGES[:2], max_tokens=8, stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == r["choices"][0]["message"]["content"]


def test_breaking_out_of_a_stream_leaves_the_model_usable(llm):
    prompt = llm.apply_chat_template(MESSAGES[:2])
    expected = llm.generate(prompt, max_tokens=16)
    for i, _ in enumerate(llm.generate(prompt, max_tokens=200, stream=True)):
        if i == 3:
            break
    assert llm.generate(prompt, max_tokens=16) == expected


def test_errors_leave_the_model_usable(llm, files, tmp_path):
    prompt = llm.apply_chat_template(MESSAGES[:2])
    ok = llm.generate(prompt, max_tokens=8)
    with pytest.raises(ContextFullError, match="more than n_ctx"):
        llm.generate("word " * 2000, max_tokens=4)
    with pytest.raises(ValueError, match="top_p"):
        llm.generate(prompt, top_p=1.5)
    with pytest.raises(ValueError, match="temperature"):
        llm.generate(prompt, temperature=-1.0)
    with pytest.raises(AutoGLMError, match="mmproj"):
        llm.create_chat_completion([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]}])
    with pytest.raises(ValueError, match="role 'robot'"):
        llm.apply_chat_template([{"role": "robot", "content": "hi"}])
    assert llm.generate(prompt, max_tokens=8) == ok
    with pytest.raises(GGUFFileError, match="no such model file"):
        AutoGLM(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(files[1].read_bytes()[:5000])
    with pytest.raises(GGUFFileError):
        AutoGLM(junk)


def test_from_pretrained_finds_the_files(files, tmp_path):
    import shutil

    shutil.copy(files[1], tmp_path / "model-F32.gguf")
    llm = AutoGLM.from_pretrained(tmp_path, n_ctx=64)
    assert llm.mmproj_path is None and llm.n_ctx == 64
    shutil.copy(files[1], tmp_path / "other.gguf")
    with pytest.raises(GGUFFileError, match="exactly one"):
        AutoGLM.from_pretrained(tmp_path)


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "autoglm_gguf.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_cli_run_streams_and_reports_timings(files, llm):
    proc = run_cli("run", "-m", str(files[1]), "-p", "Hello", "-n", "12", "-c", "256", "-t", "2")
    assert proc.returncode == 0, proc.stderr
    expected = llm.generate(llm.apply_chat_template([{"role": "user", "content": "Hello"}]), max_tokens=12)
    assert proc.stdout == expected + "\n"
    assert "prompt:" in proc.stderr and "tok/s" in proc.stderr


def test_cli_interactive_two_turns(files):
    proc = run_cli("run", "-m", str(files[1]), "-n", "6", "-c", "256", stdin="hi\nand then?\n/quit\n")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) >= 2
    assert proc.stderr.count("generated:") == 2


def test_cli_run_bad_model_is_a_clean_error(tmp_path):
    proc = run_cli("run", "-m", str(tmp_path / "missing.gguf"), "-p", "hi")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "no such model file" in proc.stderr


def test_load_progress_and_abort(files):
    from autoglm_gguf import _core

    seen = []
    _core.TextModel(str(files[1]), progress=seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    with pytest.raises(KeyboardInterrupt, match="aborted"):
        _core.TextModel(str(files[1]), progress=lambda f: f < 0.5)


def test_gpu_layers_without_a_gpu_backend_run_on_the_cpu_with_a_notice(files):
    from autoglm_gguf import _core

    if any(d["type"] in ("gpu", "igpu") for d in _core.devices()):
        pytest.skip("this build has a GPU backend")
    code = (f"from autoglm_gguf import AutoGLM; llm = AutoGLM({str(files[1])!r}, n_ctx=64, n_gpu_layers=99); "
            "print(llm.generate('[gMASK]<sop><|user|>\\nhi<|assistant|>\\n', max_tokens=3) is not None)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "True"
    assert proc.stderr.count("\n") == 1 and "no GPU backend" in proc.stderr and "running on the CPU" in proc.stderr
    # In-process, the notice is a record of the "autoglm_gguf" logger, where applications route it.
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("autoglm_gguf").addHandler(handler)
    try:
        AutoGLM(files[1], n_ctx=64, n_gpu_layers=99)
    finally:
        logging.getLogger("autoglm_gguf").removeHandler(handler)
    assert [r.levelname for r in records] == ["WARNING"] and "no GPU backend" in records[0].getMessage()


def test_prompt_progress_counts_new_cells_and_can_stop_or_raise(files):
    llm = AutoGLM(files[1], n_ctx=1024, n_batch=8, n_threads=2)
    prompt = "[gMASK]<sop><|user|>\n" + "open the settings app " * 12 + "<|assistant|>\n"
    seen = []
    want = llm.generate(prompt, max_tokens=3, progress=lambda d, t: seen.append((d, t)))
    n = len(llm.tokenize(prompt))
    assert seen == [(i, n) for i in range(0, n, 8)]  # one call per micro-batch, before it runs
    # The cached prefix is not counted again: only the cells after it.
    seen.clear()
    llm.generate(prompt + "ok", max_tokens=3, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[0][0] == 0 and seen[0][1] < n

    llm.reset()
    with pytest.raises(KeyboardInterrupt):
        llm.generate(prompt, max_tokens=3, progress=lambda d, t: d < 16)
    assert llm.n_past == 0

    class Cancelled(Exception):
        pass

    def cancel(d, t):
        raise Cancelled(f"{d}/{t}")

    with pytest.raises(Cancelled, match="0/"):
        llm.generate(prompt, max_tokens=3, progress=cancel)
    assert llm.n_past == 0
    assert llm.generate(prompt, max_tokens=3) == want  # the session is intact


def test_ctrl_c_during_a_long_prompt_stops_it_and_keeps_the_model(files):
    import os
    import signal

    llm = AutoGLM(files[1], n_ctx=4096, n_batch=1, n_threads=2)
    prompt = "[gMASK]<sop><|user|>\n" + "tap the button and swipe up " * 250  # ~3300 tokens, one per micro-batch
    seen = []

    def ctrl_c_once_under_way(done, total):
        # Deterministic whatever the machine's speed: the signal is sent from inside the prefill, after
        # 10 micro-batches, and stops it at that very check.
        seen.append((done, total))
        if done == 10:
            os.kill(os.getpid(), signal.SIGINT)

    # The premise is Python's own Ctrl-C handler: a process started in the background by a
    # non-interactive shell inherits SIGINT ignored, and Python then installs none (seen in a CI run).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            llm.generate(prompt, max_tokens=4, progress=ctrl_c_once_under_way)
    finally:
        signal.signal(signal.SIGINT, previous)
    total = seen[0][1]
    assert total > 3000 and seen == [(i, total) for i in range(11)]  # stopped at the first check after it
    assert llm.n_past == 0  # the interrupted evaluation left nothing half-written in the cache
    assert isinstance(llm.generate("[gMASK]<sop><|user|>\nhi<|assistant|>\n", max_tokens=4), str)
