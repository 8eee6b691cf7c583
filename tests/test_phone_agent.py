"""End to end: Open-AutoGLM's own agent (PyPI phone-agent 0.1.1, unchanged, in a Python 3.12 virtualenv)
completes a two-step task on a fake phone (tests/fake_adb.py, first on PATH as `adb`) through our
OpenAI-compatible server (`autoglm-gguf serve`) running a tiny model trained to act (tests/agent_model.py).

Checked: the agent's requests stream back the model's replies (stopped at the model's end-of-generation
ids, which never appear in the content), the phone receives exactly the tap the model chose, at the
pixels phone-agent computes from the 0..999 grid (int(v / 1000 * size)), and the agent ends with the
model's finish message.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import agent_model
import fake_adb

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "phone_agent_driver.py"
PHONE_AGENT = "phone-agent==0.1.1"
LANG = "en"  # main.py's --lang; the English system prompt is ~4x fewer tokens of the tiny tokenizer
ALIAS = "autoglm-phone-9b"

pytestmark = pytest.mark.slow  # Open-AutoGLM's phone-agent in a fresh venv, driving our server: ~90 s


def find_python312() -> str | None:
    """A Python >= 3.12 interpreter (phone-agent requires it): pyenv's, python3.12 on PATH, or this one."""
    found = []
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        root = ""
    roots = [r for r in (root, os.environ.get("PYENV_ROOT"), os.path.expanduser("~/.pyenv")) if r]
    for r in roots:
        found += sorted(glob.glob(os.path.join(r, "versions", "3.1[2-9]*", "bin", "python3")))
    found += [p for p in (shutil.which(f"python3.{m}") for m in range(12, 20)) if p]
    if sys.version_info >= (3, 12):
        found.insert(0, sys.executable)
    for py in found:
        probe = subprocess.run([py, "-c", "import sys, venv; print(sys.version_info >= (3, 12))"],
                               capture_output=True, text=True, check=False)
        if probe.stdout.strip() == "True":
            return py
    return None


