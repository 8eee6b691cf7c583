"""The server under pressure: keep-alive while a request waits, clients that leave mid-prefill and
mid-generation (their slot is freed promptly and the next answer equals a cold run's), a full queue,
and 50 concurrent clients on loopback (bounded in count and time)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time

import httpx
import pytest

from _server_util import RunningServer
from autoglm_gguf import AutoGLM
from autoglm_gguf.server import ServerSettings

LONG_PROMPT = "[gMASK]<sop><|user|>\n" + "tap the button and swipe up " * 250 + "<|assistant|>\n"  # ~3300 tokens
SHORT = [{"role": "user", "content": "Open Settings."}]


@pytest.fixture(scope="module")
def server(tiny_f32_model_file):
    # One slot, one micro-batch per token: a long prompt takes a while, and everything else queues.
    s = ServerSettings(model=str(tiny_f32_model_file), n_ctx=4096, n_batch=1, n_threads=2, parallel=1,
                       max_queue=1, keepalive_s=0.2)
    with RunningServer(s) as srv:
        yield srv


def slot0(srv) -> dict:
    return httpx.get(srv.url + "/slots").json()[0]


def wait_for(cond, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)
    return time.monotonic() - t0


class Stream:
    """A streamed request read line by line in a thread, that the test can abandon (disconnect)."""

    def __init__(self, srv, body: dict, path: str = "/v1/completions"):
        self.lines: list[str] = []
        self.client = httpx.Client(timeout=120)
        self.cm = self.client.stream("POST", srv.url + path, json={**body, "stream": True})
        self.resp = self.cm.__enter__()
        self.status = self.resp.status_code
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for line in self.resp.iter_lines():
                self.lines.append(line)
        except (httpx.HTTPError, RuntimeError, AttributeError):
            pass  # closed by the test

    def close(self):
        self.resp.close()
        self.client.close()

    def data(self) -> list:
        return [line[6:] for line in list(self.lines) if line.startswith("data: ")]


def test_waiting_stream_gets_keepalives_queue_full_is_503_and_disconnects_free_the_slot(server,
                                                                                        tiny_f32_model_file):
    endless = {"prompt": "[gMASK]<sop><|user|>\nhi<|assistant|>\n", "max_tokens": 100000, "ignore_eos": True}
    a = Stream(server, endless)
    wait_for(lambda: slot0(server)["busy"], 30, "the first request to take the slot")
    b = Stream(server, {"prompt": LONG_PROMPT, "max_tokens": 4})  # queued behind a
    assert b.status == 200
    # The queue (1) is full now: a third request is refused at once, in OpenAI's error shape.
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "queue_full"
    assert "--max-queue 1" in r.json()["error"]["message"]
    # While b waits, its connection carries SSE comments (the SDK's read timeout never fires).
    wait_for(lambda: any(line.startswith(": keep-alive") for line in b.lines), 30, "a keep-alive comment")
    assert b.data() == []
    # a leaves mid-generation: its slot is released promptly and goes to b.
    assert a.data(), "a was generating"
    a.close()
    wait_for(lambda: slot0(server)["busy"] and slot0(server)["prompt_progress"] not in (None, [0, 0]), 30,
             "b to start its prefill")
    # b leaves mid-prefill: measured from the disconnect to the slot being free.
    progress = slot0(server)["prompt_progress"]
    b.close()
    freed = wait_for(lambda: not slot0(server)["busy"], 10, "the slot to be freed after b left")
    print(f"\nslot freed {freed * 1000:.0f} ms after the client left mid-prefill (at {progress[0]}/{progress[1]})")
    assert progress[0] < progress[1]
    metrics = httpx.get(server.url + "/metrics").text
    assert "autoglm_requests_cancelled_total 2" in metrics
    # The next answer on that slot equals a cold run's, though its cache holds part of the same prompt.
    r = httpx.post(server.url + "/v1/completions", json={"prompt": LONG_PROMPT, "max_tokens": 6, "temperature": 0},
                   timeout=120)
    assert r.status_code == 200, r.text
    cold = AutoGLM(tiny_f32_model_file, n_ctx=4096, n_threads=2).generate(LONG_PROMPT, max_tokens=6)
    assert r.json()["choices"][0]["text"] == cold


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_fifty_concurrent_clients(tiny_f32_model_file):
    s = ServerSettings(model=str(tiny_f32_model_file), n_ctx=512, n_threads=2, parallel=2, max_queue=16)
    msgs = [{"role": "user", "content": f"Open app number {i}."} for i in range(5)]
    ref = AutoGLM(tiny_f32_model_file, n_ctx=512, n_threads=2)
    want = [ref.create_chat_completion([m], max_tokens=16)["choices"][0]["message"]["content"] for m in msgs]
    with RunningServer(s) as srv:
        base = rss_mib()
        peak = [base]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mib())
                time.sleep(0.01)

        def one(i: int):
            body = {"messages": [msgs[i % 5]], "max_tokens": 16, "temperature": 0, "stream": i % 2 == 0}
            with httpx.Client(timeout=120) as c:
                r = c.post(srv.url + "/v1/chat/completions", json=body)
            if r.status_code != 200:
                return i, r.status_code, r.json()["error"]["code"]
            if body["stream"]:
                chunks = [json.loads(line[6:]) for line in r.text.splitlines()
                          if line.startswith("data: ") and line != "data: [DONE]"]
                text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
            else:
                text = r.json()["choices"][0]["message"]["content"]
            return i, 200, text

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(50) as ex:
            results = list(ex.map(one, range(50)))
        elapsed = time.monotonic() - t0
        stop.set()
        watcher.join()
        ok = [r for r in results if r[1] == 200]
        refused = [r for r in results if r[1] != 200]
        assert all(r[1] == 503 and r[2] == "queue_full" for r in refused), refused
        assert len(ok) >= 2 + 16
        for i, _, text in ok:
            assert text == want[i % 5], i
        print(f"\n50 clients: {len(ok)} answered, {len(refused)} refused (queue full) in {elapsed:.1f} s; "
              f"RSS {base:.0f} -> peak {peak[0]:.0f} MiB")
        assert peak[0] - base < 512
        assert httpx.get(srv.url + "/slots").json()[0]["busy"] is False
        assert httpx.get(srv.url + "/health").json() == {"status": "ok"}
