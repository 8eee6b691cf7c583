"""`autoglm-gguf serve` through the official openai SDK and raw HTTP: results equal the in-process
API's, every error has its status and OpenAI's error shape, and the server keeps serving."""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest

from _server_util import RunningServer, png_data_url
from autoglm_gguf import AutoGLM
from autoglm_gguf.actions import parse_answer
from autoglm_gguf.server import ServerSettings

MESSAGES = [{"role": "system", "content": "You are a phone agent."},
            {"role": "user", "content": "Open Settings and turn on Wi-Fi."}]


@pytest.fixture(scope="module")
def server(tiny_f32_files):
    s = ServerSettings(model=str(tiny_f32_files[0]), mmproj=str(tiny_f32_files[1]), alias="tiny", n_ctx=1024,
                       n_threads=2, parallel=2, max_queue=8)
    with RunningServer(s) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def ref(tiny_f32_files):
    """The in-process API on the same files: what every server answer is compared with."""
    return AutoGLM(tiny_f32_files[0], mmproj_path=tiny_f32_files[1], n_ctx=1024, n_threads=2)


def image_messages(url: str, text: str = "Tap the search box.") -> list[dict]:
    return [MESSAGES[0], {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": text}]}]


def test_chat_without_stream_equals_the_in_process_api(client, ref):
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    want = ref.create_chat_completion(MESSAGES, max_tokens=12, temperature=0.0)
    assert r.choices[0].message.content == want["choices"][0]["message"]["content"]
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == want["choices"][0]["finish_reason"] in ("stop", "length")
    assert r.object == "chat.completion" and r.model == "tiny"
    assert r.usage.prompt_tokens == len(ref.tokenize(ref.apply_chat_template(MESSAGES)))
    assert r.usage.completion_tokens == len(ref.last_tokens)
    timings = r.model_extra["timings"]
    assert timings["predicted_n"] == r.usage.completion_tokens and timings["prompt_ms"] >= 0


def test_stream_with_a_png_screenshot_equals_the_in_process_api_and_reuses_the_cache(client, ref):
    url = png_data_url(64, 112, seed=3)
    msgs = image_messages(url)
    args = {"max_tokens": 10, "temperature": 0.0, "top_p": 0.85, "frequency_penalty": 0.2}
    want = ref.create_chat_completion(msgs, **args, openai_penalties=True)["choices"][0]["message"]["content"]
    for attempt in range(2):
        stream = client.chat.completions.create(model="tiny", messages=msgs, stream=True,
                                                stream_options={"include_usage": True}, **args)
        chunks = list(stream)
        assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content is None
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == want
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish in (["stop"], ["length"])
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
        cached = chunks[-1].usage.prompt_tokens_details.cached_tokens
        if attempt == 1:  # the same conversation again: all but the last prompt cell come from a slot's cache
            assert cached == chunks[-1].usage.prompt_tokens - 1


def test_sampling_fields_reach_the_sampler(client, ref):
    # Seeded sampling with every knob set gives the in-process result for the same seed.
    args = {"temperature": 0.9, "top_p": 0.9, "max_tokens": 10, "seed": 1234, "frequency_penalty": 0.5,
            "presence_penalty": 0.3}
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, **args,
                                       extra_body={"top_k": 40, "min_p": 0.01, "repetition_penalty": 1.1})
    want = ref.create_chat_completion(MESSAGES, **args, top_k=40, min_p=0.01, repeat_penalty=1.1,
                                      openai_penalties=True)
    assert r.choices[0].message.content == want["choices"][0]["message"]["content"]
    r2 = client.chat.completions.create(model="tiny", messages=MESSAGES, **{**args, "seed": 99})
    assert isinstance(r2.choices[0].message.content, str)


def test_stop_strings_and_completions_endpoint(client, ref):
    prompt = "[gMASK]<sop><|user|>\nhello<|assistant|>\n"
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0)
    assert r.choices[0].text == ref.generate(prompt, max_tokens=8)
    stop = r.choices[0].text[2:4]
    if stop:
        r2 = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0, stop=[stop])
        assert r2.choices[0].text == r.choices[0].text[: r.choices[0].text.find(stop)]
        assert r2.choices[0].finish_reason == "stop"
    pieces = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in pieces if p.choices) == r.choices[0].text


