"""PhoneAgent's loop with scripted answers on a dry-run device: the conversation it keeps (Open-AutoGLM's
format), callbacks, and how it ends. The real model end to end is in test_phone_agent.py."""

from __future__ import annotations

import pytest

from autoglm_gguf.agent import PhoneAgent, ReplayDevice
from autoglm_gguf.agent import conversation as conv
from autoglm_gguf.errors import AutoGLMError


class Scripted:
    """A ModelBackend that answers from a list and keeps what it was sent."""

    def __init__(self, answers):
        self.answers, self.sent = list(answers), []

    def reply(self, messages, on_piece):
        self.sent.append([dict(m) for m in messages])
        text = self.answers.pop(0)
        for i in range(0, len(text), 7):
            on_piece(text[i:i + 7])
        return text, {"ttft_ms": 1.0}


@pytest.fixture
def screens(tmp_path):
    from PIL import Image

    d = tmp_path / "screens"
    d.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (200, 400), colour).save(d / f"{i}.png")
    return d


def images_in(message) -> int:
    c = message["content"]
    return sum(p["type"] == "image_url" for p in c) if isinstance(c, list) else 0


def test_conversation_is_open_autoglms(screens):
    model = Scripted(['<think>tap it</think>\n<answer>do(action="Tap", element=[500,250])',
                      '<think>type</think><answer>do(action="Swipe", start=[500,800], end=[500,200])',
                      'finish(message="done")'])
    pieces = []
    dev = ReplayDevice(screens, app="Settings")
    result = PhoneAgent(model, dev, system_prompt="SYS", on_piece=pieces.append, sleep=lambda s: None).run("Do it")
    assert result.finished and result.message == "done" and len(result.steps) == 3
    assert "".join(pieces) == "".join(s.raw for s in result.steps)
    first, second, third = model.sent
    assert [m["role"] for m in first] == ["system", "user"] and first[0]["content"] == "SYS"
    assert first[1]["content"][1]["text"] == 'Do it\n\n{"current_app": "Settings"}'
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [images_in(m) for m in third] == [0, 0, 0, 0, 0, 1]  # only the newest screenshot is sent
    assert third[5]["content"][1]["text"] == '** Screen Info **\n\n{"current_app": "Settings"}'
    # The answer is kept as Open-AutoGLM's client keeps it: thinking = everything before the call.
    assert third[2]["content"] == ('<think><think>tap it</think>\n<answer></think>'
                                   '<answer>do(action="Tap", element=[500,250])</answer>')
    # Actions at int(v / 1000 * size) of each screenshot, then the replay moved on.
    assert [a["action"] for a in dev.actions] == ["tap", "swipe"]
    assert (dev.actions[0]["x"], dev.actions[0]["y"]) == (100, 100)
    assert [s.screen_size for s in result.steps] == [(200, 400)] * 3


def test_sensitive_taps_ask_and_unparsed_answers_end_the_task(screens):
    sensitive = 'do(action="Tap", element=[10,10], message="pay 5 EUR")'
    asked = []
    agent = PhoneAgent(Scripted([sensitive]), ReplayDevice(screens), system_prompt="S",
                       confirm=lambda msg: asked.append(msg) or False, sleep=lambda s: None)
    result = agent.run("buy")
    assert asked == ["pay 5 EUR"] and result.finished and not result.steps[0].outcome.success
    assert agent.device.actions == []  # refused: nothing was tapped
    agent = PhoneAgent(Scripted(["I think I should tap somewhere"]), ReplayDevice(screens), system_prompt="S")
    result = agent.run("x")
    assert result.finished and result.steps[0].action is None and "no valid action" in result.message
    agent = PhoneAgent(Scripted(['do(action="Back")'] * 3), ReplayDevice(screens), system_prompt="S",
                       max_steps=3, sleep=lambda s: None)
    result = agent.run("x")
    assert not result.finished and "3 steps" in result.message and len(agent.device.actions) == 3


def test_system_prompt_sources(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("mine", encoding="utf-8")
    assert conv.system_prompt("en", str(f)) == "mine"
    with pytest.raises(AutoGLMError, match="cannot read the system prompt file"):
        conv.system_prompt("en", str(tmp_path / "missing.txt"))
    with pytest.raises(AutoGLMError, match="--lang"):
        conv.system_prompt("fr")
    # Without phone-agent (Python < 3.12 here) the built-in prompt names every action and the grid.
    if conv.openautoglm_system_prompt("en") is None:
        text = conv.system_prompt("en")
        for action in ("Launch", "Tap", "Type", "Swipe", "Long Press", "Double Tap", "Back", "Home", "Wait",
                       "Take_over", "Note", "Call_API", "Interact", "finish("):
            assert action in text
        assert "0-999" in text and "今天" in conv.system_prompt("cn")


def test_trace_report_draws_each_action(screens, tmp_path):
    import base64
    import io
    import re

    from PIL import Image

    from autoglm_gguf.agent.trace import MARK, TraceWriter

    answers = ['<think>tap <b>it</b></think><answer>do(action="Tap", element=[500,250])',
               'do(action="Swipe", start=[500,800], end=[500,200])', 'finish(message="all done")']
    trace = TraceWriter(tmp_path / "trace", "Do <it>")
    result = PhoneAgent(Scripted(answers), ReplayDevice(screens), system_prompt="S", trace=trace,
                        sleep=lambda s: None).run("Do <it>")
    page = trace.path.read_text(encoding="utf-8")
    assert page.count("<section>") == 3 and "finished after 3 step(s): all done" in page
    assert "tap &lt;b&gt;it&lt;/b&gt;" in page and "<h1>Do &lt;it&gt;</h1>" in page  # text is escaped
    pngs = [Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")
            for b in re.findall(r"src='data:image/png;base64,([^']+)'", page)]
    assert [im.size for im in pngs] == [(200, 400)] * 3
    assert pngs[0].getpixel((100, 100)) == MARK                    # the tap, at int(v / 1000 * size)
    assert pngs[1].getpixel((100, 200)) == MARK                    # on the swipe's line
    assert pngs[2].getpixel((100, 100)) == (0, 0, 255)             # finish draws nothing
    assert result.finished
