#!/usr/bin/env python3
"""A fake `adb` for end-to-end tests of phone agents: one pretend Android phone, no device needed.

It answers the commands a phone agent such as Open-AutoGLM's `phone_agent` issues (devices, version,
screenshots, the focused window, input events, ADB-keyboard text broadcasts, app launches, IME
queries) and appends one JSON line per invocation to a log, so a test can check exactly which
actions reached the "phone" and at which pixels.

Environment:
  FAKE_ADB_LOG     JSON-lines log, one record per invocation: {"cmd": kind, ...details, "argv": [...]}
  FAKE_ADB_HOME    the phone's state (state.json, sdcard/); default: beside the log, else a temp dir
  FAKE_ADB_SIZE    screen size WxH of the generated screenshots (default 216x480)
  FAKE_ADB_SCREENS a directory of PNG files to serve instead; screen i (sorted by name) is shown
                   after i state-changing actions, the last one staying on
  FAKE_ADB_SERIAL  the device serial (default emulator-5554)
  FAKE_ADB_PACKAGE the package in focus at start (default com.android.settings)
  FAKE_ADB_STATE   what `adb devices` says of the phone: device (default), unauthorized, offline, or
                   none (not connected); commands for a phone that is not "device" fail as adb's do
  FAKE_ADB_OTHER_DEVICES  comma-separated serials of more (listed only) devices: a command without -s
                   then fails with adb's "more than one device/emulator"
  FAKE_ADB_NO_ADB_KEYBOARD  set to 1: ADB Keyboard is not installed (`ime set` to it is refused, its
                   broadcasts reach nobody)

Generated screens: screen 0 is a settings page with its Wi-Fi switch off; after one action, screen
1 shows the switch on. `render_screen` is importable, so a test can use the exact same pixels.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

ACTIONS = frozenset({"tap", "swipe", "keyevent", "text", "clear-text", "launch"})
#: adb commands that need a device (the others talk to the adb server only).
DEVICE_COMMANDS = frozenset({"shell", "exec-out", "pull", "push", "install", "tcpip", "reboot",
                             "wait-for-device"})
LAUNCHER = "com.android.launcher3"
ADB_IME = "com.android.adbkeyboard/.AdbIME"
DEFAULT_IME = "com.google.android.inputmethod.latin/com.android.inputmethod.latin.LatinIME"
#: Where the Wi-Fi switch of the generated screen is, as fractions of the width and height.
SWITCH_AT = (0.842, 0.371)


def render_screen(width: int = 216, height: int = 480, index: int = 0):
    """A plausible phone screenshot (PIL RGB image): status bar, title bar, a settings list with a
    Wi-Fi switch (off on screen 0, on from screen 1), navigation bar. Deterministic."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (width, height), (246, 246, 250))
    d = ImageDraw.Draw(im)
    u = height / 480
    d.rectangle([0, 0, width, int(22 * u)], fill=(30, 30, 36))                 # status bar
    d.rectangle([int(width * 0.78), int(7 * u), int(width * 0.9), int(15 * u)], fill=(220, 220, 220))
    d.rectangle([0, int(22 * u), width, int(70 * u)], fill=(36, 98, 206))      # title bar
    d.rectangle([int(width * 0.06), int(38 * u), int(width * 0.5), int(54 * u)], fill=(236, 242, 255))
    rows = [(0.25, (255, 160, 60)), (0.371, (52, 168, 83)), (0.49, (156, 39, 176)),
            (0.61, (3, 169, 244)), (0.73, (244, 67, 54))]
    for i, (fy, icon) in enumerate(rows):
        cy, r = int(fy * height), int(14 * u)
        d.rectangle([0, cy - int(24 * u), width, cy + int(24 * u)], fill=(255, 255, 255))
        d.line([0, cy + int(24 * u), width, cy + int(24 * u)], fill=(225, 225, 230))
        d.ellipse([int(width * 0.05), cy - r, int(width * 0.05) + 2 * r, cy + r], fill=icon)
        d.rectangle([int(width * 0.22), cy - int(5 * u), int(width * (0.62 - 0.05 * i)), cy + int(5 * u)],
                    fill=(60, 60, 70))
    on = index >= 1
    sx, sy = int(SWITCH_AT[0] * width), int(SWITCH_AT[1] * height)
    w, h = int(0.16 * width), int(18 * u)
    d.rounded_rectangle([sx - w // 2, sy - h // 2, sx + w // 2, sy + h // 2], radius=h // 2,
                        fill=(52, 168, 83) if on else (189, 189, 189))
    kx = sx + w // 2 - h // 2 if on else sx - w // 2 + h // 2
    d.ellipse([kx - h // 2 + 2, sy - h // 2 + 2, kx + h // 2 - 2, sy + h // 2 - 2], fill=(255, 255, 255))
    if on:  # a confirmation banner
        d.rectangle([int(width * 0.08), int(0.86 * height), int(width * 0.92), int(0.92 * height)],
                    fill=(50, 50, 56))
    d.rectangle([0, height - int(30 * u), width, height], fill=(20, 20, 24))   # navigation bar
    for fx in (0.25, 0.5, 0.75):
        cx, cy = int(fx * width), height - int(15 * u)
        r = int(5 * u)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(200, 200, 200))
    return im


class Phone:
    def __init__(self) -> None:
        log = os.environ.get("FAKE_ADB_LOG")
        self.log = Path(log) if log else None
        home = os.environ.get("FAKE_ADB_HOME") or (str(self.log.parent / "fake-adb-home") if self.log
                                                   else os.path.join(tempfile.gettempdir(), "fake-adb-home"))
        self.home = Path(home)
        (self.home / "sdcard").mkdir(parents=True, exist_ok=True)
        self.serial = os.environ.get("FAKE_ADB_SERIAL", "emulator-5554")
        w, _, h = os.environ.get("FAKE_ADB_SIZE", "216x480").partition("x")
        self.size = (int(w), int(h))
        self.state_path = self.home / "state.json"
        try:
            self.state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            self.state = {"actions": 0, "package": os.environ.get("FAKE_ADB_PACKAGE", "com.android.settings"),
                          "ime": DEFAULT_IME}

    def save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.state_path)

    def record(self, cmd: str, argv: list[str], **details) -> None:
        if cmd in ACTIONS:
            self.state["actions"] += 1
            self.save()
        if self.log:
            rec = {"cmd": cmd, **details, "argv": argv, "time": round(time.time(), 3)}
            with open(self.log, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def screenshot_png(self) -> bytes:
        screens_dir = os.environ.get("FAKE_ADB_SCREENS")
        if screens_dir:
            files = sorted(Path(screens_dir).glob("*.png"))
            return files[min(self.state["actions"], len(files) - 1)].read_bytes()
        buf = io.BytesIO()
        render_screen(*self.size, index=min(self.state["actions"], 1)).save(buf, format="PNG")
        return buf.getvalue()

    def activity(self) -> str:
        pkg = self.state["package"]
        return f"{pkg}/{pkg}.uioverrides.QuickstepLauncher" if pkg == LAUNCHER else f"{pkg}/.MainActivity"


def no_adb_keyboard() -> bool:
    return os.environ.get("FAKE_ADB_NO_ADB_KEYBOARD", "") not in ("", "0")


def fail(msg: str, code: int = 1) -> int:
    sys.stderr.write(msg.rstrip("\n") + "\n")
    return code


def shell(phone: Phone, argv: list[str], words: list[str]) -> int:
    """`adb shell ...`: like adb, the words are joined and split again by the device's shell."""
    args = shlex.split(" ".join(words))
    head = args[:2]
    out = sys.stdout.write
    if not args:
        return fail("interactive shell not supported by fake adb")
    if args[0] == "input" and len(args) >= 2:
        sub, nums = args[1], args[2:]
        if sub == "tap" and len(nums) == 2:
            phone.record("tap", argv, x=int(nums[0]), y=int(nums[1]))
        elif sub == "swipe" and len(nums) in (4, 5):
            ms = int(nums[4]) if len(nums) == 5 else None
            phone.record("swipe", argv, x1=int(nums[0]), y1=int(nums[1]), x2=int(nums[2]), y2=int(nums[3]),
                         duration_ms=ms)
        elif sub == "keyevent" and nums:
            phone.record("keyevent", argv, key=" ".join(nums))
        elif sub == "text" and nums:
            phone.record("text", argv, text=" ".join(nums).replace("%s", " "), via="input text")
        else:
            return fail(f"Error: unknown input command {' '.join(args)}")
        return 0
    if head == ["screencap", "-p"] or args == ["screencap"]:
        png = phone.screenshot_png()
        if len(args) >= 3:
            (phone.home / "sdcard" / Path(args[2]).name).write_bytes(png)
            phone.record("screencap", argv, path=args[2], screen=phone.state["actions"])
        else:
            phone.record("screencap", argv, path=None, screen=phone.state["actions"])
            sys.stdout.flush()
            sys.stdout.buffer.write(png)
        return 0
    if head == ["dumpsys", "window"] or head == ["dumpsys", "activity"]:
        phone.record("dumpsys", argv, package=phone.state["package"])
        act = phone.activity()
        out(f"WINDOW MANAGER WINDOWS (dumpsys window windows)\n"
            f"  mCurrentFocus=Window{{5b1d2a8 u0 {act}}}\n"
            f"  mFocusedApp=ActivityRecord{{91c3e4f u0 {act} t17}}\n")
        return 0
    if head == ["am", "broadcast"]:
        action = args[args.index("-a") + 1] if "-a" in args else ""
        extras = {args[i + 1]: args[i + 2] for i in range(len(args) - 2) if args[i] == "--es"}
        if no_adb_keyboard() and action.startswith("ADB_"):
            phone.record("broadcast", argv, action=action)  # no receiver: nothing is typed
        elif action == "ADB_INPUT_B64":
            text = base64.b64decode(extras.get("msg", "")).decode("utf-8")
            phone.record("text", argv, text=text, via=action)
        elif action == "ADB_INPUT_TEXT":
            phone.record("text", argv, text=extras.get("msg", ""), via=action)
        elif action == "ADB_CLEAR_TEXT":
            phone.record("clear-text", argv)
        else:
            phone.record("broadcast", argv, action=action)
        out("Broadcasting: Intent { act=%s flg=0x400000 }\nBroadcast completed: result=0\n" % action)
        return 0
    if args[0] == "monkey" and "-p" in args:
        pkg = args[args.index("-p") + 1]
        phone.state["package"] = pkg
        phone.record("launch", argv, package=pkg, via="monkey")
        out("  bash arg: -p\n  bash arg: %s\nEvents injected: 1\n## Network stats: elapsed time=12ms\n" % pkg)
        return 0
    if head == ["am", "start"]:
        comp = args[args.index("-n") + 1] if "-n" in args else ""
        pkg = comp.split("/")[0] or phone.state["package"]
        phone.state["package"] = pkg
        phone.record("launch", argv, package=pkg, via="am start")
        out(f"Starting: Intent {{ cmp={comp} }}\n")
        return 0
    if head == ["settings", "get"] and args[2:] == ["secure", "default_input_method"]:
        phone.record("ime-get", argv)
        out(phone.state["ime"] + "\n")
        return 0
    if head == ["ime", "set"] and len(args) == 3 and no_adb_keyboard() and args[2] == ADB_IME:
        phone.record("ime-set", argv, ime=args[2], ok=False)
        # As Android answers: on stderr, yet with exit status 0.
        sys.stderr.write(f"Unknown input method {args[2]} cannot be selected for user #0\n")
        return 0
    if head == ["ime", "set"] and len(args) == 3:
        phone.state["ime"] = args[2]
        phone.save()
        phone.record("ime-set", argv, ime=args[2])
        out(f"Input method {args[2]} selected for user #0\n")
        return 0
    if head == ["ime", "list"]:
        phone.record("ime-list", argv)
        out(f"{DEFAULT_IME}\n" + ("" if no_adb_keyboard() else f"{ADB_IME}\n"))
        return 0
    if head == ["wm", "size"]:
        phone.record("wm-size", argv)
        out("Physical size: %dx%d\n" % phone.size)
        return 0
    if head == ["ip", "route"]:
        phone.record("ip", argv)
        out("192.168.1.0/24 dev wlan0 proto kernel scope link src 192.168.1.23\n")
        return 0
    if args[0] == "getprop":
        phone.record("getprop", argv)
        props = {"ro.product.model": "FakePhone", "ro.build.version.release": "14"}
        if len(args) > 1:
            out(props.get(args[1], "") + "\n")
        else:
            out("".join(f"[{k}]: [{v}]\n" for k, v in props.items()))
        return 0
    phone.record("unknown", argv)
    return fail(f"/system/bin/sh: {args[0]}: not found (fake adb)", 127)


def main(argv: list[str]) -> int:
    phone = Phone()
    state = os.environ.get("FAKE_ADB_STATE", "device")
    others = [s for s in os.environ.get("FAKE_ADB_OTHER_DEVICES", "").split(",") if s]
    rest, serial = list(argv), None
    while rest and rest[0] in ("-s", "-t", "-H", "-P", "-d", "-e"):
        opt = rest.pop(0)
        if opt in ("-s", "-t", "-H", "-P") and rest:
            value = rest.pop(0)
            serial = value if opt == "-s" else serial
            if opt == "-s" and (value != phone.serial or state == "none"):
                phone.record("unknown-device", argv, serial=value)
                return fail(f"adb: device '{value}' not found")
    if not rest:
        return fail("adb: no command given (fake adb)")
    cmd, tail = rest[0], rest[1:]
    out = sys.stdout.write
    if cmd in DEVICE_COMMANDS and (err := transport_error(state, others, serial)):
        phone.record("no-device", argv, state=state)
        return fail(err)
    if cmd == "devices":
        phone.record("devices", argv)
        extra = " product:fake_phone model:FakePhone device:fake transport_id:1" if "-l" in tail else ""
        listed = [f"{phone.serial}\t{state}{extra}"] if state != "none" else []
        listed += [f"{s}\tdevice" for s in others]
        out("List of devices attached\n" + "".join(line + "\n" for line in listed) + "\n")
    elif cmd == "version":
        phone.record("version", argv)
        out("Android Debug Bridge version 1.0.41\nVersion 35.0.2-fake\nInstalled as %s\n" % sys.argv[0])
    elif cmd in ("start-server", "kill-server", "reconnect", "wait-for-device"):
        phone.record(cmd, argv)
    elif cmd in ("connect", "disconnect"):
        phone.record(cmd, argv)
        out(f"{'connected to' if cmd == 'connect' else 'disconnected'} {' '.join(tail)}\n")
    elif cmd == "tcpip":
        phone.record(cmd, argv)
        out(f"restarting in TCP mode port: {tail[0] if tail else 5555}\n")
    elif cmd == "pull" and len(tail) >= 1:
        src = phone.home / "sdcard" / Path(tail[0]).name
        if not src.is_file():
            phone.record("pull", argv, ok=False)
            return fail(f"adb: error: failed to stat remote object '{tail[0]}': No such file or directory")
        dest = Path(tail[1]) if len(tail) > 1 else Path(Path(tail[0]).name)
        if dest.is_dir():
            dest = dest / src.name
        data = src.read_bytes()
        dest.write_bytes(data)
        phone.record("pull", argv, ok=True, dest=str(dest), bytes=len(data))
        out(f"{tail[0]}: 1 file pulled, 0 skipped. 41.2 MB/s ({len(data)} bytes in 0.001s)\n")
    elif cmd in ("shell", "exec-out"):
        return shell(phone, argv, tail)
    else:
        phone.record("unknown", argv)
        return fail(f"adb: unknown command {cmd} (fake adb)")
    return 0


def transport_error(state: str, others: list[str], serial: str | None) -> str | None:
    """adb's own message when the command cannot reach the fake phone, else None."""
    count = (state != "none") + len(others)
    if count == 0:
        return "adb: no devices/emulators found"
    if serial is None and count > 1:
        return "adb: more than one device/emulator"
    if state == "none":  # only listed devices are left, and they answer nothing
        return "adb: device offline"
    if state == "unauthorized":
        return ("adb: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\nTry 'adb kill-server' "
                "if that seems wrong.\nOtherwise check for a confirmation dialog on your device.")
    if state == "offline":
        return "adb: device offline"
    return None


def install(bin_dir: str | os.PathLike, python: str = sys.executable) -> Path:
    """Write an executable `adb` into bin_dir that runs this fake with `python`; returns its path."""
    path = Path(bin_dir) / "adb"
    path.parent.mkdir(parents=True, exist_ok=True)
    me = shlex.quote(str(Path(__file__).resolve()))
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(python)} {me} \"$@\"\n")
    path.chmod(0o755)
    return path


def read_log(path: str | os.PathLike) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
