#!/usr/bin/env python3
"""A fake `hdc` (HarmonyOS device connector) for tests: one pretend HarmonyOS phone.

It answers what HdcDevice issues (list targets, screenshot + file recv, aa dump -l, uitest uiInput,
aa start) and appends one JSON line per invocation to FAKE_HDC_LOG: {"cmd": kind, ...details, "argv"}.

Environment:
  FAKE_HDC_LOG     the JSON-lines log (its directory also holds state.json and the "remote" files)
  FAKE_HDC_SIZE    screenshot size WxH (default 216x480); screenshots are JPEG, as HarmonyOS writes them
  FAKE_HDC_SERIAL  the device serial (default FMR0223C13000649)
  FAKE_HDC_STATE   device (default) or none (no target connected)
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

HOME_BUNDLE = "com.huawei.hmos.launcher"


def _home() -> Path:
    return Path(os.environ["FAKE_HDC_LOG"]).parent


def _state() -> dict:
    p = _home() / "state.json"
    return json.loads(p.read_text()) if p.exists() else {"front": HOME_BUNDLE}


def _save(state: dict) -> None:
    (_home() / "state.json").write_text(json.dumps(state))


def _log(rec: dict) -> None:
    with open(os.environ["FAKE_HDC_LOG"], "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    serial = os.environ.get("FAKE_HDC_SERIAL", "FMR0223C13000649")
    connected = os.environ.get("FAKE_HDC_STATE", "device") == "device"
    args = list(argv)
    if args[:1] == ["-t"]:
        if len(args) < 2 or args[1] != serial or not connected:
            print(f"[Fail]ExecuteCommand need connect-key? please confirm a device by help info, device {args[1:2]} not found")
            return 0
        args = args[2:]
    if args[:2] == ["list", "targets"]:
        _log({"cmd": "list", "argv": argv})
        print(serial if connected else "[Empty]")
        return 0
    if not connected:
        print("[Fail]ExecuteCommand need connect-key? please confirm a device by help info")
        return 0
    state = _state()
    if args[:1] == ["shell"]:
        words = args[1:]
        if len(words) == 1:  # hdc shell "a b c": one string, as a shell would split it
            words = shlex.split(words[0])
        if words[:1] == ["screenshot"]:
            from PIL import Image

            w, h = (int(v) for v in os.environ.get("FAKE_HDC_SIZE", "216x480").split("x"))
            shade = 40 * len([k for k in state.get("actions", [])]) % 256
            Image.new("RGB", (w, h), (shade, 120, 200)).save(_home() / "remote.jpeg", format="JPEG")
            _log({"cmd": "screenshot", "path": words[1], "argv": argv})
            print(f"ScreenShot: {words[1]} success")
            return 0
        if words[:3] == ["aa", "dump", "-l"]:
            _log({"cmd": "aa-dump", "argv": argv})
            print("  MissionList Type #NORMAL\n    Mission ID #101  mission name #[#com.other:entry:EntryAbility]\n"
                  "    app name [com.other]\n    state #BACKGROUND\n"
                  f"    Mission ID #102  mission name #[#{state['front']}:entry:EntryAbility]\n"
                  f"    app name [{state['front']}]\n    state #FOREGROUND\n")
            return 0
        if words[:2] == ["uitest", "uiInput"]:
            kind, rest = words[2], words[3:]
            _log({"cmd": "uiInput", "kind": kind, "args": rest, "argv": argv})
            state.setdefault("actions", []).append(kind)
            if kind == "keyEvent" and rest == ["Home"]:
                state["front"] = HOME_BUNDLE
            _save(state)
            print("No Error")
            return 0
        if words[:2] == ["aa", "start"]:
            bundle = words[words.index("-b") + 1]
            ability = words[words.index("-a") + 1]
            _log({"cmd": "aa-start", "bundle": bundle, "ability": ability, "argv": argv})
            state["front"] = bundle
            state.setdefault("actions", []).append("start")
            _save(state)
            print("start ability successfully.")
            return 0
        print(f"/bin/sh: {words[0] if words else ''}: not found")
        return 0
    if args[:2] == ["file", "recv"]:
        _log({"cmd": "recv", "remote": args[2], "argv": argv})
        shutil.copy(_home() / "remote.jpeg", args[3])
        print("FileTransfer finish, Size:1, File count = 1, time:1ms rate:1kB/s")
        return 0
    print(f"[Fail]Unknown command {' '.join(args)}")
    return 0


def install(bin_dir, python: str = sys.executable) -> Path:
    path = Path(bin_dir) / "hdc"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(python)} {shlex.quote(str(Path(__file__).resolve()))} \"$@\"\n")
    path.chmod(0o755)
    return path


def read_log(path) -> list[dict]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()] if p.exists() else []


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
