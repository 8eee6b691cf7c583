"""Runs Open-AutoGLM's agent (PyPI `phone-agent`, Python >= 3.12) the way its `main.py` does, for
tests/test_phone_agent.py. Executed by the interpreter of a virtualenv that has phone-agent installed,
with the fake adb first on PATH. Not a test module; standard library + phone_agent + openai only.

  python phone_agent_driver.py probe --lang en
      prints one JSON object: the system prompt the agent would send, the app it sees in focus and
      the screen-info text it derives from it (all from the installed phone_agent package)
  python phone_agent_driver.py run --base-url URL --model NAME --lang en --max-steps N TASK
      main.py's flow: adb checks (version, devices, ADB keyboard), a model API check (a plain
      non-streaming "Hi" completion), then PhoneAgent(...).run(TASK); the last stdout line is
      RESULT_MARK + JSON {"result", "steps", "context"}
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

RESULT_MARK = "PHONE_AGENT_DRIVER_RESULT "


def probe(args) -> int:
    from phone_agent.config import get_system_prompt
    from phone_agent.device_factory import DeviceType, get_device_factory, set_device_type
    from phone_agent.model.client import MessageBuilder

    set_device_type(DeviceType.ADB)
    app = get_device_factory().get_current_app(None)
    print(json.dumps({"system_prompt": get_system_prompt(args.lang), "current_app": app,
                      "screen_info": MessageBuilder.build_screen_info(app)}, ensure_ascii=False))
    return 0


def adb_checks() -> str | None:
    """What main.py checks before it starts: returns an error text, or None when all pass."""
    if shutil.which("adb") is None:
        return "adb is not on PATH"
    if subprocess.run(["adb", "version"], capture_output=True, text=True, timeout=10).returncode != 0:
        return "`adb version` failed"
    listing = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=10).stdout
    if not [ln for ln in listing.strip().split("\n")[1:] if "\tdevice" in ln]:
        return f"no device in `adb devices`: {listing!r}"
    imes = subprocess.run(["adb", "shell", "ime", "list", "-s"], capture_output=True, text=True,
                          timeout=10).stdout
    if "com.android.adbkeyboard/.AdbIME" not in imes:
        return "ADB Keyboard is not installed"
    return None


def run(args) -> int:
    from openai import OpenAI
    from phone_agent import PhoneAgent
    from phone_agent.agent import AgentConfig
    from phone_agent.device_factory import DeviceType, set_device_type
    from phone_agent.model import ModelConfig

    set_device_type(DeviceType.ADB)
    problem = adb_checks()
    if problem:
        print(f"system check failed: {problem}", file=sys.stderr)
        return 1
    client = OpenAI(base_url=args.base_url, api_key=args.apikey, timeout=60.0)
    check = client.chat.completions.create(model=args.model, messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=5, temperature=0.0, stream=False)
    if not check.choices:
        print("model API check failed: no choices", file=sys.stderr)
        return 1
    model_config = ModelConfig(base_url=args.base_url, model_name=args.model, api_key=args.apikey,
                               lang=args.lang)
    agent = PhoneAgent(model_config=model_config,
                       agent_config=AgentConfig(max_steps=args.max_steps, verbose=True, lang=args.lang))
    result = agent.run(args.task)
    context = []
    for m in agent.context:
        parts = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
        context.append({"role": m["role"], "text": "".join(p.get("text", "") for p in parts),
                        "images": sum(p.get("type") == "image_url" for p in parts)})
    print(RESULT_MARK + json.dumps({"result": result, "steps": agent.step_count, "context": context},
                                   ensure_ascii=False), flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    pr = sub.add_parser("probe")
    pr.add_argument("--lang", default="cn")
    r = sub.add_parser("run")
    r.add_argument("--base-url", required=True)
    r.add_argument("--model", default="autoglm-phone-9b")
    r.add_argument("--apikey", default="EMPTY")
    r.add_argument("--lang", default="cn")
    r.add_argument("--max-steps", type=int, default=100)
    r.add_argument("task")
    args = p.parse_args()
    return probe(args) if args.mode == "probe" else run(args)


if __name__ == "__main__":
    sys.exit(main())
