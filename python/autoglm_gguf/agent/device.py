"""The phone the agent drives: screenshots in, input events out, in screen pixels.

`AdbDevice` runs the `adb` binary (Android platform-tools) with subprocess rather than talking the adb
protocol through a library such as adbutils: the binary is what people who drive a phone already have
and have authorized their phone with, it adds no dependency, and the tests replace it with a fake
(tests/fake_adb.py) first on PATH. The commands are the ones Open-AutoGLM issues, so a phone that works
with it works here: `input tap/swipe/keyevent`, `monkey -p PKG -c android.intent.category.LAUNCHER 1`,
and ADB Keyboard broadcasts for text (`input text` cannot type non-ASCII such as Chinese).

`ReplayDevice` is a dry run: it shows the PNGs of a folder in turn and records what would have been done.
"""

from __future__ import annotations

import abc
import base64
import io
import json
import re
import struct
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import AutoGLMError
from .apps import HOME, describe_package, package_for

ADB_KEYBOARD_IME = "com.android.adbkeyboard/.AdbIME"
ADB_KEYBOARD_HELP = ("install ADB Keyboard (ADBKeyboard.apk from https://github.com/senzhk/ADBKeyBoard): "
                     "`adb install ADBKeyboard.apk`, then `adb shell ime enable " + ADB_KEYBOARD_IME + "`")
PLATFORM_TOOLS_HELP = ("install Android platform-tools (Debian/Ubuntu: `apt install adb`; macOS: "
                       "`brew install android-platform-tools`; or https://developer.android.com/tools/releases/"
                       "platform-tools) and put adb on PATH, or give its path")
DOUBLE_TAP_GAP_S = 0.1  # the two taps must land within Android's double-tap timeout (300 ms)


class DeviceError(AutoGLMError):
    """The phone could not be reached or refused a command; the message says what to do."""


def choose_target(serial: str | None, targets: dict[str, str], no_device: str) -> str:
    """The state of the device to use among `targets` (serial -> state): the one named, else the only
    one. Raises DeviceError when it is missing or the choice is ambiguous."""
    if serial is not None and serial not in targets:
        listed = ", ".join(f"{s} ({st})" if st else s for s, st in targets.items()) or "none"
        raise DeviceError(f"device {serial!r} is not connected; connected: {listed}")
    if serial is None and not targets:
        raise DeviceError(no_device)
    if serial is None and len(targets) > 1:
        raise DeviceError(f"several devices are connected ({', '.join(targets)}): choose one by its serial "
                          "(-s SERIAL on the command line, serial= in Python)")
    return targets[serial] if serial is not None else next(iter(targets.values()))


def run_tool(cmd: list[str], timeout_s: float, install_help: str, *, text: bool = True) -> subprocess.CompletedProcess:
    """Run a phone tool (adb, hdc) and capture its output; a missing tool or a hang is a DeviceError."""
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                              **({"text": True, "encoding": "utf-8", "errors": "replace"} if text else {}))
    except FileNotFoundError:
        raise DeviceError(f"{Path(cmd[0]).name} was not found ({cmd[0]!r}): {install_help}") from None
    except PermissionError:
        raise DeviceError(f"{Path(cmd[0]).name} at {cmd[0]!r} is not executable: {install_help}") from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"`{' '.join(cmd[:6])}` did not answer in {timeout_s:g} s: is the phone still "
                          "connected and unlocked?") from None


@dataclass(frozen=True)
class Screenshot:
    png: bytes
    width: int
    height: int
    sensitive: bool = False  # the screen refused to be captured (a payment or password page): png is black


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header, without decoding it."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", png[16:24])


class Device(abc.ABC):
    """A phone. Coordinates are screen pixels; durations are milliseconds."""

    @abc.abstractmethod
    def screenshot(self) -> Screenshot: ...

    @abc.abstractmethod
    def current_app(self) -> str:
        """The app in front: its name when the app table knows it, "System Home", else its package."""

    @abc.abstractmethod
    def tap(self, x: int, y: int) -> None: ...

    @abc.abstractmethod
    def double_tap(self, x: int, y: int) -> None: ...

    @abc.abstractmethod
    def long_press(self, x: int, y: int, ms: int = 3000) -> None: ...

    @abc.abstractmethod
    def swipe(self, x1: int, y1: int, x2: int, y2: int, ms: int = 1000) -> None: ...

    @abc.abstractmethod
    def type_text(self, text: str) -> None:
        """Replace the text of the focused field with `text`."""

    @abc.abstractmethod
    def back(self) -> None: ...

    @abc.abstractmethod
    def home(self) -> None: ...

    @abc.abstractmethod
    def launch(self, package: str) -> None: ...

    def package_for(self, name: str, extra: Mapping[str, str] | None = None) -> str:
        """What launch() takes for an app name (Android: its package; see apps.package_for)."""
        return package_for(name, extra)


