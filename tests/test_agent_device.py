"""The agent's phone side: AdbDevice against the fake adb (tests/fake_adb.py, first on PATH), the executor
mapping grid actions to pixels as Open-AutoGLM does, the ask-the-user paths, ReplayDevice, and the errors
people meet (no adb, no phone, several phones, an unauthorized phone, no ADB Keyboard)."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from PIL import Image

import fake_adb
from autoglm_gguf.actions import Action, parse
from autoglm_gguf.agent.apps import UnknownAppError, describe_package, package_for
from autoglm_gguf.agent.device import ADB_KEYBOARD_IME, AdbDevice, DeviceError, ReplayDevice
from autoglm_gguf.agent.executor import execute, swipe_ms, to_pixels

SIZE = (1080, 2400)


@pytest.fixture
def phone(tmp_path, monkeypatch):
    """A fresh fake phone: `adb` first on PATH, its log and state under tmp_path."""
    fake_adb.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.jsonl"))
    monkeypatch.setenv("FAKE_ADB_HOME", str(tmp_path / "phone"))
    monkeypatch.setenv("FAKE_ADB_SIZE", "%dx%d" % SIZE)
    for var in ("FAKE_ADB_SCREENS", "FAKE_ADB_SERIAL", "FAKE_ADB_PACKAGE", "FAKE_ADB_STATE",
                "FAKE_ADB_OTHER_DEVICES", "FAKE_ADB_NO_ADB_KEYBOARD"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "adb.jsonl"


def phone_actions(log_path, keep=("cmd", "x", "y", "x1", "y1", "x2", "y2", "duration_ms", "key", "text",
                                  "package", "ime")):
    """The input the fake phone received (and input-method switches), in order."""
    kinds = fake_adb.ACTIONS | {"ime-set"}
    return [{k: r[k] for k in keep if k in r} for r in fake_adb.read_log(log_path) if r["cmd"] in kinds]


def px(gx, gy, size=SIZE):  # Open-AutoGLM's mapping, written out independently of the executor
    return int(gx / 1000 * size[0]), int(gy / 1000 * size[1])


def test_screenshot_is_the_phones_screen(phone):
    shot = AdbDevice(delay_s=0).screenshot()
    assert (shot.width, shot.height, shot.sensitive) == (*SIZE, False)
    got = Image.open(io.BytesIO(shot.png))
    assert got.size == SIZE and got.convert("RGB").tobytes() == fake_adb.render_screen(*SIZE, index=0).tobytes()
    assert [r["cmd"] for r in fake_adb.read_log(phone)] == ["devices", "screencap"]


def test_unreadable_screen_becomes_a_black_sensitive_screenshot(phone, tmp_path, monkeypatch):
    screens = tmp_path / "secure"
    screens.mkdir()
    (screens / "0.png").write_bytes(b"")  # screencap of a secure window gives no image
    monkeypatch.setenv("FAKE_ADB_SCREENS", str(screens))
    shot = AdbDevice(delay_s=0).screenshot()
    assert (shot.width, shot.height, shot.sensitive) == (*SIZE, True)
    im = Image.open(io.BytesIO(shot.png))
    assert im.size == SIZE and im.getextrema() == ((0, 0), (0, 0), (0, 0))


@pytest.mark.parametrize("package,name", [("com.android.settings", "AndroidSystemSettings"),
                                          ("com.tencent.mm", "微信"), ("com.android.launcher3", "System Home"),
                                          ("org.example.notes", "org.example.notes")])
def test_current_app(phone, monkeypatch, package, name):
    monkeypatch.setenv("FAKE_ADB_PACKAGE", package)
    assert AdbDevice(delay_s=0).current_app() == name


def test_every_action_reaches_the_phone_at_the_right_pixels(phone):
    device = AdbDevice(delay_s=0)
    size = (device.screenshot().width, device.screenshot().height)
    assert size == SIZE
    steps = ['do(action="Tap", element=[500, 320])', 'do(action="Double Tap", element=[100, 900])',
             'do(action="Long Press", element=[999, 999])', 'do(action="Swipe", start=[500,800], end=[500,200])',
             'do(action="Swipe", start=[500,500], end=[520,510])', 'do(action="Type", text="你好 world")',
             'do(action="Back")', 'do(action="Home")', 'do(action="Launch", app="WeChat")',
             'do(action="Launch", app="设置")']
    for step in steps:
        outcome = execute(parse(step), device, size)
        assert (outcome.finished, outcome.success) == (False, True), step
    (tx, ty), (dx, dy), (lx, ly) = px(500, 320), px(100, 900), px(999, 999)
    s1, s2, s3, s4 = px(500, 800), px(500, 200), px(500, 500), px(520, 510)
    assert (tx, ty, lx, ly) == (540, 768, 1078, 2397)
    latin = "com.google.android.inputmethod.latin/com.android.inputmethod.latin.LatinIME"
    assert phone_actions(phone) == [
        {"cmd": "tap", "x": tx, "y": ty},
        {"cmd": "tap", "x": dx, "y": dy}, {"cmd": "tap", "x": dx, "y": dy},
        {"cmd": "swipe", "x1": lx, "y1": ly, "x2": lx, "y2": ly, "duration_ms": 3000},
        {"cmd": "swipe", "x1": s1[0], "y1": s1[1], "x2": s2[0], "y2": s2[1], "duration_ms": 2000},  # long: 2 s
        {"cmd": "swipe", "x1": s3[0], "y1": s3[1], "x2": s4[0], "y2": s4[1], "duration_ms": 1000},  # short: 1 s
        {"cmd": "ime-set", "ime": ADB_KEYBOARD_IME}, {"cmd": "clear-text"},
        {"cmd": "text", "text": "你好 world"}, {"cmd": "ime-set", "ime": latin},
        {"cmd": "keyevent", "key": "4"}, {"cmd": "keyevent", "key": "KEYCODE_HOME"},
        {"cmd": "launch", "package": "com.tencent.mm"}, {"cmd": "launch", "package": "com.android.settings"},
    ]
    log = fake_adb.read_log(phone)
    assert [r["cmd"] for r in log if r["cmd"] == "unknown"] == []
    text = next(r for r in log if r["cmd"] == "text")
    assert text["via"] == "ADB_INPUT_B64" and base64.b64encode("你好 world".encode()).decode() in text["argv"]
    launch = next(r for r in log if r["cmd"] == "launch")
    assert launch["argv"][-5:] == ["-p", "com.tencent.mm", "-c", "android.intent.category.LAUNCHER", "1"]
    assert sum(r["cmd"] == "devices" for r in log) == 1  # checked once, before the first command


def test_typing_when_adb_keyboard_is_already_active_does_not_switch(phone):
    device = AdbDevice(delay_s=0)
    device._shell("ime", "set", ADB_KEYBOARD_IME)
    before = len(phone_actions(phone))
    device.type_text("abc")
    assert phone_actions(phone)[before:] == [{"cmd": "clear-text"}, {"cmd": "text", "text": "abc"}]


def test_each_action_waits_for_the_screen_to_settle(phone):
    slept = []
    device = AdbDevice(delay_s=0.5, sleep=slept.append)
    device.tap(1, 2)
    device.double_tap(3, 4)
    assert slept == [0.5, 0.1, 0.5]


def test_coordinates_are_clamped(phone):
    device = AdbDevice(delay_s=0)
    execute(Action("tap", "Tap", point=(1500, -20)), device, SIZE)  # built by hand: the parser refuses these
    execute(Action("swipe", "Swipe", start=(-5, 2000), end=(999, 999)), device, SIZE)
    assert phone_actions(phone) == [{"cmd": "tap", "x": 1078, "y": 0},
                                    {"cmd": "swipe", "x1": 0, "y1": 2397, "x2": 1078, "y2": 2397,
                                     "duration_ms": 1078 ** 2 // 1000}]
    assert to_pixels((999, 999), (10, 10)) == (9, 9) and to_pixels((1000, 1000), (10, 10)) == (9, 9)
    assert to_pixels((0, 0), SIZE) == (0, 0) and to_pixels((333, 667), (720, 1600)) == px(333, 667, (720, 1600))
    assert swipe_ms(0, 0, 0, 10) == 1000 and swipe_ms(0, 0, 0, 1200) == 1440 and swipe_ms(0, 0, 0, 2000) == 2000


@pytest.mark.parametrize("answer,tapped", [(True, True), (False, False), (None, False)])
def test_sensitive_tap_asks_first(phone, answer, tapped):
    asked = []

    def confirm(message):
        asked.append(message)
        return answer

    action = parse('do(action="Tap", element=[500, 900], message="支付 12.5 元")')
    outcome = execute(action, AdbDevice(delay_s=0), SIZE, confirm=None if answer is None else confirm)
    assert asked == ([] if answer is None else ["支付 12.5 元"])
    taps = [a for a in phone_actions(phone) if a["cmd"] == "tap"]
    assert taps == ([{"cmd": "tap", "x": 540, "y": 2160}] if tapped else [])
    assert outcome.success == tapped and outcome.finished == (not tapped)
    if not tapped:
        assert "支付 12.5 元" in outcome.message and "refused" in outcome.message
        assert ("confirm callback" in outcome.message) == (answer is None)


def test_take_over_calls_back_or_says_the_user_is_needed(phone):
    seen = []
    action = parse('do(action="Take_over", message="请登录")')
    device = AdbDevice(delay_s=0)
    outcome = execute(action, device, SIZE, take_over=seen.append)
    assert seen == ["请登录"] and (outcome.finished, outcome.success) == (False, True)
    outcome = execute(action, device, SIZE)
    assert (outcome.finished, outcome.success) == (True, False) and "user is needed: 请登录" in outcome.message
    assert phone_actions(phone) == []


def test_steps_that_do_not_touch_the_phone(phone):
    slept, device = [], AdbDevice(delay_s=0)

    def run(text):
        return execute(parse(text), device, SIZE, sleep=slept.append)

    assert run('do(action="Wait", duration="2 seconds")') == run('do(action="Wait", duration=2)')
    assert slept == [2.0, 2.0]
    assert run('finish(message="Wi-Fi is on")') == execute(parse('finish(message="Wi-Fi is on")'), device, SIZE)
    assert run('finish(message="Wi-Fi is on")').finished and run('finish(message="x")').message == "x"
    assert not run('do(action="Interact")').finished and "Interact" in run('do(action="Interact")').message
    assert run('do(action="Note", message="price 35")').message == "price 35"
    assert run('do(action="Call_API", instruction="sum up")').message == "sum up"
    unknown = run('do(action="Launch", app="Wechatt")')
    assert (unknown.finished, unknown.success) == (False, False) and "'WeChat'" in unknown.message
    assert phone_actions(phone) == [] and fake_adb.read_log(phone) == []


def test_launch_names_from_an_extra_table(phone):
    execute(parse('do(action="Launch", app="My Notes")'), AdbDevice(delay_s=0), SIZE,
            apps={"my notes": "org.example.notes"})
    assert phone_actions(phone) == [{"cmd": "launch", "package": "org.example.notes"}]


def test_app_table():
    assert package_for("微信") == package_for("wechat") == package_for("WeChat") == "com.tencent.mm"
    assert package_for("google maps") == package_for("Google-Maps") == "com.google.android.apps.maps"
    assert package_for("支付宝") == "com.eg.android.AlipayGphone" and package_for("Chrome") == "com.android.chrome"
    assert package_for("com.example.app") == "com.example.app"  # a package name is launched as it is
    with pytest.raises(UnknownAppError, match="'抖音'"):
        package_for("抖因")
    with pytest.raises(UnknownAppError, match="package name instead"):
        package_for("Flappy Cat")
    assert describe_package("com.tencent.mm") == "微信" and describe_package("com.miui.home") == "System Home"


def test_replay_device_serves_screens_in_turn_and_records(tmp_path):
    screens = tmp_path / "screens"
    screens.mkdir()
    for i, size in enumerate([(100, 200), (110, 220), (120, 240)]):
        Image.new("RGB", size, (i, i, i)).save(screens / f"{i:02d}.png")
    (screens / "notes.txt").write_text("ignored")
    log = tmp_path / "actions.jsonl"
    device = ReplayDevice(screens, log_path=log)
    sizes = [(device.screenshot().width, device.screenshot().height)]
    for step in ('do(action="Tap", element=[500, 500])', 'do(action="Wait", duration="0")',
                 'do(action="Launch", app="微信")', 'do(action="Type", text="hi")', 'do(action="Home")'):
        execute(parse(step), device, sizes[-1], sleep=lambda s: None)
        sizes.append((device.screenshot().width, device.screenshot().height))
        if "Launch" in step:
            assert device.current_app() == "微信"
    assert sizes == [(100, 200), (110, 220), (110, 220), (120, 240), (120, 240), (120, 240)]
    assert device.current_app() == "System Home"
    expected = [{"action": "tap", "x": 50, "y": 100}, {"action": "launch", "package": "com.tencent.mm"},
                {"action": "type", "text": "hi"}, {"action": "home"}]
    assert device.actions == expected
    assert [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] == expected
    with pytest.raises(DeviceError, match="no PNG screenshots"):
        ReplayDevice(tmp_path / "actions-only")


# ------------------------------------------------------------------------------------------ errors
def test_adb_not_installed(phone, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DeviceError, match="adb was not found.*platform-tools"):
        AdbDevice(delay_s=0).screenshot()
    with pytest.raises(DeviceError, match="adb was not found"):
        AdbDevice(adb=str(tmp_path / "no" / "adb")).tap(1, 1)


def test_wrong_serial_names_the_connected_devices(phone):
    with pytest.raises(DeviceError, match=r"'wrong-serial' is not connected; connected: emulator-5554 \(device\)"):
        AdbDevice("wrong-serial", delay_s=0).tap(1, 1)
    AdbDevice("emulator-5554", delay_s=0).tap(1, 1)
    taps = [r for r in fake_adb.read_log(phone) if r["cmd"] == "tap"]
    assert len(taps) == 1 and taps[0]["argv"][:2] == ["-s", "emulator-5554"]


def test_no_device(phone, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_STATE", "none")
    with pytest.raises(DeviceError, match="no Android device is connected.*USB debugging"):
        AdbDevice(delay_s=0).current_app()


def test_several_devices_need_a_serial(phone, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_OTHER_DEVICES", "emulator-5556")
    with pytest.raises(DeviceError, match=r"several devices are connected \(emulator-5554, emulator-5556\)"):
        AdbDevice(delay_s=0).tap(1, 1)
    AdbDevice("emulator-5554", delay_s=0).tap(1, 1)
    assert phone_actions(phone) == [{"cmd": "tap", "x": 1, "y": 1}]


def test_unauthorized_device(phone, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_STATE", "unauthorized")
    with pytest.raises(DeviceError, match="accept the 'Allow USB debugging\\?' prompt"):
        AdbDevice(delay_s=0).screenshot()


def test_adb_failures_after_the_check_are_explained(phone, monkeypatch):
    device = AdbDevice(delay_s=0)
    device.tap(1, 1)
    monkeypatch.setenv("FAKE_ADB_STATE", "unauthorized")  # the phone revoked its authorization meanwhile
    with pytest.raises(DeviceError, match="Allow USB debugging"):
        device.tap(2, 2)
    monkeypatch.setenv("FAKE_ADB_STATE", "offline")
    with pytest.raises(DeviceError, match="offline"):
        device.back()
    assert phone_actions(phone) == [{"cmd": "tap", "x": 1, "y": 1}]


def test_typing_without_adb_keyboard_says_how_to_install_it(phone, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_NO_ADB_KEYBOARD", "1")
    with pytest.raises(DeviceError, match="ADB Keyboard.*adb install ADBKeyboard.apk"):
        execute(parse('do(action="Type", text="hello")'), AdbDevice(delay_s=0), SIZE)
    cmds = [r["cmd"] for r in fake_adb.read_log(phone)]
    assert "text" not in cmds and "clear-text" not in cmds