def test_info_endpoints(server, ref):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    models = httpx.get(server.url + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
    ids = httpx.post(server.url + "/tokenize", json={"content": "hello world"}).json()["tokens"]
    assert ids == ref.tokenize("hello world")
    assert httpx.post(server.url + "/detokenize", json={"tokens": ids}).json()["content"] == "hello world"
    slots = httpx.get(server.url + "/slots").json()
    assert [s["id"] for s in slots] == [0, 1] and not any(s["busy"] for s in slots)
    text = httpx.get(server.url + "/metrics").text
    for name in ("autoglm_requests_total", "autoglm_generated_tokens_total", "autoglm_queue_depth",
                 "autoglm_prompt_tokens_cached_total", "autoglm_image_cache_hits"):
        assert f"# TYPE {name}" in text


def _error(resp: httpx.Response, status: int, *fragments: str) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    for f in fragments:
        assert f in err["message"], err["message"]
    return err


def test_grammar_extension_constrains_the_answer_as_in_process(client, ref):
    from autoglm_gguf.agent.answer_grammar import answer_grammar

    grammar = answer_grammar(max_thinking_tokens=12, max_string_chars=10)
    args = {"max_tokens": 200, "temperature": 0.0, "frequency_penalty": 0.2}
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, extra_body={"grammar": grammar}, **args)
    want = ref.create_chat_completion(MESSAGES, grammar=grammar, openai_penalties=True, **args)
    text = r.choices[0].message.content
    assert text == want["choices"][0]["message"]["content"]
    assert r.choices[0].finish_reason == "stop"
    assert parse_answer(text).parsed is not None


def test_bad_requests_get_clear_4xx_answers_and_the_server_keeps_serving(server, client, tmp_path):
    post = lambda body, path="/v1/chat/completions", **kw: httpx.post(server.url + path, timeout=60, **kw,
                                                                      **({"json": body} if body is not None else {}))
    _error(post(None, content=b"{not json"), 400, "not valid JSON")
    _error(post({"messages": "hi"}), 400, "'messages'")
    _error(post({"messages": [{"role": "robot", "content": "x"}]}), 400, "messages[0].role")
    _error(post({"messages": MESSAGES, "temperature": "hot"}), 400, "'temperature' must be a number")
    _error(post({"messages": MESSAGES, "max_tokens": -3}), 400, "'max_tokens'")
    _error(post({"messages": MESSAGES, "n": 2}), 400, "'n' = 2 is not supported")
    _error(post({"messages": MESSAGES, "model": 5}), 400, "'model' must be a string")
    _error(post({"messages": [{"role": "user", "content": [{"type": "audio", "x": 1}]}]}), 400, "unsupported")
    _error(post({"messages": image_messages("data:image/png;base64,@@not-base64@@")}), 400, "content[0]")
    garbage = "data:image/png;base64," + base64.b64encode(b"\x89PNG but not really an image").decode()
    _error(post({"messages": image_messages(garbage)}), 400, "content[0]")
    _error(post({"messages": image_messages("https://example.com/a.png")}), 400, "offline")
    (tmp_path / "s.png").write_bytes(base64.b64decode(png_data_url(8, 8).split(",")[1]))
    _error(post({"messages": image_messages(f"file://{tmp_path / 's.png'}")}), 400, "--allowed-local-media-path")
    err = _error(post({"messages": [{"role": "user", "content": "tap " * 2000}]}), 400, "more than a slot's context")
    assert err["code"] == "context_length_exceeded"
    _error(post({"messages": MESSAGES, "grammar": "start: nowhere"}), 400, "grammar does not compile")
    _error(post({"messages": MESSAGES, "grammar": 5}), 400, "'grammar'")
    _error(post({"content": 3}, "/tokenize"), 400, "'content'")
    _error(post({"tokens": [10 ** 9]}, "/detokenize"), 400, "'tokens'")
    _error(httpx.get(server.url + "/v1/nope"), 404, "/v1/nope")
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=7)
    # still serving
    assert client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3).choices[0].finish_reason


def test_local_files_only_under_the_allowed_directory(tiny_f32_files, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    png = base64.b64decode(png_data_url(40, 40, seed=1).split(",")[1])
    (media / "screen.png").write_bytes(png)
    (tmp_path / "secret.png").write_bytes(png)
    s = ServerSettings(model=str(tiny_f32_files[0]), mmproj=str(tiny_f32_files[1]), n_ctx=512, n_threads=2,
                       allowed_local_media_path=str(media))
    with RunningServer(s) as srv:
        def ask(url):
            return httpx.post(srv.url + "/v1/chat/completions", timeout=60,
                              json={"messages": image_messages(url), "max_tokens": 2})
        assert ask(f"file://{media / 'screen.png'}").status_code == 200
        _error(ask(f"file://{media / '..' / 'secret.png'}"), 400, "outside the allowed media directory")
        _error(ask(f"file://{media / 'missing.png'}"), 400, "cannot read")


def test_api_key(tiny_f32_files):
    s = ServerSettings(model=str(tiny_f32_files[0]), n_ctx=256, n_threads=2, api_key="sekrit")
    with RunningServer(s) as srv:
        assert httpx.get(srv.url + "/health").status_code == 200  # health needs no key
        bad = openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="x", messages=MESSAGES, max_tokens=2)
        good = openai.OpenAI(base_url=srv.url + "/v1", api_key="sekrit", max_retries=0)
        assert good.chat.completions.create(model="x", messages=MESSAGES, max_tokens=2).choices


