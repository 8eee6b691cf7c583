"""HdcDevice (HarmonyOS) against the fake hdc (tests/fake_hdc.py, first on PATH): every action reaches the
phone with the right pixels, apps launch by HarmonyOS bundle, the front app is read back, the JPEG
screenshot arrives as PNG at full size, and a missing tool or phone is a clear error."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

import fake_hdc
from autoglm_gguf.actions import parse
from autoglm_gguf.agent import HdcDevice, PhoneAgent
from autoglm_gguf.agent.apps import UnknownAppError
from autoglm_gguf.agent.device import DeviceError
from autoglm_gguf.agent.executor import execute
from autoglm_gguf.agent.hdc import parse_foreground_bundle

SIZE = (1260, 2720)


@pytest.fixture
def phone(tmp_path, monkeypatch):
    fake_hdc.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_HDC_LOG", str(tmp_path / "hdc.jsonl"))
    monkeypatch.setenv("FAKE_HDC_SIZE", "%dx%d" % SIZE)
    monkeypatch.delenv("FAKE_HDC_STATE", raising=False)
    monkeypatch.delenv("FAKE_HDC_SERIAL", raising=False)
    return tmp_path / "hdc.jsonl"


def inputs(log):
    out = []
    for r in fake_hdc.read_log(log):
        if r["cmd"] == "uiInput":
            out.append([r["kind"], *r["args"]])
        elif r["cmd"] == "aa-start":
            out.append(["start", r["bundle"], r["ability"]])
    return out


def test_screenshot_is_a_full_size_png_and_the_front_app_is_named(phone):
    dev = HdcDevice(delay_s=0)
    shot = dev.screenshot()
    assert shot.png[:8] == b"\x89PNG\r\n\x1a\n" and (shot.width, shot.height) == SIZE
    assert Image.open(io.BytesIO(shot.png)).size == SIZE
    assert dev.current_app() == "System Home"
    dev.launch(dev.package_for("设置"))
    assert dev.current_app() == "设置"
    dev.launch(dev.package_for("com.example.notes"))
    assert dev.current_app() == "com.example.notes"


def test_every_action_reaches_the_phone_in_pixels(phone):
    dev = HdcDevice(delay_s=0)
    size = SIZE
    for call in ['do(action="Tap", element=[500,500])', 'do(action="Double Tap", element=[100,200])',
                 'do(action="Long Press", element=[999,0])', 'do(action="Swipe", start=[500,800], end=[500,200])',
                 'do(action="Type", text="你好\\nworld")', 'do(action="Back")', 'do(action="Home")',
                 'do(action="Launch", app="微信")', 'do(action="Launch", app="Settings")']:
        outcome = execute(parse(call), dev, size, sleep=lambda s: None)
        assert outcome.success, (call, outcome)
    assert inputs(phone) == [
        ["click", "630", "1360"], ["doubleClick", "126", "544"], ["longClick", "1258", "0"],
        ["swipe", "630", "2176", "630", "544", "2000"],
        ["text", "你好"], ["keyEvent", "2054"], ["text", "world"],
        ["keyEvent", "Back"], ["keyEvent", "Home"],
        ["start", "com.tencent.wechat", "EntryAbility"],
        ["start", "com.huawei.hmos.settings", "com.huawei.hmos.settings.MainAbility"],
    ]


def test_unknown_app_is_not_fatal(phone):
    dev = HdcDevice(delay_s=0)
    with pytest.raises(UnknownAppError):
        dev.package_for("No Such App")
    outcome = execute(parse('do(action="Launch", app="No Such App")'), dev, SIZE)
    assert not outcome.finished and not outcome.success and "unknown app" in outcome.message


def test_agent_runs_a_task_on_the_harmonyos_phone(phone):
    class Scripted:
        def __init__(self, answers):
            self.answers = list(answers)

        def reply(self, messages, on_piece):
            return self.answers.pop(0), {"ttft_ms": 1.0}

    agent = PhoneAgent(Scripted(['<think>Open it.</think><answer>do(action="Launch", app="设置")',
                                 '<think>Tap Wi-Fi.</think><answer>do(action="Tap", element=[842,371])',
                                 '<think>Done.</think><answer>finish(message="Wi-Fi is on")']),
                       HdcDevice(delay_s=0), system_prompt="sys", sleep=lambda s: None)
    result = agent.run("打开设置并开启Wi-Fi")
    assert result.finished and result.message == "Wi-Fi is on"
    assert '"current_app": "设置"' in agent.messages[3]["content"][-1]["text"]  # step 2 saw the launched app
    assert inputs(phone)[-1] == ["click", str(int(842 / 1000 * SIZE[0])), str(int(371 / 1000 * SIZE[1]))]


def test_missing_phone_and_missing_hdc_are_clear_errors(phone, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_HDC_STATE", "none")
    with pytest.raises(DeviceError, match="no HarmonyOS device is connected"):
        HdcDevice(delay_s=0).screenshot()
    monkeypatch.setenv("FAKE_HDC_STATE", "device")
    with pytest.raises(DeviceError, match="'XYZ' is not connected; connected: FMR0223C13000649"):
        HdcDevice("XYZ", delay_s=0).tap(1, 1)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DeviceError, match="hdc was not found"):
        HdcDevice(delay_s=0).check()


def test_foreground_parsing():
    dump = ("Mission ID #1\n app name [com.a]\n state #BACKGROUND\n"
            "Mission ID #2\n bundle name [com.b]\n state #FOREGROUND\n")
    assert parse_foreground_bundle(dump) == "com.b"
    assert parse_foreground_bundle("Mission ID #1\n app name [com.a]\n state #BACKGROUND\n") is None