NO_DEVICE = ("no Android device is connected: plug the phone in with USB debugging enabled (Developer "
             "options), then check `adb devices`")
UNAUTHORIZED = ("the phone has not authorized this computer: unlock it and accept the 'Allow USB debugging?' "
                "prompt, then retry")
OFFLINE = "the device is offline: reconnect the cable or run `adb reconnect`"
# What adb prints for a device it cannot use -> what to tell the user instead.
_ADB_FAILURES = (
    ("no devices/emulators found", NO_DEVICE),
    ("more than one device", "several devices are connected: choose one by its serial (see `adb devices`)"),
    ("unauthorized", UNAUTHORIZED),
    ("offline", OFFLINE),
)


class AdbDevice(Device):
    """An Android phone over adb. `serial` picks one of several devices (adb -s); `delay_s` is the pause
    after each action and keyboard step, so the screen has settled before the next screenshot
    (Open-AutoGLM's default is 1 s). The device is checked (`adb devices`) before the first command."""

    def __init__(self, serial: str | None = None, adb: str = "adb", *, delay_s: float = 1.0,
                 timeout_s: float = 30.0, sleep: Callable[[float], None] = time.sleep):
        self.serial, self.adb, self.delay_s, self.timeout_s, self.sleep = serial, adb, delay_s, timeout_s, sleep
        self._checked = False

    # --------------------------------------------------------------------------------- running adb
    def _adb(self, *args: str, text: bool = True, device: bool = True,
             check: bool = True) -> subprocess.CompletedProcess:
        """Run `adb [-s serial] args...` (without -s when not `device`). Failures become DeviceErrors
        (a non-zero exit status too, if `check`)."""
        if device and not self._checked:
            self.check()
        cmd = [self.adb] + (["-s", self.serial] if self.serial and device else []) + list(args)
        proc = run_tool(cmd, self.timeout_s, PLATFORM_TOOLS_HELP, text=text)
        if check and proc.returncode != 0:
            err = proc.stderr if text else proc.stderr.decode("utf-8", "replace")
            raise self._failure(err, cmd)
        return proc

    def _failure(self, stderr: str, cmd: list[str]) -> DeviceError:
        low = stderr.lower()
        if self.serial and "device" in low and "not found" in low:
            return DeviceError(f"device {self.serial!r} is not connected (see `adb devices`)")
        for needle, advice in _ADB_FAILURES:
            if needle in low:
                return DeviceError(advice)
        return DeviceError(f"`{' '.join(cmd)}` failed: {stderr.strip() or 'no message'}")

    def check(self) -> None:
        """Make sure exactly the intended device is there and usable; raises DeviceError saying what to do."""
        out = self._adb("devices", device=False).stdout
        found = dict(re.findall(r"^(\S+)\t(\S+)", out, flags=re.M))  # "serial<TAB>state" lines
        state = choose_target(self.serial, found, NO_DEVICE)
        if state == "unauthorized":
            raise DeviceError(UNAUTHORIZED)
        if state == "offline":
            raise DeviceError(OFFLINE)
        if state != "device":
            raise DeviceError(f"the device is {state!r}, not ready: see `adb devices`")
        self._checked = True

    def _shell(self, *words: str) -> str:
        proc = self._adb("shell", *words)
        return proc.stdout + proc.stderr

    def _settle(self) -> None:
        if self.delay_s > 0:
            self.sleep(self.delay_s)

    # --------------------------------------------------------------------------------- the screen
    def screenshot(self) -> Screenshot:
        # exec-out streams the PNG unaltered (adb shell would translate line endings on some versions).
        png = self._adb("exec-out", "screencap", "-p", text=False).stdout
        try:
            width, height = png_size(png)
        except ValueError:
            # A secure window (FLAG_SECURE) cannot be captured: show the model a black screen of the
            # right size, as Open-AutoGLM does, so it can ask the user to take over.
            width, height = self.screen_size()
            return Screenshot(_black_png(width, height), width, height, sensitive=True)
        return Screenshot(png, width, height)

    def screen_size(self) -> tuple[int, int]:
        out = self._shell("wm", "size")
        sizes = dict(re.findall(r"(Physical|Override) size:\s*(\d+x\d+)", out))
        size = sizes.get("Override") or sizes.get("Physical")
        if not size:
            raise DeviceError(f"cannot read the screen size from `adb shell wm size`: {out.strip()!r}")
        w, h = size.split("x")
        return int(w), int(h)

    def current_package(self) -> str | None:
        out = self._shell("dumpsys", "window")
        for key in ("mCurrentFocus", "mFocusedApp"):  # the focused window first; the app when it is null
            m = re.search(key + r"=.*?\s([A-Za-z][\w.]*)/", out)
            if m:
                return m.group(1)
        return None

    def current_app(self) -> str:
        package = self.current_package()
        return describe_package(package) if package else HOME

    # --------------------------------------------------------------------------------- input
    def tap(self, x: int, y: int) -> None:
        self._shell("input", "tap", str(x), str(y))
        self._settle()

    def double_tap(self, x: int, y: int) -> None:
        self._shell("input", "tap", str(x), str(y))
        self.sleep(DOUBLE_TAP_GAP_S)
        self._shell("input", "tap", str(x), str(y))
        self._settle()

    def long_press(self, x: int, y: int, ms: int = 3000) -> None:
        # A swipe that does not move is a press held for `ms`.
        self._shell("input", "swipe", str(x), str(y), str(x), str(y), str(ms))
        self._settle()

    def swipe(self, x1: int, y1: int, x2: int, y2: int, ms: int = 1000) -> None:
        self._shell("input", "swipe", str(x1), str(y1), str(x2), str(y2), str(ms))
        self._settle()

    def back(self) -> None:
        self._shell("input", "keyevent", "4")
        self._settle()

    def home(self) -> None:
        self._shell("input", "keyevent", "KEYCODE_HOME")
        self._settle()

    def launch(self, package: str) -> None:
        cmd = ("shell", "monkey", "-p", package, "-c", "android.intent.category.LAUNCHER", "1")
        proc = self._adb(*cmd, check=False)
        if "No activities found" in proc.stdout + proc.stderr:  # monkey's answer for a package it cannot start
            raise DeviceError(f"{package} is not installed on the phone (or has no launcher activity)")
        if proc.returncode != 0:
            raise self._failure(proc.stderr, [self.adb, *cmd])
        self._settle()

    def type_text(self, text: str) -> None:
        """Through ADB Keyboard, as Open-AutoGLM does: make it the input method, clear the field, send the
        text base64-encoded (any language, no shell quoting), then give the user's keyboard back."""
        before = self._shell("settings", "get", "secure", "default_input_method").strip()
        switched = before != ADB_KEYBOARD_IME
        if switched:
            self._shell("ime", "set", ADB_KEYBOARD_IME)
            # `ime set` reports an unknown input method on stderr yet exits 0 on some Android versions,
            # so check that the switch happened instead of parsing its message.
            now = self._shell("settings", "get", "secure", "default_input_method").strip()
            if now != ADB_KEYBOARD_IME:
                raise DeviceError(f"typing needs ADB Keyboard on the phone, and it is not installed or not "
                                  f"enabled: {ADB_KEYBOARD_HELP}")
            self._settle()
        try:
            self._shell("am", "broadcast", "-a", "ADB_CLEAR_TEXT")
            self._settle()
            msg = base64.b64encode(text.encode("utf-8")).decode("ascii")
            self._shell("am", "broadcast", "-a", "ADB_INPUT_B64", "--es", "msg", msg)
            self._settle()
        finally:
            if switched and before and before != "null":
                self._shell("ime", "set", before)
                self._settle()