def test_predict_returns_thinking_action_and_the_raw_text(server, ref):
    url = png_data_url(48, 96, seed=5)
    body = {"image": url.split(",", 1)[1], "text": "Open Settings", "max_tokens": 12}
    r = httpx.post(server.url + "/predict", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "Open Settings"}]}]
    want = ref.create_chat_completion(msgs, max_tokens=12, temperature=0.0, top_p=0.85, frequency_penalty=0.2,
                                      openai_penalties=True)["choices"][0]["message"]["content"]
    assert out["raw"] == want
    assert set(out) >= {"thinking", "action", "action_text", "raw", "timings", "usage"}
    assert (out["action"] is None) == ("error" in out)
    _error(httpx.post(server.url + "/predict", json={"image": url}), 400, "'text'")


def test_raw_sse_stream_is_openai_shaped(server):
    resp = httpx.post(server.url + "/v1/chat/completions", timeout=60,
                      json={"messages": MESSAGES, "max_tokens": 2, "stream": True})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and all("choices" in json.loads(e) for e in events[:-1])


def test_health_and_requests_while_loading_and_after_a_failed_load(tiny_f32_files, tmp_path):
    from fastapi.testclient import TestClient

    from autoglm_gguf.server.app import create_app

    s = ServerSettings(model=str(tiny_f32_files[0]), n_ctx=256, n_threads=2)
    app = create_app(s, load=False)  # loading is driven by hand here
    with TestClient(app) as c:
        assert c.get("/health").status_code == 503 and c.get("/health").json() == {"status": "loading"}
        r = c.post("/v1/chat/completions", json={"messages": MESSAGES})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading" and "Retry-After" in r.headers
        app.state.engine.load()
        assert c.get("/health").json() == {"status": "ok"}
        assert c.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2}).status_code == 200
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00 truncated")
    app = create_app(ServerSettings(model=str(bad)), load=False)
    with TestClient(app) as c:
        app.state.engine.load()
        h = c.get("/health")
        assert h.status_code == 503 and h.json()["status"] == "error" and "broken.gguf" in h.json()["error"]
        r = c.post("/v1/chat/completions", json={"messages": MESSAGES})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_load_failed"


def test_each_conversation_goes_back_to_the_slot_that_holds_it(tiny_f32_files):
    s = ServerSettings(model=str(tiny_f32_files[0]), n_ctx=1024, n_threads=2, parallel=2)
    with RunningServer(s) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, timeout=120)
        system = {"role": "system", "content": "You are a phone agent."}
        convs = {"A": [system, {"role": "user", "content": "Open Settings and turn on Wi-Fi, then Bluetooth. " * 3}],
                 "B": [system, {"role": "user", "content": "Search the web for tomorrow's weather in Paris. " * 3}]}
        first = {}
        for name in "AB":  # two agents' first steps, then their second steps in turn
            first[name] = client.chat.completions.create(model="m", messages=convs[name], max_tokens=4, temperature=0)
            convs[name] += [{"role": "assistant", "content": first[name].choices[0].message.content},
                            {"role": "user", "content": f"** Screen Info ** step 2 of {name}"}]
        for name in "BA":  # not the least recently used order: only the prefix match sends each home
            r = client.chat.completions.create(model="m", messages=convs[name], max_tokens=4, temperature=0)
            assert r.usage.prompt_tokens_details.cached_tokens >= first[name].usage.prompt_tokens - 1, name
        assert sorted(sl["n_cached"] > 0 for sl in httpx.get(srv.url + "/slots").json()) == [True, True]


def test_serve_command_reports_bad_arguments(tmp_path):
    import subprocess
    import sys

    def serve(*args):
        return subprocess.run([sys.executable, "-m", "autoglm_gguf.cli", "serve", *args], capture_output=True,
                              text=True, timeout=60, check=False)

    r = serve("-m", str(tmp_path / "missing.gguf"))
    assert r.returncode == 1 and "missing.gguf: no such model file" in r.stderr
    (tmp_path / "m.gguf").write_bytes(b"x")
    r = serve("-m", str(tmp_path / "m.gguf"), "--parallel", "0")
    assert r.returncode == 1 and "--parallel must be >= 1" in r.stderr
