"""A HarmonyOS phone over `hdc` (OpenHarmony Device Connector), behind the same Device interface as adb.

The commands are those HarmonyOS documents for its UI test tool and ability manager, and the ones
Open-AutoGLM issues, so a phone that works with it works here:
- targets: `hdc list targets` (one serial per line, "[Empty]" when none);
- screenshot: `hdc shell screenshot /data/local/tmp/autoglm_screen.jpeg` (older systems:
  `snapshot_display -f PATH`), then `hdc file recv PATH LOCAL`; the JPEG is re-encoded as PNG for the
  model (the conversation carries PNG) without resizing;
- front app: `hdc shell aa dump -l`, the mission whose state is FOREGROUND;
- input: `uitest uiInput click|doubleClick|longClick X Y`, `swipe X1 Y1 X2 Y2 MS`, `keyEvent Back|Home`,
  `text TEXT` (HarmonyOS types any script this way, no keyboard app needed);
- launch: `aa start -b BUNDLE -a ABILITY` (ability "EntryAbility" unless the table says otherwise).

App names map to HarmonyOS bundle names, which differ from Android packages, through HARMONY_APPS
below (a bundle name such as com.example.app is used as given).
"""

from __future__ import annotations

import io
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .apps import _PACKAGE_NAME, HOME, UnknownAppError, _key
from .device import Device, DeviceError, Screenshot, _black_png, choose_target, run_tool

HDC_HELP = ("install the HarmonyOS SDK's toolchains (DevEco Studio, or the command-line tools) and put hdc "
            "on PATH, or give its path")
NO_HDC_DEVICE = ("no HarmonyOS device is connected: enable USB debugging in Developer options, connect the "
                 "phone, accept the debugging prompt, then check `hdc list targets`")
REMOTE_SHOT = "/data/local/tmp/autoglm_screen.jpeg"
DEFAULT_ABILITY = "EntryAbility"

#: (bundle, ability or None for EntryAbility, names...). Bundle ids are HarmonyOS facts.
_HARMONY_ROWS: tuple[tuple, ...] = (
    ("com.huawei.hmos.settings", "com.huawei.hmos.settings.MainAbility", "设置", "系统设置", "Settings"),
    ("com.huawei.hmos.camera", "com.huawei.hmos.camera.MainAbility", "相机", "Camera"),
    ("com.huawei.hmos.photos", "MainAbility", "图库", "相册", "Gallery", "Photos"),
    ("com.huawei.hmos.clock", "com.huawei.hmos.clock.phone", "时钟", "Clock"),
    ("com.huawei.hmos.calendar", "MainAbility", "日历", "Calendar"),
    ("com.huawei.hmos.calculator", "com.huawei.hmos.calculator.CalculatorAbility", "计算器", "Calculator"),
    ("com.huawei.hmos.browser", "MainAbility", "浏览器", "Browser"),
    ("com.huawei.hmos.notepad", "MainAbility", "备忘录", "笔记", "Notes"),
    ("com.ohos.contacts", "com.ohos.contacts.MainAbility", "联系人", "通讯录", "Contacts"),
    ("com.ohos.mms", "com.ohos.mms.MainAbility", "信息", "短信", "Messages"),
    ("com.tencent.wechat", None, "微信", "WeChat"),
    ("com.tencent.mqq", None, "QQ"),
    ("com.taobao.taobao4hmos", "Taobao_mainAbility", "淘宝", "Taobao"),
    ("com.jd.hm.mall", None, "京东", "JD"),
    ("com.xingin.xhs_hos", None, "小红书", "Xiaohongshu", "RED"),
    ("com.amap.hmapp", None, "高德地图", "Amap"),
    ("com.sankuai.hmeituan", None, "美团", "Meituan"),
    ("com.ss.hm.ugc.aweme", "MainAbility", "抖音", "Douyin"),
    ("yylx.danmaku.bili", None, "哔哩哔哩", "bilibili"),
    ("com.alipay.mobile.client", None, "支付宝", "Alipay"),
)

HARMONY_APPS: dict[str, str] = {name: row[0] for row in _HARMONY_ROWS for name in row[2:]}
_ABILITY: dict[str, str] = {row[0]: row[1] for row in _HARMONY_ROWS if row[1]}
_NAME_OF: dict[str, str] = {row[0]: row[2] for row in _HARMONY_ROWS}


def parse_foreground_bundle(dump: str) -> str | None:
    """The bundle of the FOREGROUND mission in `aa dump -l` output (missions start at "Mission ID")."""
    bundle = None
    for line in dump.splitlines():
        if "Mission ID" in line:
            bundle = None
        m = re.search(r"(?:app|bundle) name \[([^\]]+)\]", line)
        if m:
            bundle = m.group(1)
        if re.search(r"\bstate #FOREGROUND", line, flags=re.I) and bundle:
            return bundle
    return None