@pytest.fixture(scope="session")
def agent_python(tmp_path_factory) -> Path:
    """The interpreter of a fresh virtualenv with phone-agent installed from PyPI."""
    py = find_python312()
    if py is None:
        pytest.skip("phone-agent needs Python >= 3.12 and no such interpreter was found "
                    "(pyenv's versions, python3.12 on PATH)")
    venv = tmp_path_factory.mktemp("phone-agent-venv")
    subprocess.run([py, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                           PHONE_AGENT], capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        pytest.fail(f"pip install {PHONE_AGENT} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return python


def phone_env(root: Path) -> dict:
    """Environment with a fresh fake phone: `adb` first on PATH, its log and state under root."""
    fake_adb.install(root / "bin")
    env = dict(os.environ)
    env.update(PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}", FAKE_ADB_LOG=str(root / "adb.jsonl"),
               FAKE_ADB_HOME=str(root / "phone"), FAKE_ADB_SIZE="{}x{}".format(*agent_model.SCREEN_SIZE),
               PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    env.pop("FAKE_ADB_SCREENS", None)
    return env


@pytest.fixture(scope="session")
def conversation(agent_python, tmp_path_factory) -> dict:
    """The system prompt and screen info phone-agent will send, read from the installed package."""
    env = phone_env(tmp_path_factory.mktemp("probe-phone"))
    proc = subprocess.run([str(agent_python), str(DRIVER), "probe", "--lang", LANG], capture_output=True,
                          text=True, env=env, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def agent_gguf(conversation, tmp_path_factory):
    t0 = time.perf_counter()
    text, mmproj, stats = agent_model.build(conversation["system_prompt"], conversation["screen_info"],
                                            tmp_path_factory.mktemp("agent-gguf"))
    print(f"agent model ready in {time.perf_counter() - t0:.1f} s; training: {stats}")
    return text, mmproj


def test_agent_model_replies_in_process(agent_gguf, conversation):
    """The converted model answers both of the agent's steps as trained (our runtime, no server)."""
    got = agent_model.replies(*agent_gguf, conversation["system_prompt"], conversation["screen_info"])
    assert got == [agent_model.STEP1, agent_model.STEP2]


def _replies_in_child(text: Path, mmproj: Path, conversation: dict, env: dict) -> tuple[list[str], str]:
    """agent_model.replies in a child process under `env` (the kernel settings are read once per process),
    and the child's AUTOGLM_PROFILE report."""
    child = ("import json, sys\nsys.path.insert(0, sys.argv[1])\nimport agent_model\n"
             "c = json.loads(sys.argv[4])\n"
             "print(json.dumps(agent_model.replies(sys.argv[2], sys.argv[3], c['system_prompt'], c['screen_info'])))\n")
    proc = subprocess.run([sys.executable, "-c", child, str(HERE), str(text), str(mmproj), json.dumps(conversation)],
                          env=dict(os.environ, AUTOGLM_PROFILE="1", **env), capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_agent_model_replies_with_bf16_arithmetic(agent_gguf, conversation, tmp_path):
    """BF16 attention (AUTOGLM_CPU_ATTN=avx512_bf16: the decoder's prompt and the tower) changes no
    token of either answer; on AMX neither does a Q8_0 file whose prompt matrices and attention run on
    the BF16 tiles (AUTOGLM_AMX_TILES=bf16, our GEMMs at every width: what "auto" picks for a long
    prompt's micro-batches)."""
    from autoglm_gguf import _core
    from autoglm_gguf.quantize import quantize_gguf

    if "avx512_bf16" not in _core._gemm_isas():
        pytest.skip(f"this CPU lacks AVX512_BF16; it runs {_core._gemm_isas()}")
    text, mmproj = agent_gguf
    want = [agent_model.STEP1, agent_model.STEP2]
    got, profile = _replies_in_child(text, mmproj, conversation, {"AUTOGLM_CPU_ATTN": "avx512_bf16"})
    assert got == want
    assert "ATTENTION bf16 (ours)" in profile and "ATTENTION (ours)" not in profile
    if "amx" not in _core._gemm_isas():
        return
    q8 = tmp_path / "agent-q8_0.gguf"
    quantize_gguf(text, q8, "q8_0", progress=False)
    got, profile = _replies_in_child(q8, mmproj, conversation, {"AUTOGLM_AMX_TILES": "bf16", "AUTOGLM_GEMM": "all"})
    assert got == want
    text_reports = [r for r in profile.split("autoglm profile [")[1:] if r.startswith("text session")]
    assert text_reports and all("ATTENTION bf16 (ours)" in r and "GEMM q8_0 on BF16 tiles (ours)" in r
                                for r in text_reports), profile[-4000:]


def tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(agent_gguf, tmp_path):
    text, mmproj = agent_gguf
    port = _free_port()
    log_path = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "autoglm_gguf.cli", "serve", "-m", str(text), "--mmproj", str(mmproj),
           "--host", "127.0.0.1", "--port", str(port), "--alias", ALIAS]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{tail(log_path)}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"GET /health did not answer 200 within 120 s:\n{tail(log_path)}")
            time.sleep(0.25)
        yield {"base_url": url + "/v1", "log": log_path}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_phone_agent_drives_fake_phone_through_server(agent_python, server, tmp_path):
    env = phone_env(tmp_path / "phone")
    cmd = [str(agent_python), str(DRIVER), "run", "--base-url", server["base_url"], "--model", ALIAS,
           "--lang", LANG, "--max-steps", "4", agent_model.TASK]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"phone-agent did not finish in 300 s:\n{e.stdout}\n{e.stderr}\n"
                    f"server:\n{tail(server['log'])}")
    out = proc.stdout
    where = (f"\nagent stdout:\n{out[-4000:]}\nagent stderr:\n{proc.stderr[-4000:]}\n"
             f"server log:\n{tail(server['log'])}")
    assert proc.returncode == 0, where
    marks = [ln for ln in out.splitlines() if ln.startswith("PHONE_AGENT_DRIVER_RESULT ")]
    assert len(marks) == 1, where
    result = json.loads(marks[0].split(" ", 1)[1])

    # The actions phone-agent parsed from the streamed replies are the model's (and nothing leaked past them).
    parsed = re.findall(r"^Parsing action: (.*)$", out, flags=re.MULTILINE)
    assert parsed == [agent_model.split_reply(r)[1] for r in (agent_model.STEP1, agent_model.STEP2)], where
    assert result["result"] == agent_model.FINISH_MESSAGE, where
    assert result["steps"] == 2, where
    assistant = [m["text"] for m in result["context"] if m["role"] == "assistant"]
    assert assistant == [agent_model.agent_record(r) for r in (agent_model.STEP1, agent_model.STEP2)], where
    assert [m["images"] for m in result["context"]] == [0, 0, 0, 0, 0]  # images dropped once answered

    # The fake phone: both screenshots really came from it (not phone-agent's black fallback), then
    # exactly one action, the tap, at int(v / 1000 * size) of the model's grid coordinates.
    log = fake_adb.read_log(env["FAKE_ADB_LOG"])
    gx, gy = (int(v) for v in re.search(r"element=\[(\d+),\s*(\d+)\]", parsed[0]).groups())
    assert (gx, gy) == agent_model.TAP_GRID
    width, height = agent_model.SCREEN_SIZE
    expected_tap = {"cmd": "tap", "x": int(gx / 1000 * width), "y": int(gy / 1000 * height)}
    assert expected_tap == {"cmd": "tap", "x": 181, "y": 178}
    actions = [{k: r[k] for k in ("cmd", "x", "y") if k in r} for r in log if r["cmd"] in fake_adb.ACTIONS]
    assert actions == [expected_tap], log
    assert [r.get("screen") for r in log if r["cmd"] == "screencap"] == [0, 1]
    assert [r.get("ok") for r in log if r["cmd"] == "pull"] == [True, True]
    assert [r["cmd"] for r in log if r["cmd"] == "unknown"] == []
    tap_at = next(i for i, r in enumerate(log) if r["cmd"] == "tap")
    assert [r["cmd"] for r in log[:tap_at]][-3:] == ["screencap", "pull", "dumpsys"]


def _phone_actions(log_path) -> list[dict]:
    return [{k: r[k] for k in ("cmd", "x", "y") if k in r} for r in fake_adb.read_log(log_path)
            if r["cmd"] in fake_adb.ACTIONS]


def test_our_agent_renders_and_acts_as_open_autoglm_does(agent_python, agent_gguf, conversation, tmp_path,
                                                         monkeypatch):
    """Open-AutoGLM through our server, our agent in-process, and our agent through --base-url at our server
    render the same prompts (text and pixels) for the same task and send the phone the same actions."""
    from _server_util import RunningServer
    from autoglm_gguf import AutoGLM
    from autoglm_gguf.agent import AdbDevice, LocalModel, PhoneAgent, RemoteModel
    from autoglm_gguf.server import ServerSettings

    text, mmproj = agent_gguf
    llm = AutoGLM(text, mmproj_path=mmproj, n_ctx=8192)

    def use_phone(name: str) -> dict:
        env = phone_env(tmp_path / name)
        for key in ("PATH", "FAKE_ADB_LOG", "FAKE_ADB_HOME", "FAKE_ADB_SIZE"):
            monkeypatch.setenv(key, env[key])
        return env

    class Recording(LocalModel):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.rendered = []

        def reply(self, messages, on_piece):
            images = [p["image_url"]["url"] for m in messages if isinstance(m["content"], list)
                      for p in m["content"] if p["type"] == "image_url"]
            self.rendered.append((self.llm.apply_chat_template(messages), [load_pixels(u) for u in images]))
            return super().reply(messages, on_piece)

    def load_pixels(url: str) -> bytes:
        from autoglm_gguf.images import load_image

        return load_image(url).tobytes()

    with RunningServer(ServerSettings(model=str(text), mmproj=str(mmproj), alias=ALIAS, n_ctx=8192)) as srv:
        recorded, prepare = [], srv.engine.prepare

        def recording_prepare(req):
            job = prepare(req)
            if job.images:  # not the driver's text-only "Hi" check
                recorded.append((job.prompt, [im.tobytes() for im in job.images]))
            return job

        srv.engine.prepare = recording_prepare
        env = use_phone("theirs")
        proc = subprocess.run([str(agent_python), str(DRIVER), "run", "--base-url", srv.url + "/v1", "--model", ALIAS,
                               "--lang", LANG, "--max-steps", "4", agent_model.TASK], capture_output=True, text=True,
                              env=env, timeout=300, stdin=subprocess.DEVNULL, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        their_actions = _phone_actions(env["FAKE_ADB_LOG"])
        theirs = list(recorded)
        recorded.clear()  # what follows is our agent's, through the same server

        use_phone("remote")
        remote = PhoneAgent(RemoteModel(srv.url + "/v1", ALIAS), AdbDevice(delay_s=0),
                            system_prompt=conversation["system_prompt"], max_steps=4).run(agent_model.TASK)
        remote_actions = _phone_actions(tmp_path / "remote" / "adb.jsonl")
        via_server = list(recorded)

    env = use_phone("ours")
    backend = Recording(llm)
    ours = PhoneAgent(backend, AdbDevice(delay_s=0), system_prompt=conversation["system_prompt"],
                      max_steps=4).run(agent_model.TASK)
    assert ours.finished and ours.message == agent_model.FINISH_MESSAGE and len(ours.steps) == 2
    assert [s.raw for s in ours.steps] == [agent_model.STEP1, agent_model.STEP2]
    assert remote.finished and [s.raw for s in remote.steps] == [s.raw for s in ours.steps]
    # The same prompts: text (so the same token ids) and image pixels, step by step.
    assert [t for t, _ in backend.rendered] == [t for t, _ in theirs]
    assert [llm.tokenize(t) for t, _ in backend.rendered] == [llm.tokenize(t) for t, _ in theirs]
    assert [px for _, px in backend.rendered] == [px for _, px in theirs]
    assert len(theirs) == 2 and via_server == theirs
    # The same actions on the phone, at the same pixels.
    assert _phone_actions(env["FAKE_ADB_LOG"]) == their_actions == remote_actions
    assert their_actions == [{"cmd": "tap", "x": 181, "y": 178}]
    # Step 2 reused the conversation from the KV cache: only the new turn was evaluated.
    t2 = ours.steps[1].timings
    assert t2["prompt_tokens_reused"] > 0.5 * t2["prompt_tokens"] - t2["image_tokens"]


def test_agent_command_dry_run(agent_gguf, conversation, tmp_path):
    """`autoglm-gguf agent --dry-run DIR`: the screenshots of a folder stand in for the phone."""
    screens = tmp_path / "screens"
    screens.mkdir()
    for i in range(2):
        fake_adb.render_screen(*agent_model.SCREEN_SIZE, index=i).save(screens / f"{i:02d}.png")
    prompt_file = tmp_path / "system.txt"
    prompt_file.write_text(conversation["system_prompt"], encoding="utf-8")
    text, mmproj = agent_gguf
    proc = subprocess.run([sys.executable, "-m", "autoglm_gguf.cli", "agent", "-m", str(text), "--mmproj", str(mmproj),
                           "--dry-run", str(screens), "--dry-run-app", "AndroidSystemSettings", "--system-prompt-file",
                           str(prompt_file), "--lang", LANG, "-c", "4096", "--trace", str(tmp_path / "trace"),
                           agent_model.TASK],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Tap the Wi-Fi switch." in out  # the streamed reasoning
    assert '[step 1] do(action="Tap", element=[842,371])' in out, out
    assert '[step 2] finish(message="Wi-Fi is on")' in out, out
    assert f"finished after 2 step(s): {agent_model.FINISH_MESSAGE}" in out
    assert "first token" in proc.stderr and "reused" in proc.stderr  # per-step timings
    page = (tmp_path / "trace" / "index.html").read_text(encoding="utf-8")
    assert page.count("<section>") == 2 and "Wi-Fi is on" in page and "data:image/png;base64," in page
