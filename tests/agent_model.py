"""A tiny GLM-4.1V model that behaves like a phone agent, for tests/test_phone_agent.py (not a test module).

Starting from the random tiny checkpoint (autoglm_gguf._tiny.checkpoint), a short CPU training run with
transformers' Glm4vForConditionalGeneration teaches it two answers to the conversation Open-AutoGLM's
agent (phone-agent 0.1.1) sends while it works through TASK on the fake phone of tests/fake_adb.py:

  step 1 (system prompt; user: screenshot 0 + task + screen info)  -> STEP1, then </answer>
  step 2 (... + the agent's record of step 1; user: screenshot 1 + "** Screen Info **")
                                                                   -> STEP2, then </answer>

`</answer>` is an end-of-generation id of the converted GGUF (autoglm.eog_token_ids), so the runtime
stops there and never returns it. Prompts are rendered and tokenized exactly as the runtime does
(AutoGLM.apply_chat_template, AutoGLM.tokenize, an image slot -> <|begin_of_image|> + n x <|image|> +
<|end_of_image|> for transformers). The system prompt starts with today's date, so training samples
random dates. The trained checkpoint is cached (keyed by this file, the tiny checkpoint's sources, the
screen renderer, the conversation and the torch/transformers versions); GGUFs are converted fresh.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import inspect
import io
import json
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

import fake_adb

TASK = "Turn on Wi-Fi"
SCREEN_SIZE = (216, 480)
STEP1 = '<think>Tap the Wi-Fi switch.</think>\n<answer>do(action="Tap", element=[842,371])'
STEP2 = '<think>Wi-Fi is on now.</think>\n<answer>finish(message="Wi-Fi is on")'
END = "</answer>"
TAP_GRID = (842, 371)  # the element of STEP1, on the agent's 0..999 grid
FINISH_MESSAGE = "Wi-Fi is on"
MARGIN = 5.0  # required logit lead of every target token (penalties at frequency 0.2 stay far below)

_DATE_FORMATS = [  # (regex of the date in the system prompt, how to write another date like it)
    (re.compile(r"\d{4}-\d{2}-\d{2}, [A-Z][a-z]+day"), lambda d: d.strftime("%Y-%m-%d, %A")),
    (re.compile(r"\d{4}年\d{2}月\d{2}日 星期."),
     lambda d: d.strftime("%Y年%m月%d日 ") + "星期" + "一二三四五六日"[d.weekday()]),
]


def with_date(system_prompt: str, day: dt.date) -> str:
    """The system prompt with its date replaced by `day` (unchanged if it holds no known date)."""
    for rx, fmt in _DATE_FORMATS:
        if rx.search(system_prompt):
            return rx.sub(fmt(day).replace("\\", r"\\"), system_prompt, count=1)
    return system_prompt


def split_reply(raw: str) -> tuple[str, str]:
    """(thinking, action) as phone-agent 0.1.1 splits a reply: the action starts at finish(message= or
    else at do(action=; everything before it, stripped, is the thinking."""
    for marker in ("finish(message=", "do(action="):
        if marker in raw:
            thinking, action = raw.split(marker, 1)
            return thinking.strip(), marker + action
    raise ValueError(f"no action in {raw!r}")


def agent_record(raw: str) -> str:
    """What phone-agent 0.1.1 keeps of a reply in its history."""
    thinking, action = split_reply(raw)
    return f"<think>{thinking}</think><answer>{action}</answer>"


def png_data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def messages(step: int, system_prompt: str, screen_info: str, image_url) -> list[dict]:
    """The messages phone-agent 0.1.1 sends at `step` (1 or 2); only the newest user turn keeps its image."""
    def user(text, with_image):
        parts = [{"type": "image_url", "image_url": {"url": image_url}}] if with_image else []
        return {"role": "user", "content": parts + [{"type": "text", "text": text}]}
    msgs = [{"role": "system", "content": system_prompt}, user(f"{TASK}\n\n{screen_info}", step == 1)]
    if step == 2:
        msgs += [{"role": "assistant", "content": agent_record(STEP1)},
                 user(f"** Screen Info **\n\n{screen_info}", True)]
    return msgs


def screens():
    return [fake_adb.render_screen(*SCREEN_SIZE, index=i) for i in (0, 1)]


def cache_key(system_prompt: str, screen_info: str) -> str:
    import torch
    import transformers

    from autoglm_gguf._tiny import checkpoint, tokenizer, weights

    h = hashlib.sha256()
    for mod in (checkpoint, tokenizer, weights):
        h.update(Path(mod.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    h.update(inspect.getsource(fake_adb.render_screen).encode())
    h.update(json.dumps([with_date(system_prompt, dt.date(2000, 1, 1)), screen_info,
                         torch.__version__, transformers.__version__]).encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autoglm-gguf" / "test-models"


def convert(ckpt: Path, out_dir: Path) -> tuple[Path, Path]:
    from autoglm_gguf.convert import ConvertOptions, convert_checkpoint

    text, mmproj = out_dir / "agent-f32.gguf", out_dir / "mmproj-agent-f32.gguf"
    convert_checkpoint(ckpt, ConvertOptions(outfile=text, outtype="f32", mmproj_outfile=mmproj,
                                            mmproj_outtype="f32", progress=False, force=True))
    return text, mmproj


class _Examples:
    """Token ids, pixels and loss positions of both steps for any date, built the runtime's way."""

    def __init__(self, ckpt: Path, work: Path, system_prompt: str, screen_info: str):
        from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

        from autoglm_gguf import AutoGLM

        # The untrained model, for the runtime's tokenizer and chat template only.
        self.llm = AutoGLM(convert(ckpt, work)[0], n_ctx=256)
        self.system_prompt, self.screen_info = system_prompt, screen_info
        self.proc = Glm4vImageProcessorPil.from_pretrained(ckpt)
        self.image_id, self.end_id = (self.llm.tokenize(t) for t in ("<|image|>", END))
        assert len(self.image_id) == 1 and len(self.end_id) == 1
        self.image_id, self.end_id = self.image_id[0], self.end_id[0]
        eog = self.llm._model.eog_ids
        assert self.end_id in eog, f"{END} ({self.end_id}) is not an end-of-generation id {eog}"
        self.pixels = [self.proc(images=[im], return_tensors="pt") for im in screens()]

    def step_ids(self, step: int, day: dt.date) -> tuple[list[int], list[int]]:
        """(prompt ids with the image slot expanded to its <|image|> tokens, target ids) of one step."""
        from autoglm_gguf.vision import BEGIN, IMAGE_SLOT
        from autoglm_gguf.vision import END as EOI

        msgs = messages(step, with_date(self.system_prompt, day), self.screen_info, "x")
        prompt = self.llm.apply_chat_template(msgs)
        before, after = prompt.split(IMAGE_SLOT)  # exactly one image per request
        n_img = int(self.pixels[step - 1]["image_grid_thw"][0].prod()) // 4
        ids = self.llm.tokenize(before + BEGIN) + [self.image_id] * n_img + self.llm.tokenize(EOI + after)
        reply = STEP1 if step == 1 else STEP2
        target = self.llm.tokenize(reply) + [self.end_id]
        assert self.llm.detokenize(target[:-1]) == reply
        return ids, target

    def losses(self, model, day: dt.date):
        """[(cross-entropy, smallest logit lead of a target token)] of both steps. The text both steps
        share (system prompt and date) runs once without gradients and is reused as a KV cache, so
        the backward pass covers only the last ~300 of ~1700 tokens."""
        import copy

        import torch
        import torch.nn.functional as F

        seqs = [self.step_ids(s, day) for s in (1, 2)]
        n_shared = next(i for i, (a, b) in enumerate(zip(seqs[0][0], seqs[1][0])) if a != b)
        with torch.no_grad():
            shared = model(input_ids=torch.tensor([seqs[0][0][:n_shared]]), use_cache=True).past_key_values
        out = []
        for (ids, target), px in zip(seqs, self.pixels):
            full = torch.tensor([ids + target])
            pos, _ = model.model.get_rope_index(full, mm_token_type_ids=(full == self.image_id).long(),
                                                image_grid_thw=px["image_grid_thw"])
            logits = model(input_ids=full[:, n_shared:], position_ids=pos[:, :, n_shared:],
                           past_key_values=copy.deepcopy(shared), pixel_values=px["pixel_values"].float(),
                           image_grid_thw=px["image_grid_thw"]).logits[0, len(ids) - n_shared - 1:-1]
            target = torch.tensor(target)
            others = logits.scatter(1, target[:, None], float("-inf"))
            lead = logits.gather(1, target[:, None])[:, 0] - others.amax(1)
            out.append((F.cross_entropy(logits, target), float(lead.min().detach())))
        return out


def train(ckpt: Path, out: Path, system_prompt: str, screen_info: str, *, max_seconds: float = 120.0,
          log=print) -> dict:
    """Fine-tune the checkpoint in `ckpt` until every target token leads by MARGIN logits on held-out
    dates (or fail after max_seconds), save it to `out` and return the last statistics."""
    import torch
    from transformers import Glm4vForConditionalGeneration

    torch.manual_seed(0)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as work:
        ex = _Examples(ckpt, Path(work), system_prompt, screen_info)
        model = Glm4vForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=6e-3, weight_decay=0.0)
        held_out = [dt.date.today(), dt.date(2031, 7, 15)]
        t0, it, last = time.perf_counter(), 0, {}
        while True:
            it += 1
            day = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(3000))
            loss = sum(v for v, _ in ex.losses(model, day))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if it % 5 == 0:
                with torch.no_grad():
                    model.eval()
                    stats = [r for d in held_out for r in ex.losses(model, d)]
                    model.train()
                margin = min(m for _, m in stats)
                last = {"iterations": it, "seconds": round(time.perf_counter() - t0, 1),
                        "train_loss": float(loss.detach()), "held_out_loss": max(float(v) for v, _ in stats),
                        "min_margin": round(margin, 2)}
                log(f"agent_model: {last}")
                if margin >= MARGIN:
                    break
                if time.perf_counter() - t0 > max_seconds:
                    raise RuntimeError(f"agent model did not converge in {max_seconds:.0f} s: {last}")
        model.eval()
        model.save_pretrained(out)
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                     "generation_config.json", "preprocessor_config.json"):
            shutil.copy(ckpt / name, out / name)
    (out / "training.json").write_text(json.dumps(last))
    return last