class HdcDevice(Device):
    """A HarmonyOS phone over hdc. `serial` picks one of several (hdc -t); `delay_s` is the pause after
    each action so the screen settles before the next screenshot."""

    def __init__(self, serial: str | None = None, hdc: str = "hdc", *, delay_s: float = 1.0,
                 timeout_s: float = 30.0, sleep: Callable[[float], None] = time.sleep):
        self.serial, self.hdc, self.delay_s, self.timeout_s, self.sleep = serial, hdc, delay_s, timeout_s, sleep
        self._checked = False
        self._last_size: tuple[int, int] | None = None

    def _run(self, *args: str, device: bool = True) -> str:
        if device and not self._checked:
            self.check()
        cmd = [self.hdc] + (["-t", self.serial] if self.serial and device else []) + list(args)
        proc = run_tool(cmd, self.timeout_s, HDC_HELP)
        out = proc.stdout + proc.stderr
        # hdc reports most failures in its output with exit status 0 ("[Fail]...").
        if proc.returncode != 0 or out.lstrip().startswith("[Fail]"):
            low = out.lower()
            if "not found" in low and ("device" in low or "connect key" in low):
                raise DeviceError(NO_HDC_DEVICE if not self.serial else
                                  f"device {self.serial!r} is not connected (see `hdc list targets`)")
            if "unauthorized" in low:
                raise DeviceError("the phone has not authorized this computer: unlock it and accept the USB "
                                  "debugging prompt, then retry")
            raise DeviceError(f"`{' '.join(cmd)}` failed: {out.strip() or 'no message'}")
        return out

    def check(self) -> None:
        out = self._run("list", "targets", device=False)
        targets = {t: "" for t in (line.strip() for line in out.splitlines()) if t and t != "[Empty]"}
        choose_target(self.serial, targets, NO_HDC_DEVICE)
        self._checked = True

    def _shell(self, *words: str) -> str:
        return self._run("shell", *words)

    def _settle(self) -> None:
        if self.delay_s > 0:
            self.sleep(self.delay_s)

    def _ui(self, *words: str) -> None:
        self._shell("uitest", "uiInput", *words)
        self._settle()

    # --------------------------------------------------------------------------------- the screen
    def screenshot(self) -> Screenshot:
        from PIL import Image

        out = self._shell("screenshot", REMOTE_SHOT)
        if re.search(r"fail|error|not found", out, flags=re.I):
            out = self._shell("snapshot_display", "-f", REMOTE_SHOT)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "screen.jpeg"
            if not re.search(r"fail|error", out, flags=re.I):
                self._run("file", "recv", REMOTE_SHOT, str(local))
            try:
                with Image.open(local) as im:
                    im.load()
                    rgb = im.convert("RGB")
            except OSError:
                # A secure page refuses capture: a black screen of the right size, so the model can
                # ask the user to take over (as with adb).
                try:
                    width, height = self.screen_size()
                except DeviceError:
                    width, height = self._last_size or (1080, 2400)
                return Screenshot(_black_png(width, height), width, height, sensitive=True)
        buf = io.BytesIO()
        rgb.save(buf, format="PNG")
        self._last_size = rgb.size
        return Screenshot(buf.getvalue(), rgb.width, rgb.height)

    def screen_size(self) -> tuple[int, int]:
        out = self._shell("hidumper", "-s", "RenderService", "-a", "screen")
        m = re.search(r"(?:render|physical) resolution=(\d+)x(\d+)", out) or re.search(r"(\d{3,5})x(\d{3,5})", out)
        if not m:
            raise DeviceError(f"cannot read the screen size from `hdc shell hidumper`: {out.strip()[:200]!r}")
        return int(m.group(1)), int(m.group(2))

    def current_app(self) -> str:
        bundle = parse_foreground_bundle(self._shell("aa", "dump", "-l"))
        if not bundle or bundle.endswith(".launcher") or bundle == "com.huawei.hmos.launcher":
            return HOME
        return _NAME_OF.get(bundle, bundle)

    # --------------------------------------------------------------------------------- input
    def tap(self, x: int, y: int) -> None:
        self._ui("click", str(x), str(y))

    def double_tap(self, x: int, y: int) -> None:
        self._ui("doubleClick", str(x), str(y))

    def long_press(self, x: int, y: int, ms: int = 3000) -> None:
        self._ui("longClick", str(x), str(y))

    def swipe(self, x1: int, y1: int, x2: int, y2: int, ms: int = 1000) -> None:
        self._ui("swipe", str(x1), str(y1), str(x2), str(y2), str(ms))

    def type_text(self, text: str) -> None:
        # One `text` per line; Enter (key code 2054) between lines.
        for i, line in enumerate(text.split("\n")):
            if i:
                self._ui("keyEvent", "2054")
            if line:
                self._ui("text", line)

    def back(self) -> None:
        self._ui("keyEvent", "Back")

    def home(self) -> None:
        self._ui("keyEvent", "Home")

    def package_for(self, name: str, extra: Mapping[str, str] | None = None) -> str:
        """The bundle for an app name (HARMONY_APPS, `extra` first), or a bundle name given as is."""
        key = _key(name)
        for table in (extra or {}, HARMONY_APPS):
            for app, bundle in table.items():
                if _key(app) == key:
                    return bundle
        if _PACKAGE_NAME.match(name.strip()):  # bundle ids look like Android packages
            return name.strip()
        close = [n for n in HARMONY_APPS if key and (key in _key(n) or _key(n) in key)][:5]
        raise UnknownAppError(name, close)

    def launch(self, package: str) -> None:
        self._shell("aa", "start", "-b", package, "-a", _ABILITY.get(package, DEFAULT_ABILITY))
        self._settle()