def _black_png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


class ReplayDevice(Device):
    """A dry run over a folder of screenshots: screen i (PNG files sorted by name) is shown after i
    state-changing actions, the last one staying on. Every action is appended to `actions` (and, with
    `log_path`, to a JSON-lines file) as {"action": "tap", "x": ..., "y": ...}."""

    def __init__(self, screens_dir: str | Path, *, log_path: str | Path | None = None, app: str = HOME):
        self.screens = sorted(p for p in Path(screens_dir).glob("*.png") if p.is_file())
        if not self.screens:
            raise DeviceError(f"no PNG screenshots in {screens_dir}")
        self.log_path = Path(log_path) if log_path else None
        self.actions: list[dict] = []
        self._app = app
        self._changes = 0

    def _record(self, action: str, **details) -> None:
        rec = {"action": action, **details}
        self.actions.append(rec)
        self._changes += 1
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    @property
    def screen_index(self) -> int:
        return min(self._changes, len(self.screens) - 1)

    def screenshot(self) -> Screenshot:
        png = self.screens[self.screen_index].read_bytes()
        try:
            width, height = png_size(png)
        except ValueError:
            raise DeviceError(f"{self.screens[self.screen_index]} is not a PNG image") from None
        return Screenshot(png, width, height)

    def current_app(self) -> str:
        return self._app

    def tap(self, x: int, y: int) -> None:
        self._record("tap", x=x, y=y)

    def double_tap(self, x: int, y: int) -> None:
        self._record("double_tap", x=x, y=y)

    def long_press(self, x: int, y: int, ms: int = 3000) -> None:
        self._record("long_press", x=x, y=y, ms=ms)

    def swipe(self, x1: int, y1: int, x2: int, y2: int, ms: int = 1000) -> None:
        self._record("swipe", x1=x1, y1=y1, x2=x2, y2=y2, ms=ms)

    def type_text(self, text: str) -> None:
        self._record("type", text=text)

    def back(self) -> None:
        self._record("back")

    def home(self) -> None:
        self._app = HOME
        self._record("home")

    def launch(self, package: str) -> None:
        self._app = describe_package(package)
        self._record("launch", package=package)
