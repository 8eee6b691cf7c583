"""The action parser (autoglm_gguf.actions): every action Open-AutoGLM defines parses to a typed Action,
malformed or out-of-range ones give a ValueError naming the problem, whole model answers split into
thinking and action, nothing is evaluated, and the dict form the server's /predict returns is kept."""

from __future__ import annotations

import pytest

from autoglm_gguf.actions import Action, parse, parse_action, parse_answer, split_answer, to_action

# (model text, expected fields of the Action)
EVERY_ACTION = [
    ('do(action="Launch", app="微信")', dict(kind="launch", name="Launch", app="微信")),
    ('do(action="Tap", element=[500, 320])', dict(kind="tap", point=(500, 320))),
    ('do(action="Tap", element=[120,940], message="Pay 35.00 yuan")',
     dict(kind="tap", point=(120, 940), message="Pay 35.00 yuan")),
    ('do(action="Type", text="Hello World")', dict(kind="type", name="Type", text="Hello World")),
    ('do(action="Type_Name", text="张三")', dict(kind="type", name="Type_Name", text="张三")),
    ('do(action="Swipe", start=[500,800], end=[500,200])', dict(kind="swipe", start=(500, 800), end=(500, 200))),
    ('do(action="Long Press", element=[10, 20])', dict(kind="long_press", point=(10, 20))),
    ('do(action="Double Tap", element=[999, 0])', dict(kind="double_tap", point=(999, 0))),
    ('do(action="Back")', dict(kind="back")),
    ('do(action="Home")', dict(kind="home")),
    ('do(action="Wait", duration="2 seconds")', dict(kind="wait", duration_s=2.0)),
    ('do(action="Take_over", message="Please log in")', dict(kind="take_over", message="Please log in")),
    ('do(action="Note", message="True")', dict(kind="note", message="True")),
    ('do(action="Call_API", instruction="summarize the reviews")',
     dict(kind="call_api", instruction="summarize the reviews")),
    ('do(action="Interact")', dict(kind="interact")),
    ('finish(message="已打开WLAN")', dict(kind="finish", name="finish", message="已打开WLAN")),
    ('finish()', dict(kind="finish", message=None)),
]


@pytest.mark.parametrize("text,expected", EVERY_ACTION, ids=[t for t, _ in EVERY_ACTION])
def test_every_action_parses_to_typed_fields(text, expected):
    action = parse(text)
    for key, value in expected.items():
        assert getattr(action, key) == value, key
    unset = {"point", "start", "end", "text", "app", "message", "instruction", "duration_s"} - set(expected)
    assert all(getattr(action, f) is None for f in unset), action
    assert action.sensitive == (action.kind == "tap" and action.message is not None)


@pytest.mark.parametrize("text,expected", EVERY_ACTION, ids=[t for t, _ in EVERY_ACTION])
def test_to_call_round_trips(text, expected):
    action = parse(text)
    assert parse(action.to_call()) == action
    assert parse_action(action.to_call()) == parse_action(text)  # the dict form too: same words, same values


def test_action_names_are_matched_loosely_but_kept_as_written():
    for name in ("Long Press", "long_press", "LONG-PRESS", " long  press "):
        action = parse(f'do(action="{name}", element=[1, 2])')
        assert (action.kind, action.name, action.point) == ("long_press", name, (1, 2))
    assert parse('do(action="take_over")').kind == "take_over"


@pytest.mark.parametrize("duration,seconds", [("2 seconds", 2.0), ("1 second", 1.0), ("0.5 seconds", 0.5),
                                              ("3s", 3.0), ("4", 4.0), (5, 5.0), (1.5, 1.5), ("2秒", 2.0)])
def test_wait_durations(duration, seconds):
    assert parse(f"do(action=\"Wait\", duration={duration!r})").duration_s == seconds


def test_wait_without_duration_is_one_second():
    assert parse('do(action="Wait")').duration_s == 1.0


def test_grid_edges_and_numbers():
    assert parse('do(action="Tap", element=[1000, 1000])').point == (999, 999)  # the far edge stays on screen
    assert parse('do(action="Tap", element=[0, 0])').point == (0, 0)
    assert parse('do(action="Tap", element=[500.4, 319.6])').point == (500, 320)
    assert parse('do(action="Tap", element=(7, 8))').point == (7, 8)


