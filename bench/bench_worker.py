"""One runtime, one figure, one process: the unit `compare_llamacpp.py` runs and times.

    python bench/bench_worker.py {ours|llamacpp} {text|image|agent} --model M [--mmproj P] [options]

Prints one JSON object on the last line of stdout. Each figure runs in its own process so that the
parent can read that process's peak RSS (os.wait4) and neither runtime's allocations colour the
other's. Both runtimes get the same file, threads, context, batch and inputs:

- text:  after an unmeasured 8-token warm-up, a random-id prompt of --prompt tokens, then --gen
         greedy tokens (never stopping early); prompt and generation tok/s.
- image: one already-resized RGB image (--image-size WxH, multiples of 28, random pixels) through
         the vision tower and merger; encode seconds only (pre-processing excluded on both sides).
- agent: two Open-AutoGLM steps of one session. Step 1: system prompt + screenshot + instruction ->
         first token (image encode included). Step 2: the history as text
         (Open-AutoGLM drops earlier screenshots), the answer, a new screenshot and instruction ->
         first token. The step-1 answer kept in the history is a fixed text (the same for both).
         Ours goes through AutoGLM (prefix reuse applies); llama.cpp through
         llama-cpp-python's multimodal path, which clears its context for every request.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time

import numpy as np

from autoglm_gguf.bench import agent_prompt, parse_size, random_image, system_prompt
from autoglm_gguf.timing import time_first_token, time_generation, time_image_encode

MEDIA = "<__media__>"  # llama.cpp's mtmd marker; it adds <|begin_of_image|>/<|end_of_image|> itself


# ----------------------------------------------------------------------------------------------- ours

class Ours:
    """Our runtime through its public API; the timing itself is autoglm_gguf.timing's, as `autoglm-gguf bench`."""

    def __init__(self, a):
        self.a = a

    def text(self):
        from autoglm_gguf import AutoGLM

        a = self.a
        t0 = time.perf_counter()
        # The model's own context stays small: each timed run gets a new one of its size.
        llm = AutoGLM(a.model, n_ctx=64, n_batch=a.batch, n_threads=a.threads, n_gpu_layers=a.gpu_layers,
                      kv_type=a.kv, progress=False)
        load = time.perf_counter() - t0
        prompt = np.random.default_rng(0).integers(10, 400, a.prompt).tolist()
        time_generation(llm, prompt[:8], 1)  # warm-up: the 8-token prompt, as llama.cpp's
        t = time_generation(llm, prompt, a.gen)
        return {"load_s": load, "pp_tok_s": t.prompt_tokens_per_s, "tg_tok_s": t.generation_tokens_per_s}

    def image(self):
        from autoglm_gguf.vision import ImageEncoder

        a = self.a
        w, h = parse_size(a.image_size)
        t0 = time.perf_counter()
        enc = ImageEncoder(a.mmproj, n_threads=a.threads, use_gpu=a.gpu_layers > 0,  # no text model: the tower's RSS
                           matmul_type=a.vision_type)
        load = time.perf_counter() - t0
        t = time_image_encode(enc, random_image(w, h, 1), min_pixels=1, max_pixels=2 * w * h)
        patch = enc.hparams["patch_size"]
        assert t.grid_h * patch == h and t.grid_w * patch == w, "the image must need no resize"
        assert np.isfinite(t.embeddings).all()
        # pre-processing excluded, as on llama.cpp's side
        return {"load_s": load, "encode_s": t.encode_s, "image_tokens": t.image_tokens, "patches": t.grid_h * t.grid_w}

    def agent(self):
        from autoglm_gguf import AutoGLM

        a = self.a
        w, h = parse_size(a.image_size)
        t0 = time.perf_counter()
        llm = AutoGLM(a.model, mmproj_path=a.mmproj, n_ctx=a.ctx, n_batch=a.batch, n_threads=a.threads,
                      n_gpu_layers=a.gpu_layers, progress=False, vision_matmul_type=a.vision_type)
        load = time.perf_counter() - t0
        system = system_prompt(llm.tokenize, a.system_tokens)
        res = {"load_s": load}
        for step in range(2):
            prompt = agent_prompt(system, step)
            img = random_image(w, h, 10 + step)
            # The same context both steps: step 2 reuses step 1's prefix, as in a session.
            t = time_first_token(llm, prompt, images=[img], image_max_pixels=2 * w * h)
            res[f"step{step + 1}"] = {"ttft_s": t.seconds, "prompt_tokens": t.prompt_tokens,
                                      "reused_tokens": t.reused_tokens, "image_encode_s": t.image_encode_s,
                                      "prefill_s": t.prompt_s}
        return res


# ------------------------------------------------------------------------------------------ llama.cpp