def build(system_prompt: str, screen_info: str, out_dir: Path, *, log=print) -> tuple[Path, Path, dict]:
    """The agent model as (text GGUF, mmproj GGUF, training stats), trained or taken from the cache;
    the GGUFs are written to out_dir."""
    import torch

    from autoglm_gguf._tiny.checkpoint import write_checkpoint

    cached = cache_root() / f"phone-agent-{cache_key(system_prompt, screen_info)}"
    if not (cached / "training.json").is_file():
        # One thread: on a shared 2-core machine torch's second thread mostly waits at barriers for a
        # busy core (measured 2-10x slower than one thread under load).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=cached.name + ".", dir=cached.parent))
        try:
            ckpt = write_checkpoint(tmp / "random", dtype="f32", seed=0)
            train(ckpt, tmp / "trained", system_prompt, screen_info, log=log)
            if cached.exists():
                shutil.rmtree(tmp)  # another process won the race: keep its copy
            else:
                os.replace(tmp / "trained", cached)
        finally:
            torch.set_num_threads(threads)
            shutil.rmtree(tmp, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    text, mmproj = convert(cached, out_dir)
    return text, mmproj, json.loads((cached / "training.json").read_text())


def replies(text: Path, mmproj: Path, system_prompt: str, screen_info: str) -> list[str]:
    """The model's greedy answers to both steps, through the in-process API with phone-agent's sampling
    values and data-URL screenshots (as the server would run them)."""
    from autoglm_gguf import AutoGLM

    llm = AutoGLM(text, mmproj_path=mmproj, n_ctx=4096, n_threads=1)
    urls = [png_data_url(im) for im in screens()]
    out = []
    for step in (1, 2):
        r = llm.create_chat_completion(messages(step, system_prompt, screen_info, urls[step - 1]),
                                       temperature=0, top_p=0.85, frequency_penalty=0.2, max_tokens=64)
        out.append(r["choices"][0]["message"]["content"])
        assert r["choices"][0]["finish_reason"] == "stop", r
    return out