@pytest.mark.parametrize("text,problem", [
    ('do(action="Fly", element=[1, 2])', "unknown action 'Fly'"),
    ('do(action="Tap")', "Tap needs element"),
    ('do(action="Tap", element=[500])', "Tap element must be [x, y]"),
    ('do(action="Tap", element="500,320")', "Tap element must be [x, y]"),
    ('do(action="Tap", element=[1200, 5])', "Tap element x=1200 is outside the 0..999 grid"),
    ('do(action="Tap", element=[5, -1])', "Tap element y=-1 is outside the 0..999 grid"),
    ('do(action="Tap", element=["a", 1])', "Tap element x must be a number"),
    ('do(action="Tap", element=[True, 1])', "Tap element x must be a number"),
    ('do(action="Tap", element=[1, 2], message=3)', "Tap message must be a string"),
    ('do(action="Tap", element=[1, 2], duration="1 seconds")', "Tap does not take duration"),
    ('do(action="Swipe", start=[1, 2])', "Swipe needs end"),
    ('do(action="Swipe", start=[1, 2], end=[3])', "Swipe end must be [x, y]"),
    ('do(action="Type", text=5)', "Type text must be a string, got int"),
    ('do(action="Type")', "Type needs text"),
    ('do(action="Launch", app="  ")', "Launch app must not be empty"),
    ('do(action="Wait", duration="soon")', 'duration must be like "2 seconds"'),
    ('do(action="Wait", duration="120 seconds")', "duration 120 s is outside 0..60 seconds"),
    ('do(action="Wait", duration=-1)', "outside 0..60 seconds"),
    ('do(action="Back", element=[1, 2])', "Back does not take element (it takes no arguments)"),
    ('do(action=3)', 'do(...) needs action="..."'),
    ('do(element=[1, 2])', 'do(...) needs action="..."'),
    ('do("Tap", element=[1, 2])', "keyword arguments only"),
    ('do(action="Tap", element=[1, 2], action="Back")', "argument 'action' is given twice"),
    ('do(action="Tap", element=f(1))', "argument 'element' is not a literal"),
    ('do(action="Tap", element=[1+1, 2])', "argument 'element' is not a literal"),
    ('do(**{"action": "Back"})', "**kwargs are not allowed"),
    ('tap(500, 320)', "expected do(...) or finish(...)"),
    ('do(action="Tap", element=[1, 2]', "not a call expression"),
    ("", "no action"),
])
def test_bad_actions_name_the_problem(text, problem):
    with pytest.raises(ValueError) as e:
        parse(text)
    assert problem in str(e.value)
    out = parse_answer(f"<think>hmm</think><answer>{text}</answer>")
    assert out.action is None and out.parsed is None and problem in out.error


def test_nothing_is_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    for text in (f'do(action=__import__("os").system("touch {marker}"))',
                 f'do(action="Type", text=open("{marker}", "w").write("x"))',
                 f'__import__("os").system("touch {marker}")'):
        with pytest.raises(ValueError):
            parse(text)
    assert not marker.exists()


# Answers as AutoGLM-Phone writes them (thinking, then the action in <answer>; the server's stop strings
# may or may not have cut the closing tag).
ANSWERS = [
    ("<think>The search results are below; scroll up.</think>\n"
     '<answer>do(action="Swipe", start=[500,800], end=[500,200])</answer>',
     "The search results are below; scroll up.", Action("swipe", "Swipe", start=(500, 800), end=(500, 200))),
    ('<think>\n打开设置，找到WLAN开关。\n</think>\n<answer>do(action="Tap", element=[842, 371])',
     "打开设置，找到WLAN开关。", Action("tap", "Tap", point=(842, 371))),
    ('<think>需要输入收件人</think><answer>do(action="Type", text="第一行\n第二行")</answer>',
     "需要输入收件人", Action("type", "Type", text="第一行\n第二行")),
    ('<think>Done.</think><answer>finish(message="Wi-Fi is on. 已打开。")</answer>',
     "Done.", Action("finish", "finish", message="Wi-Fi is on. 已打开。")),
    ('I will go back first. do(action="Back")', "I will go back first.", Action("back", "Back")),
    ('<think>付款需确认</think><answer>do(action="Tap", element=[500, 900], message="支付 12.5 元")</answer>',
     "付款需确认", Action("tap", "Tap", point=(500, 900), message="支付 12.5 元")),
    ("<think>A quote inside: \"x\".</think><answer>do(action=\"Type\", text='say \"hi\"')</answer>",
     'A quote inside: "x".', Action("type", "Type", text='say "hi"')),
]


@pytest.mark.parametrize("answer,thinking,action", ANSWERS)
def test_realistic_answers(answer, thinking, action):
    out = parse_answer(answer)
    assert out.error is None, out.error
    assert out.thinking == thinking
    assert out.parsed == action
    assert parse(answer) == action
    assert out.action["_metadata"] == ("finish" if action.kind == "finish" else "do")
    assert out.action.get("action") == (None if action.kind == "finish" else action.name)
    assert to_action(out.action) == action


def test_predict_dict_form_is_kept():
    """The server's /predict returns the call as the model wrote it: {"_metadata", **kwargs}."""
    out = parse_answer('<think>tap it</think><answer>do(action="Tap", element=[500, 320])</answer>')
    assert out.action == {"_metadata": "do", "action": "Tap", "element": [500, 320]}
    assert out.action_text == 'do(action="Tap", element=[500, 320])' and out.thinking == "tap it"
    assert parse_answer('finish(message="ok")').action == {"_metadata": "finish", "message": "ok"}
    bad = parse_answer("<think>no idea</think>")
    assert bad.action is None and bad.error


def test_split_answer_takes_the_first_call():
    assert split_answer('<think>a</think><answer>do(action="Back")</answer>') == ("a", 'do(action="Back")')
    assert split_answer("<think>only thoughts</think><answer>\n</answer>") == ("only thoughts", "")
    assert split_answer('finish(message="x") then do(action="Back")')[1].startswith("finish(")


def test_raw_dict_is_not_part_of_equality():
    assert parse('do(action="Tap", element=[1, 2])') == Action("tap", "Tap", point=(1, 2))
    assert parse('do(action="Tap", element=[1, 2])').raw == {"_metadata": "do", "action": "Tap", "element": [1, 2]}
