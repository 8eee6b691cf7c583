"""Smoke tests of the benchmark commands on the tiny model (speed itself is never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autoglm_gguf import _core, cli, op_count
from autoglm_gguf.bench import agent_prompt, random_image, system_prompt

REPO = Path(__file__).resolve().parents[1]


def test_bench_cli_json(tiny_checkpoint, convert_tiny, capsys):
    text, mmproj = convert_tiny(tiny_checkpoint, "f32")
    rc = cli.main(["bench", "-m", str(text), "--mmproj", str(mmproj), "-p", "48", "-n", "6", "-r", "2",
                   "--image", "300x500", "--image-max-pixels", "200000", "--system-tokens", "64", "-t", "1", "--json"])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    tests = {r["test"]: r for r in rows}
    assert list(tests) == ["pp48", "tg6", "image 300x500", "agent step ttft", "peak RSS"]
    for r in rows:
        assert r["mean"] > 0 and r["stddev"] >= 0 and r["threads"] == 1
    assert tests["pp48"]["reps"] == 2 and tests["peak RSS"]["unit"] == "MiB"
    # arithmetic rate against this machine's peak: a kernel cannot pass the instruction throughput
    for name in ("pp48", "image 300x500"):
        r = tests[name]
        assert r["gops"] > 0 and 0 < r["share_of_peak"] < 1 and r["peak_gops"] > 0, r
    assert tests["pp48"]["cpu_variant"] == _core.cpu_variant() and tests["pp48"]["clock_ghz"] > 0
    # decode: the weights read per second against the cores' measured read bandwidth (a tiny model's
    # weights stay in cache, so its share may pass 1)
    tg = tests["tg6"]
    assert tg["weight_gb_s"] == pytest.approx(op_count.decode_weight_bytes(str(text)) * tg["mean"] / 1e9, rel=0.01)
    assert tg["read_bw_gb_s"] > 0 and tg["share_of_read_bw"] == pytest.approx(tg["weight_gb_s"] / tg["read_bw_gb_s"],
                                                                              rel=0.01)
    # the default (auto): BF16 where this CPU computes BF16 matrices, else the test tower's file type
    auto = _core.VisionModel(str(mmproj), n_threads=1, use_gpu=False, matmul_type="auto").matmul_type
    assert auto in ("bf16", "f32")
    assert tests["image 300x500"]["matrices"] == auto
    rc = cli.main(["bench", "-m", str(text), "--mmproj", str(mmproj), "-p", "0", "-n", "0", "-r", "1", "--image",
                   "64x64", "--system-tokens", "8", "-t", "1", "--vision-type", "bf16", "--json"])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert next(r for r in rows if r["test"] == "image 64x64")["matrices"] == "bf16"
    h, w = _core.smart_resize(500, 300, max_pixels=200000)
    assert tests["image 300x500"]["image_tokens"] == (h // 28) * (w // 28) == np.prod(tests["image 300x500"]["grid"])
    assert tests["agent step ttft"]["prompt_tokens"] > 64 + 88


def test_bench_cli_table_and_errors(tiny_checkpoint, convert_tiny, capsys):
    text, _ = convert_tiny(tiny_checkpoint, "f32")
    assert cli.main(["bench", "-m", str(text), "-p", "16", "-n", "4", "-r", "1"]) == 0
    out = capsys.readouterr().out
    assert "| pp16 |" in out and "| tg4 |" in out and "image" not in out
    assert "of the read bandwidth" in next(line for line in out.splitlines() if line.startswith("| tg4 |"))
    assert cli.main(["bench", "-m", str(text), "--image", "64x64", "-r", "1", "-p", "0", "-n", "0"]) == 1
    assert "--mmproj" in capsys.readouterr().err
    assert cli.main(["bench", "-m", str(text), "-r", "0"]) == 1
    assert cli.main(["bench", "-m", str(text) + ".missing"]) == 1
    assert "no such model file" in capsys.readouterr().err


def test_agent_prompt_layout():
    tok = lambda s: s.split()
    system = system_prompt(tok, 50)
    assert len(tok(system)) == 50
    p0, p1 = agent_prompt(system, 0), agent_prompt(system, 1, "<M>")
    assert p0.count("<|image|>") == 1 and p1.count("<M>") == 1 and "<|image|>" not in p1
    # step 2 repeats step 1's text without its screenshot, then the fixed answer
    assert p1.startswith(p0.split("<|user|>")[0]) and p1.index("<M>") > p1.index("</answer>")
    img = random_image(57, 31, 3)
    assert img.shape == (31, 57, 3) and img.dtype == np.uint8


@pytest.mark.llamacpp
def test_compare_llamacpp_smoke(tiny_checkpoint, convert_tiny, tmp_path):
    """The side-by-side harness end to end on the tiny files, both runtimes, one repetition."""
    text, mmproj = convert_tiny(tiny_checkpoint, "f32")
    out = tmp_path / "cmp.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "compare_llamacpp.py"), "--model", str(text), "--mmproj",
                    str(mmproj), "--threads", "1", "--reps", "1", "--figures", "tg0,pp512,image,agent,bandwidth",
                    "--image-size", "224x280", "--system-tokens", "64", "--json", str(out)],
                   check=True, capture_output=True, timeout=600)
    res = json.loads(out.read_text())
    F = res["figures"]
    for name in ("generation, context 0", "prompt processing, 512", "image encode", "agent step 1, first token",
                 "agent step 2, first token", "agent session, peak RSS"):
        assert F[name]["ours"] > 0 and F[name]["llamacpp"] > 0 and F[name]["ratio"] > 0, name
    assert F["image encode"]["image_tokens"] == (224 // 28) * (280 // 28)
    a_ours, a_lc = res["raw"]["agent"]["ours"][0], res["raw"]["agent"]["llamacpp"][0]
    # both runtimes saw the same prompts; ours reused the step-1 prefix in step 2
    assert a_ours["step1"]["prompt_tokens"] == a_lc["step1"]["prompt_tokens"]
    assert a_ours["step2"]["prompt_tokens"] == a_lc["step2"]["prompt_tokens"]
    assert a_ours["step2"]["reused_tokens"] > 64
    assert 0 < res["bandwidth"]["ours"]["fraction_of_copy_bw"]
    assert res["bandwidth"]["read_bw_gb_s"] > 0 and 0 < res["bandwidth"]["llamacpp"]["fraction_of_read_bw"]


def test_random_rows_do_not_depend_on_chunking():
    from autoglm_gguf._tiny.weights import random_rows

    shape = (150, 7)
    whole = random_rows("layers.0.w", shape, "w", 0, 150, seed=3)
    parts = np.concatenate([random_rows("layers.0.w", shape, "w", a, b, seed=3) for a, b in [(0, 37), (37, 64), (64, 150)]])
    assert whole.dtype == np.float32 and whole.shape == shape and np.array_equal(whole, parts)
    assert not np.array_equal(whole, random_rows("layers.1.w", shape, "w", 0, 150, seed=3))
    assert 0.015 < whole.std() < 0.025  # N(0, 0.02)
    assert (random_rows("lm_head.weight", shape, "w", 0, 150, zero_rows_from=100)[100:] == 0).all()


@pytest.mark.llamacpp
def test_make_synthetic_writes_ggufs_with_real_special_ids(tmp_path):
    """make_synthetic's GGUF mode: both runtimes load the files, and GLM-4's added tokens sit at their
    real ids (<|image|> = 151343) in a 151,552-entry vocabulary."""
    import llama_cpp

    subprocess.run([sys.executable, str(REPO / "bench" / "make_synthetic.py"), str(tmp_path), "--preset", "tiny-vocab"],
                   check=True, capture_output=True, timeout=300)
    text = tmp_path / "GLM4V-tiny-vocab-synthetic-Q4_0.gguf"
    mmproj = tmp_path / "mmproj-GLM4V-tiny-vocab-synthetic-F16.gguf"
    model = _core.TextModel(str(text), n_threads=1)
    assert model.hparams["n_vocab"] == 151552
    prompt = "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>hi<|assistant|>"
    ids = model.tokenize(prompt)
    assert ids[:2] == [151331, 151333] and 151343 in ids and 151339 in ids and 151340 in ids
    assert set(model.eog_ids) >= {151329, 151336, 151338}
    llm = llama_cpp.Llama(str(text), n_ctx=64, verbose=False)
    assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == ids
    llm.close()
    vm = _core.VisionModel(str(mmproj), n_threads=1)
    assert vm.hparams["n_out"] == model.hparams["n_embd"]
