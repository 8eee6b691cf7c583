"""Grammar-constrained generation: the native constraint hook, the agent's answer grammar (every valid
action form accepted, malformed ones refused), and random-weight models whose answers always parse
with the grammar and (almost) never without it."""

from __future__ import annotations

import collections
import random

import numpy as np
import pytest

from autoglm_gguf import AutoGLM
from autoglm_gguf.actions import ACTION_KINDS, parse_answer
from autoglm_gguf.agent import PhoneAgent, ReplayDevice
from autoglm_gguf.agent.answer_grammar import answer_grammar, thinking_budget
from autoglm_gguf.agent.backends import _tags_are_special
from autoglm_gguf.grammar import Constraint, GrammarError, check_grammar, tokenizer_for


@pytest.fixture(scope="module")
def llm(tiny_f32_files):
    text, mmproj = tiny_f32_files
    return AutoGLM(text, mmproj_path=mmproj, n_ctx=4096, seed=7)


@pytest.fixture(scope="module")
def lltok(llm):
    return tokenizer_for(llm._model)


def prompt_of(llm, text="Open Settings"):
    return llm.apply_chat_template([{"role": "user", "content": text}])


# ------------------------------------------------------------------------------------------ the hook
class OnlyThese:
    """Allows one scripted token per step; reports completion after the last."""

    def __init__(self, ids):
        self.ids, self.seen = list(ids), []

    def fill_mask(self, address, n_bytes):
        words = np.frombuffer((np.ctypeslib.ctypes.c_char * n_bytes).from_address(address), dtype=np.uint32)
        assert not words.any(), "the mask must arrive zeroed"
        t = self.ids[len(self.seen)]
        words[t // 32] |= np.uint32(1 << (t % 32))

    def accept(self, token):
        self.seen.append(token)
        return len(self.seen) < len(self.ids)


def test_constraint_hook_forces_tokens_and_stops_when_complete(llm):
    ids = llm.tokenize("Wi-Fi on", special=False)
    c = OnlyThese(ids)
    gen = llm._pieces(prompt_of(llm), max_tokens=50, stop=None, seed=1, sampling={"temperature": 1.0})
    free = "".join(gen)
    import autoglm_gguf._core as core

    g = core.Generator(llm._session, llm.tokenize(prompt_of(llm)), core.SamplingParams(temperature=1.0, seed=1),
                       max_tokens=50, constraint=c)
    out = b"".join(g)
    assert out.decode() == "Wi-Fi on" != free
    assert c.seen == ids and list(g.generated) == ids
    assert g.finish_reason == "stop"  # complete, not the 50-token limit


def test_constraint_errors_surface_clearly(llm):
    import autoglm_gguf._core as core

    class Raises(OnlyThese):
        def accept(self, token):
            raise KeyError("from the constraint")

    class AllowsNothing(OnlyThese):
        def fill_mask(self, address, n_bytes):
            pass

    ids = llm.tokenize(prompt_of(llm))
    params = core.SamplingParams(seed=1)
    with pytest.raises(KeyError, match="from the constraint"):
        list(core.Generator(llm._session, ids, params, constraint=Raises([5])))
    with pytest.raises(ValueError, match="grammar allows no token"):
        "".join(llm._drain(core.Generator(llm._session, ids, params, constraint=AllowsNothing([5]))))
    # the session still works afterwards
    assert isinstance(llm.generate(prompt_of(llm), max_tokens=3), str)


def test_bad_grammars_are_refused():
    with pytest.raises(GrammarError, match="does not compile"):
        check_grammar("start: undefined_rule")
    check_grammar(answer_grammar())


# ------------------------------------------------------------------------------------------ the answer grammar
VALID = [
    'do(action="Launch", app="微信")',
    'do(action="Tap", element=[500,320])',
    'do(action="Tap", element=[0, 999], message="Pay 30 yuan")',
    'do(action="Type", text="hello \\"world\\"\\n")',
    'do(action="Type_Name", text="张三")',
    'do(action="Swipe", start=[500,800], end=[500,200])',
    'do(action="Long Press", element=[10,20])',
    'do(action="Double Tap", element=[999,0])',
    'do(action="Back")',
    'do(action="Home")',
    'do(action="Interact")',
    'do(action="Wait", duration="2 seconds")',
    'do(action="Wait")',
    'do(action="Take_over", message="Log in, please")',
    'do(action="Note", message="True")',
    'do(action="Call_API", instruction="Summarize the page")',
    'finish(message="Wi-Fi is on")',
]
INVALID = [
    'do(action="Tap", element=[1000,5])',      # off the grid
    'do(action="Tap", element=[012,5])',       # not a Python integer
    'do(action="Fly", element=[1,2])',         # not an action
    'do(action="Tap")',                        # missing element
    'do(action="Wait", duration="90 seconds")',
    'do(action="Launch", app=" ")',
    'do(action="Type", text="a\\qb")',         # an escape Python does not read as intended
    'finish(message="x") do(action="Back")',
]


def matches(llm, lltok, answer: str, *, budget: int = 64) -> bool:
    import llguidance

    text = f"<think>Look at the screen.</think>\n<answer>{answer}"
    ids = llm.tokenize(text, special=True)
    m = llguidance.LLMatcher(lltok, answer_grammar(max_thinking_tokens=budget), log_level=0)
    return m.validate_tokens(ids) == len(ids) and m.consume_tokens(ids) and m.is_accepting()


@pytest.mark.parametrize("answer", VALID)
def test_answer_grammar_accepts_every_action_form(llm, lltok, answer):
    assert parse_answer(f"<think>x</think><answer>{answer}").parsed is not None  # the parser agrees
    assert matches(llm, lltok, answer)


@pytest.mark.parametrize("answer", INVALID)
def test_answer_grammar_refuses_malformed_actions(llm, lltok, answer):
    assert not matches(llm, lltok, answer)


def test_thinking_cannot_contain_an_action_marker(llm, lltok):
    import llguidance

    ids = llm.tokenize('<think>I will do(action="Back") now', special=True)
    m = llguidance.LLMatcher(lltok, answer_grammar(), log_level=0)
    assert m.validate_tokens(ids) < len(ids)


def test_every_random_walk_through_the_grammar_parses(llm, lltok):
    """Uniformly random allowed tokens (the worst model there is): every answer parses, every action kind
    is reached, and the thinking budget holds."""
    rng = random.Random(0)
    n = llm.n_vocab
    kinds, lengths = collections.Counter(), []
    grammar = answer_grammar(max_thinking_tokens=24, max_string_chars=16)
    for _ in range(400):
        c = Constraint(lltok, grammar)
        mask = np.zeros((n + 31) // 32, dtype=np.uint32)
        out = []
        while True:
            mask[:] = 0
            c.fill_mask(mask.ctypes.data, mask.nbytes)
            allowed = np.flatnonzero(np.unpackbits(mask.view(np.uint8), bitorder="little")[:n])
            t = int(rng.choice(list(allowed)))
            if t in llm._model.eog_ids:
                break
            out.append(t)
            if not c.accept(t):
                break
        text = llm.detokenize(out)
        parsed = parse_answer(text)
        assert parsed.parsed is not None, (text, parsed.error)
        kinds[parsed.parsed.kind] += 1
        lengths.append(len(out))
    assert set(kinds) == set(ACTION_KINDS.values()) | {"finish"}
    assert max(lengths) <= 24 + 4 * 16 + 64


# ------------------------------------------------------------------------------------------ with a model
def test_random_model_answers_always_parse_with_the_grammar(llm, capsys):
    """Random weights: with the grammar every answer parses; without it, count what happens."""
    assert _tags_are_special(llm)
    max_tokens = 400
    grammar = answer_grammar(max_thinking_tokens=thinking_budget(max_tokens, 40), max_string_chars=40)
    prompt = prompt_of(llm, "打开设置并开启Wi-Fi")
    counts = {"grammar": 0, "free": 0}
    n = 30
    per_token = []
    for seed in range(n):
        sampling = {"temperature": 1.0 if seed % 2 else 0.0, "top_p": 0.85 if seed % 2 else 1.0, "seed": seed}
        out = llm.generate(prompt, max_tokens=max_tokens, grammar=grammar, **sampling)
        assert llm.last_finish_reason == "stop"
        counts["grammar"] += parse_answer(out).parsed is not None
        per_token.append(llm.last_timings["grammar_ms_per_token"])
        free = llm.generate(prompt, max_tokens=max_tokens, **sampling)
        counts["free"] += parse_answer(free).parsed is not None
    with capsys.disabled():
        print(f"\n  random-weight model, {n} answers: parsed {counts['grammar']}/{n} with the grammar, "
              f"{counts['free']}/{n} without; grammar cost {np.median(per_token):.3f} ms/token (median)")
    assert counts["grammar"] == n
    assert counts["free"] < n


def test_agent_on_a_random_model_never_stops_on_an_unparsable_answer(llm, tmp_path):
    from PIL import Image

    d = tmp_path / "screens"
    d.mkdir()
    for i in range(3):
        Image.new("RGB", (180, 320), (40 * i, 90, 200)).save(d / f"{i}.png")
    device = ReplayDevice(d)
    agent = PhoneAgent(llm, device, system_prompt="You operate a phone.", max_steps=12, sleep=lambda s: None,
                       confirm=lambda m: False)
    agent.backend.max_tokens = 200
    agent.backend.grammar = answer_grammar(max_thinking_tokens=thinking_budget(200, 20), max_string_chars=20)
    agent.messages = []
    for i in range(12):
        step = agent.step("Open Settings" if i == 0 else None)
        assert step.action is not None, step.parse_error
        assert step.timings["grammar_ms"] >= 0