class LlamaCpp:
    def __init__(self, a):
        import llama_cpp

        self.lc = llama_cpp
        self.a = a
        self.llm = None

    def load(self, n_ctx):
        t0 = time.perf_counter()
        self.llm = self.lc.Llama(self.a.model, n_ctx=n_ctx, n_batch=self.a.batch, n_ubatch=self.a.batch,
                                 n_threads=self.a.threads, n_threads_batch=self.a.threads, verbose=False,
                                 n_gpu_layers=self.a.gpu_layers, flash_attn=True,
                                 type_k=1 if self.a.kv == "f16" else 0, type_v=1 if self.a.kv == "f16" else 0)
        return time.perf_counter() - t0

    def greedy(self):
        n_vocab = self.llm.n_vocab()
        logits = np.ctypeslib.as_array(self.lc.llama_get_logits_ith(self.llm.ctx, -1), shape=(n_vocab,))
        return int(np.argmax(logits))

    def text(self):
        a, lc = self.a, self.lc
        load = self.load(a.prompt + a.gen + 16)
        llm = self.llm
        prompt = np.random.default_rng(0).integers(10, 400, a.prompt).tolist()
        llm.eval(prompt[:8])  # warm-up, as ours
        llm.reset()
        lc.llama_memory_clear(lc.llama_get_memory(llm.ctx), True)
        lc.llama_perf_context_reset(llm.ctx)
        llm.eval(prompt)
        tok = self.greedy()
        for _ in range(a.gen - 1):  # as ours: the last sampled token is not decoded
            llm.eval([tok])
            tok = self.greedy()
        p = lc.llama_perf_context(llm.ctx)
        return {"load_s": load, "pp_tok_s": p.n_p_eval / (p.t_p_eval_ms / 1e3), "tg_tok_s": p.n_eval / (p.t_eval_ms / 1e3)}

    def mtmd_ctx(self):
        from llama_cpp import mtmd_cpp as mtmd

        p = mtmd.mtmd_context_params_default()
        p.use_gpu = self.a.gpu_layers > 0
        p.n_threads = self.a.threads
        p.print_timings = False
        p.flash_attn_type = self.lc.LLAMA_FLASH_ATTN_TYPE_ENABLED
        ctx = mtmd.mtmd_init_from_file(self.a.mmproj.encode(), self.llm.model, p)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not load {self.a.mmproj}")
        return mtmd, ctx

    def tokenize(self, mtmd, ctx, text: str, img: np.ndarray):
        bitmap = mtmd.mtmd_bitmap_init(img.shape[1], img.shape[0],
                                       (ctypes.c_uint8 * img.size).from_buffer_copy(img.tobytes()))
        inp = mtmd.mtmd_input_text()
        raw = text.encode()
        inp.text, inp.text_len, inp.add_special, inp.parse_special = raw, len(raw), False, True
        chunks = mtmd.mtmd_input_chunks_init()
        arr = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        rc = mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), arr, 1)
        mtmd.mtmd_bitmap_free(bitmap)
        if rc != 0:
            raise RuntimeError(f"mtmd_tokenize failed: {rc}")
        return chunks

    def image(self):
        a = self.a
        w, h = parse_size(a.image_size)
        load = self.load(4096)
        t0 = time.perf_counter()
        mtmd, ctx = self.mtmd_ctx()
        load_mm = time.perf_counter() - t0
        chunks = self.tokenize(mtmd, ctx, MEDIA, random_image(w, h, 1))
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                n_tok = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                t0 = time.perf_counter()
                rc = mtmd.mtmd_encode_chunk(ctx, chunk)
                enc = time.perf_counter() - t0
                if rc != 0:
                    raise RuntimeError(f"mtmd_encode_chunk failed: {rc}")
                emb = np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(ctx), shape=(n_tok * self.llm.n_embd(),))
                assert np.isfinite(emb).all()
                break
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_free(ctx)
        return {"load_s": load + load_mm, "encode_s": enc, "image_tokens": n_tok}

    def agent(self):
        """llama-cpp-python's multimodal chat path: clear the context, evaluate every chunk, sample."""
        a, lc = self.a, self.lc
        w, h = parse_size(a.image_size)
        load = self.load(a.ctx)
        mtmd, ctx = self.mtmd_ctx()
        llm = self.llm
        system = system_prompt(lambda s: llm.tokenize(s.encode(), add_bos=False, special=True), a.system_tokens)
        res = {"load_s": load}
        for step in range(2):
            prompt = agent_prompt(system, step, MEDIA)
            img = random_image(w, h, 10 + step)
            t0 = time.perf_counter()
            chunks = self.tokenize(mtmd, ctx, prompt, img)
            llm.reset()
            lc.llama_memory_clear(lc.llama_get_memory(llm.ctx), True)
            n_past = lc.llama_pos(0)
            rc = mtmd.mtmd_helper_eval_chunks(ctx, llm.ctx, chunks, 0, 0, a.batch, True, ctypes.byref(n_past))
            if rc != 0:
                raise RuntimeError(f"mtmd_helper_eval_chunks failed: {rc}")
            n_prompt = mtmd.mtmd_helper_get_n_tokens(chunks)
            mtmd.mtmd_input_chunks_free(chunks)
            self.greedy()
            ttft = time.perf_counter() - t0
            res[f"step{step + 1}"] = {"ttft_s": ttft, "prompt_tokens": n_prompt}
        mtmd.mtmd_free(ctx)
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runtime", choices=["ours", "llamacpp"])
    ap.add_argument("figure", choices=["text", "image", "agent"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--mmproj")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--kv", default="f16", choices=["f16", "f32"])
    ap.add_argument("--image-size", default="1036x2352", help="WxH of the already-resized screenshot")
    ap.add_argument("--system-tokens", type=int, default=1500)
    ap.add_argument("--vision-type", default="auto", help="ours: the tower's matrices' type (file, auto, f32, f16, bf16)")
    a = ap.parse_args()
    runner = Ours(a) if a.runtime == "ours" else LlamaCpp(a)
    res = getattr(runner, a.figure)()
    print(json.dumps(res), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
