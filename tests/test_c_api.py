"""The public C API (native/include/autoglm.h).

Two routes to the same functions:
* native/tests/c_api_smoke.c, compiled as strict C99 (-pedantic -Werror) in its own CMake build, run on a
  tiny model; its output must equal what the Python API produces.
* ctypes on the Python extension, which links the same C API object file: quick checks that need no
  second build.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import autoglm_gguf
from autoglm_gguf import AutoGLM

REPO = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO / "build" / "c_api_test"  # build/ is ignored by git; kept so reruns are incremental
N_TOKENS = 40
MESSAGES = [("system", "You are a phone agent."), ("user", "Open Settings and turn on Wi-Fi."),
            ("assistant", 'do(action="Launch", app="Settings")'), ("user", "Now Bluetooth.")]


def _tool(*names: str) -> str | None:
    # Prefer the tools next to this interpreter (a venv's cmake), then PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def smoke_exe() -> Path:
    cmake = _tool("cmake")
    cc = _tool(*(n for n in (os.environ.get("CC"), "cc", "gcc", "clang") if n))
    if not cmake or not cc:
        pytest.skip(f"needs cmake and a C compiler (cmake: {cmake}, C compiler: {cc})")
    configure = [cmake, "-S", str(REPO), "-B", str(BUILD_DIR), "-DAUTOGLM_BUILD_TESTS=ON", "-DAUTOGLM_BUILD_PYTHON=OFF",
                 "-DGGML_NATIVE=OFF", "-DCMAKE_BUILD_TYPE=Release", f"-DPython_EXECUTABLE={sys.executable}"]
    build = [cmake, "--build", str(BUILD_DIR), "--target", "c_api_smoke", "-j2"]
    t0 = time.monotonic()
    for cmd in (configure, build):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.fail(f"`{' '.join(cmd)}` failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    print(f"\nc_api_smoke built in {time.monotonic() - t0:.1f} s")
    exe = next((p for p in BUILD_DIR.rglob("c_api_smoke*") if p.is_file() and os.access(p, os.X_OK)), None)
    assert exe is not None, f"c_api_smoke not found under {BUILD_DIR}"
    return exe


@pytest.fixture(scope="module")
def model_path(tiny_checkpoint_f32, convert_tiny) -> Path:
    return convert_tiny(tiny_checkpoint_f32, "f32", "f16")[0]


@pytest.fixture(scope="module")
def llm(model_path) -> AutoGLM:
    return AutoGLM(model_path, n_ctx=512)


def _utf8_units(data: bytes) -> list[bytes]:
    """Split bytes as the C API promises: whole valid characters, other bytes one at a time."""
    units, i = [], 0
    while i < len(data):
        n = next((n for n in (4, 3, 2) if _is_one_char(data[i:i + n], n)), 1)
        units.append(data[i:i + n])
        i += n
    return units


def _is_one_char(b: bytes, n: int) -> bool:
    try:
        return len(b) == n and len(b.decode("utf-8")) == 1
    except UnicodeDecodeError:
        return False


def _run_smoke(exe: Path, model: Path, prompt: str) -> dict[str, str]:
    proc = subprocess.run([str(exe), str(model), prompt, str(N_TOKENS)], capture_output=True, timeout=300,
                          check=False)
    out = proc.stdout.decode("utf-8", errors="replace")
    assert proc.returncode == 0 and out.rstrip().endswith("OK"), f"exit {proc.returncode}\n{out}\n{proc.stderr!r}"
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return lines


@pytest.mark.slow  # builds c_api_smoke with CMake first: ggml and all, minutes in a fresh build directory
@pytest.mark.parametrize("chat", [False, True], ids=["raw", "chat"])
def test_smoke_program_matches_python(smoke_exe, model_path, llm, chat):
    prompt = "Hello" if not chat else llm.apply_chat_template([{"role": r, "content": c} for r, c in MESSAGES])
    got = _run_smoke(smoke_exe, model_path, prompt)

    hp = llm.hparams
    assert got["model"].startswith(f"n_vocab={hp['n_vocab']} n_ctx_train={hp['n_ctx_train']} n_embd={hp['n_embd']} "
                                   f"n_layer={hp['n_layer']} ")
    assert got["version"] == autoglm_gguf.__version__
    assert [int(t) for t in got["tokens"].split()] == llm.tokenize(prompt)
    chat_ref = llm.apply_chat_template([{"role": r, "content": c} for r, c in MESSAGES])
    assert bytes.fromhex(got["chat_hex"]) == chat_ref.encode()

    # Greedy generation: the C pull API (through a 3-byte buffer) gives exactly Python's text.
    text = llm.generate(prompt, max_tokens=N_TOKENS)
    generated = bytes.fromhex(got["generated_hex"])
    assert generated == llm._model.detokenize(llm.last_tokens)
    assert generated.decode("utf-8", errors="replace") == text
    assert int(got["finish_reason"]) == {"stop": 1, "length": 2}[llm.last_finish_reason]
    # Each character of 3-4 bytes needed one AUTOGLM_ERR_BUFFER_TOO_SMALL round; everything else came
    # through the 2 bytes of room, a character never split.
    tiny = dict(kv.split("=") for kv in got["tiny_buffer"].split())
    assert int(tiny["too_small"]) == sum(len(u) >= 3 for u in _utf8_units(generated))
    assert int(tiny["calls"]) >= sum(len(u) for u in _utf8_units(generated) if len(u) < 3) / 2

    for key, status, words in [("error_missing_file", "AUTOGLM_ERR_FILE", "cannot open"),
                               ("error_null_path", "AUTOGLM_ERR_INVALID_ARGUMENT", "path is NULL"),
                               ("error_null_out", "AUTOGLM_ERR_INVALID_ARGUMENT", "out is NULL"),
                               ("error_null_model", "AUTOGLM_ERR_INVALID_ARGUMENT", "model is NULL"),
                               ("error_null_gen", "AUTOGLM_ERR_INVALID_ARGUMENT", "gen is NULL"),
                               ("error_null_text", "AUTOGLM_ERR_INVALID_ARGUMENT", "text is NULL"),
                               ("error_aborted", "AUTOGLM_ERR_ABORTED", "aborted by the progress callback"),
                               ("error_bad_token", "AUTOGLM_ERR_INVALID_ARGUMENT", "out of range"),
                               ("error_bad_role", "AUTOGLM_ERR_INVALID_ARGUMENT", "'robot'"),
                               ("error_superseded", "AUTOGLM_ERR_INVALID_ARGUMENT", "newer generation"),
                               ("error_context_full", "AUTOGLM_ERR_CONTEXT_FULL", "more than n_ctx")]:
        assert got[key].startswith(status + ": autoglm_") and words in got[key], (key, got[key])


# ------------------------------------------------------------------------------------------ ctypes route
# (`capi`: conftest.py, the extension typed by tests/_capi.py)


def test_ctypes_errors_and_version(capi, tmp_path):
    assert capi.autoglm_version().decode() == autoglm_gguf.__version__
    model = ctypes.c_void_p()
    missing = str(tmp_path / "missing.gguf").encode()
    assert capi.autoglm_model_load(missing, capi.autoglm_model_default_params(), ctypes.byref(model)) == -3
    assert capi.autoglm_last_error().decode().startswith(f"autoglm_model_load: {missing.decode()}: cannot open")
    assert not model.value
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    junk = str(tmp_path / "junk.gguf").encode()
    assert capi.autoglm_model_load(junk, capi.autoglm_model_default_params(), ctypes.byref(model)) == -3
    assert "not a valid GGUF file" in capi.autoglm_last_error().decode()
    assert capi.autoglm_model_n_vocab(None) == -1
    assert capi.autoglm_last_error() == b"autoglm_model_n_vocab: model is NULL"


@pytest.mark.parametrize("buf_size", [1, 3, 4, 64])
def test_ctypes_generation_matches_python(capi, model_path, llm, buf_size):
    model, session, gen = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
    assert capi.autoglm_model_load(str(model_path).encode(), capi.autoglm_model_default_params(), ctypes.byref(model)) == 0
    try:
        prompt = "Hello"
        n = ctypes.c_size_t()
        ids = (ctypes.c_int32 * 16)()
        assert capi.autoglm_tokenize(model, prompt.encode(), True, ids, 16, ctypes.byref(n)) == 0
        assert list(ids[:n.value]) == llm.tokenize(prompt)

        sp = capi.autoglm_session_default_params()
        sp.n_ctx = 256
        assert capi.autoglm_session_create(model, sp, ctypes.byref(session)) == 0
        gp = capi.autoglm_generation_default_params()
        gp.max_tokens = N_TOKENS
        assert capi.autoglm_generation_start(session, prompt.encode(), True, capi.autoglm_sampling_default_params(), gp,
                                             ctypes.byref(gen)) == 0
        buf = ctypes.create_string_buffer(max(buf_size, 8))
        out, cuts, done = b"", [], ctypes.c_bool(False)
        while True:
            # Not finished for the caller while text is still to come (autoglm.h), even when the model
            # has stopped and the last piece waits, cut to the buffer.
            assert capi.autoglm_generation_finish_reason(gen) == 0
            status = capi.autoglm_generation_next(gen, buf, buf_size, ctypes.byref(n), ctypes.byref(done))
            if status == -2:  # AUTOGLM_ERR_BUFFER_TOO_SMALL: n says how much room the next character needs
                assert 2 <= n.value <= 5 and n.value > buf_size
                big = ctypes.create_string_buffer(n.value)
                assert capi.autoglm_generation_next(gen, big, n.value, ctypes.byref(n), ctypes.byref(done)) == 0
                chunk = big.raw[:n.value]
            else:
                assert status == 0, capi.autoglm_last_error()
                if done.value:
                    break
                chunk = buf.raw[:n.value]
                assert buf.raw[n.value] == 0 and 0 < n.value < buf_size  # NUL-terminated, within the buffer
            out += chunk
            cuts.append(len(out))
        assert out.decode("utf-8", errors="replace") == llm.generate(prompt, max_tokens=N_TOKENS)
        assert capi.autoglm_generation_finish_reason(gen) == {"stop": 1, "length": 2}[llm.last_finish_reason]
        # Every cut between two calls falls between characters.
        bounds = {0}
        for u in _utf8_units(out):
            bounds.add(max(bounds) + len(u))
        assert set(cuts) <= bounds
    finally:
        capi.autoglm_generation_free(gen)
        capi.autoglm_session_free(session)
        capi.autoglm_model_free(model)


def _generate_ctypes(capi, session, prompt: str, max_tokens: int) -> tuple[int, bytes]:
    gen, n, done = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_bool(False)
    gp = capi.autoglm_generation_default_params()
    gp.max_tokens = max_tokens
    status = capi.autoglm_generation_start(session, prompt.encode(), True, capi.autoglm_sampling_default_params(), gp,
                                           ctypes.byref(gen))
    out, buf = b"", ctypes.create_string_buffer(64)
    try:
        while status == 0:
            status = capi.autoglm_generation_next(gen, buf, 64, ctypes.byref(n), ctypes.byref(done))
            if status == 0 and done.value:
                break
            out += buf.raw[:n.value]
    finally:
        capi.autoglm_generation_free(gen)
    return status, out


def test_ctypes_sessions_of_one_model_on_two_threads(capi, model_path, llm):
    """ctypes releases the GIL, so both threads are inside the library at once; the per-model lock must
    keep their evaluations apart and each must get the single-threaded result."""
    import threading

    model = ctypes.c_void_p()
    assert capi.autoglm_model_load(str(model_path).encode(), capi.autoglm_model_default_params(), ctypes.byref(model)) == 0
    prompts = ["Hello", "Open Settings", "天气", "a b c"]
    expected = {p: llm.generate(p, max_tokens=N_TOKENS).encode() for p in prompts}
    results, errors = {}, []

    def worker(p):
        session = ctypes.c_void_p()
        sp = capi.autoglm_session_default_params()
        sp.n_ctx = 128
        if capi.autoglm_session_create(model, sp, ctypes.byref(session)) != 0:
            errors.append(capi.autoglm_last_error())  # last_error is per thread: read it here
            return
        for _ in range(3):
            status, out = _generate_ctypes(capi, session, p, N_TOKENS)
            results.setdefault(p, []).append((status, out.decode("utf-8", errors="replace").encode()))
        capi.autoglm_session_free(session)

    threads = [threading.Thread(target=worker, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    capi.autoglm_model_free(model)
    assert not errors
    for p in prompts:
        assert results[p] == [(0, expected[p])] * 3


def test_ctypes_abort_callback(capi, model_path):
    calls = {"n": 0, "limit": 0}

    @ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p)
    def abort(_user):
        calls["n"] += 1
        return calls["n"] > calls["limit"]

    model, session = ctypes.c_void_p(), ctypes.c_void_p()
    assert capi.autoglm_model_load(str(model_path).encode(), capi.autoglm_model_default_params(), ctypes.byref(model)) == 0
    sp = capi.autoglm_session_default_params()
    sp.n_ctx = 128
    sp.abort_callback = ctypes.cast(abort, ctypes.c_void_p)
    assert capi.autoglm_session_create(model, sp, ctypes.byref(session)) == 0
    try:
        status, _ = _generate_ctypes(capi, session, "Hello", 8)  # aborted while evaluating the prompt
        assert status == -5 and "aborted" in capi.autoglm_last_error().decode()
        calls.update(n=0, limit=3)  # the prompt, then two tokens: aborted inside next()
        gen, n, done = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_bool()
        gp = capi.autoglm_generation_default_params()
        assert capi.autoglm_generation_start(session, b"Hello", True, capi.autoglm_sampling_default_params(), gp,
                                             ctypes.byref(gen)) == 0
        buf = ctypes.create_string_buffer(64)
        statuses = [capi.autoglm_generation_next(gen, buf, 64, ctypes.byref(n), ctypes.byref(done)) for _ in range(8)]
        assert -5 in statuses and all(s == -5 for s in statuses[statuses.index(-5):])  # the failure sticks
        assert "failed earlier" in capi.autoglm_last_error().decode()
        capi.autoglm_generation_free(gen)
        calls.update(n=0, limit=10**9)
        assert _generate_ctypes(capi, session, "Hello", 8)[0] == 0  # the session is still usable
    finally:
        capi.autoglm_session_free(session)
        capi.autoglm_model_free(model)
