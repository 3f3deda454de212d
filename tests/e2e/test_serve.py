"""tessera serve end to end: real servers under mpirun (2 ranks with TP, 4 with TP and PP) on the
loopback interface, driven by the official openai client and by curl; streamed text equal to the
whole answer for the same seed and to the one-rank batch job; log-probabilities against Hugging
Face transformers; 64 concurrent streaming clients; clients that leave mid-stream; a full queue;
broken requests of many kinds; and SIGTERM."""
import asyncio
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import make_hf_checkpoint, MPI_ENV

MODEL = "tiny"


class Server:
    """mpirun -np N tessera serve ... on a free loopback port; stop() sends SIGTERM to rank 0."""

    def __init__(self, tessera, model, ranks, *args):
        source = ["--random", model] if model.endswith(".json") else ["-m", model]
        cmd = ["mpirun", "-np", str(ranks), tessera, "serve", *source, "--port", "0",
               "--served-model-name", MODEL, "--kv-cache-tokens", "4096", "--stats-interval", "0",
               *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=MPI_ENV)
        self.log = []
        self.port = None
        self.pid = None
        found = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+) \(pid (\d+)", line)
                if m:
                    self.port, self.pid = int(m.group(1)), int(m.group(2))
                    found.set()
            found.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        found.wait(60)
        assert self.port, "the server did not start:\n" + "".join(self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        self.first_health = self.get("/health")  # (the model is still loading, unless quick)
        self.first_models = self.get("/v1/models")
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, "the server died:\n" + "".join(self.log)
            time.sleep(0.2)
        raise AssertionError("the server never became ready:\n" + "".join(self.log))

    def request(self, method, path, body=None, headers=None, timeout=60):
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), dict(e.headers)

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body, headers=None):
        return self.request("POST", path, body, headers)

    def metric(self, name):
        text = self.get("/metrics")[1]
        m = re.search("^" + re.escape(name) + r" (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    def wait_metric(self, name, value, seconds=20):
        deadline = time.time() + seconds
        while time.time() < deadline and self.metric(name) != value:
            time.sleep(0.1)
        return self.metric(name)

    def client(self, **kw):
        import openai
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "none"),
                             max_retries=0, **kw)

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
        self.reader.join(10)
        return self.proc.returncode


@pytest.fixture(scope="module")
def serve_model(tessera, tmp_path_factory):
    d = tmp_path_factory.mktemp("serve_hf")
    make_hf_checkpoint(str(d), max_positions=256, seed=1)
    out = str(d / "tiny.h5")
    subprocess.run([tessera, "convert", "--input", str(d), "--output", out], check=True,
                   capture_output=True)
    return str(d), out


@pytest.fixture(scope="module", params=[(2, ("--tp", "2")), (4, ("--tp", "2", "--pp", "2"))],
                ids=["tp2", "tp2-pp2"])
def server(request, tessera, serve_model):
    ranks, layout = request.param
    s = Server(tessera, serve_model[1], ranks, *layout)
    yield s
    assert s.stop() == 0, "".join(s.log)


def one_rank_batch(tessera, model, tmp_path, prompts, max_tokens):
    """The one-rank batch job's greedy texts for these prompts (the reference)."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "prompt": p, "max_tokens": max_tokens,
                                       "ignore_eos": True}) + "\n" for i, p in enumerate(prompts)))
    subprocess.run([tessera, "generate", "-m", model, "-i", str(inp), "-o", str(out)],
                   check=True, capture_output=True)
    return [json.loads(l) for l in out.read_text().splitlines()]


PROMPTS = ["hello world", "the quick brown fox", "abc 123", "fox hello the"]


def test_openai_client_streamed_equals_whole_and_the_one_rank_run(server, serve_model, tessera,
                                                                  tmp_path):
    c = server.client()
    want = one_rank_batch(tessera, serve_model[1], tmp_path, PROMPTS, 20)
    for p, ref in zip(PROMPTS, want):
        whole = c.completions.create(model=MODEL, prompt=p, max_tokens=20,
                                     extra_body={"ignore_eos": True})
        assert whole.choices[0].text == ref["text"]
        assert whole.choices[0].finish_reason == "length"
        assert whole.usage.completion_tokens == 20
        assert whole.usage.prompt_tokens == ref["prompt_tokens"]
        assert whole.usage.total_tokens == 20 + ref["prompt_tokens"]
    # Sampled with a seed: the stream equals the whole answer, chunk by chunk joined.
    for endpoint in ("completions", "chat"):
        for seed in (1, 2):
            kw = dict(model=MODEL, max_tokens=30, temperature=0.9, top_p=0.95, seed=seed,
                      extra_body={"top_k": 50})
            if endpoint == "chat":
                msgs = [{"role": "user", "content": "hello the quick"}]
                whole = c.chat.completions.create(messages=msgs, **kw)
                chunks = list(c.chat.completions.create(messages=msgs, stream=True,
                                                        stream_options={"include_usage": True},
                                                        **kw))
                text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
                assert chunks[0].choices[0].delta.role == "assistant"
                assert text == whole.choices[0].message.content
            else:
                whole = c.completions.create(prompt="the quick", **kw)
                chunks = list(c.completions.create(prompt="the quick", stream=True,
                                                   stream_options={"include_usage": True}, **kw))
                text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
                assert text == whole.choices[0].text
            finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
            assert finals[-1] == whole.choices[0].finish_reason and finals.count(None) == len(
                finals) - 1
            assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
            assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    # n = 2: two choices, each its own seed; choice 0 is the n = 1 answer.
    two = c.completions.create(model=MODEL, prompt="abc", max_tokens=12, temperature=1.0, seed=5,
                               n=2, extra_body={"ignore_eos": True})
    one = c.completions.create(model=MODEL, prompt="abc", max_tokens=12, temperature=1.0, seed=5,
                               extra_body={"ignore_eos": True})
    assert [ch.index for ch in two.choices] == [0, 1]
    assert two.choices[0].text == one.choices[0].text
    assert two.usage.completion_tokens == 24
    # Stop strings: the text ends before the stop string, finish_reason "stop".
    full = want[0]["text"]
    stop = full[len(full) // 2:len(full) // 2 + 2]
    if stop.strip():
        cut = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=20, stop=[stop],
                                   extra_body={"ignore_eos": True})
        assert cut.choices[0].text == full[:full.index(stop)]
        assert cut.choices[0].finish_reason == "stop"
    models = c.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_curl_streams_server_sent_events(server):
    body = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 8, "stream": True,
                       "ignore_eos": True})
    r = subprocess.run(["curl", "-sN", "-H", "Content-Type: application/json", "-d", body,
                        server.url + "/v1/completions"], capture_output=True, text=True,
                       timeout=60)
    events = [l[len("data: "):] for l in r.stdout.split("\n\n") if l.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    whole = subprocess.run(["curl", "-s", "-d", body.replace('"stream": true', '"stream": false'),
                            server.url + "/v1/completions"], capture_output=True, text=True,
                           timeout=60)
    assert json.loads(whole.stdout)["choices"][0]["text"] == "".join(
        c["choices"][0]["text"] for c in chunks)


def test_logprobs_equal_transformers(server, serve_model):
    import torch
    import transformers
    hf = transformers.AutoModelForCausalLM.from_pretrained(serve_model[0]).eval()
    c = server.client()
    r = c.completions.create(model=MODEL, prompt=[5, 17, 33, 101], max_tokens=6, logprobs=3,
                             extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    chat = c.chat.completions.create(model=MODEL, max_tokens=4, logprobs=True, top_logprobs=2,
                                     messages=[{"role": "user", "content": "hello"}])
    assert len(chat.choices[0].logprobs.content) == chat.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 for t in chat.choices[0].logprobs.content)
    # The generated ids, from the same request with token ids in the answer: greedy, so the
    # token strings' ids are the argmax of each step; recompute them from transformers.
    ids = [5, 17, 33, 101]
    with torch.no_grad():
        for step in range(6):
            logits = hf(torch.tensor([ids])).logits[0, -1].double()
            logp = torch.log_softmax(logits, -1)
            best = int(torch.argmax(logits))
            assert abs(lp.token_logprobs[step] - float(logp[best])) < 2e-3, step
            top = sorted(lp.top_logprobs[step].values(), reverse=True)
            want = torch.topk(logp, 3).values.tolist()
            assert all(abs(a - b) < 2e-3 for a, b in zip(top, want)), (top, want)
            ids.append(best)
    assert lp.text_offset[0] == 0


def test_64_concurrent_streaming_clients(server):
    import openai

    async def one(client, i):
        n = 1 + (i * 7) % 40
        prompt = PROMPTS[i % len(PROMPTS)] * (1 + i % 5)
        stream = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=n,
                                                 stream=True, temperature=0.7, seed=i,
                                                 stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True})
        chunks = [c async for c in stream]
        text_chunks = [c for c in chunks if c.choices]
        return n, chunks[-1].usage.completion_tokens, text_chunks[-1].choices[0].finish_reason

    async def all_clients():
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0,
                                    timeout=300)
        out = await asyncio.gather(*(one(client, i) for i in range(64)))
        await client.close()
        return out

    def errors():  # 5xx answers so far (the readiness polls' 503s included)
        return sum(float(n) for n in re.findall(
            r'^tessera_http_responses_total\{code="5\d\d"\} (\S+)$', server.get("/metrics")[1],
            re.M))

    before, errors_before = server.metric('tessera_http_responses_total{code="200"}') or 0, errors()
    results = asyncio.run(all_clients())
    for want, got, reason in results:
        assert got == want and reason == "length"
    assert server.wait_metric("tessera_kv_blocks_used", 0) == 0
    assert server.metric("tessera_requests_running") == 0
    assert errors() == errors_before
    assert server.metric('tessera_http_responses_total{code="200"}') >= before + 64
    assert server.metric("tessera_time_to_first_token_seconds_count") >= 64


def test_bench_script_measures_the_server(server):
    script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "bench_serve.py")
    r = subprocess.run(["python3", script, "--url", server.url, "--model", MODEL, "--rates",
                        "inf", "--requests", "4", "--max-tokens", "8", "--min-words", "2",
                        "--max-words", "6"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [l for l in r.stdout.splitlines() if l.startswith("| one at a time") or
            l.startswith("| all at once")]
    assert len(rows) == 2 and all(l.split("|")[2].strip() == "4" for l in rows), r.stdout


def test_clients_that_leave_mid_stream_free_their_blocks(server):
    import http.client

    def stream(i, leave):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        conn.request("POST", "/v1/completions", json.dumps(
            {"model": MODEL, "prompt": PROMPTS[i % 4], "max_tokens": 200, "stream": True,
             "stream_options": {"include_usage": True}, "ignore_eos": True}),
            {"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200
        events, usage = 0, None
        while True:
            line = r.readline()
            if not line:
                break
            if line.startswith(b"data: "):
                events += 1
                if line.strip() == b"data: [DONE]":
                    break
                usage = json.loads(line[6:]).get("usage")
                if leave and events == 3:
                    r.close()  # mid-stream (the stream owns the connection: it ends with it)
                    conn.close()
                    return "left"
        conn.close()
        return usage["completion_tokens"]

    def finished(reason):
        return server.metric(f'tessera_requests_finished_total{{finish_reason="{reason}"}}') or 0

    before = {r: finished(r) for r in ("cancelled", "length")}
    out = [None] * 16
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, stream(i, i % 2 == 0)))
               for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert out[0::2] == ["left"] * 8
    assert out[1::2] == [200] * 8, out
    assert server.wait_metric("tessera_kv_blocks_used", 0) == 0
    # A leaver is cancelled, unless the server had written its last token before the client read
    # its third event (on a loaded machine a client thread can lag a whole tiny-model generation
    # behind): then it finished by length. Either way every request ended and its blocks are back.
    cancelled = finished("cancelled") - before["cancelled"]
    by_length = finished("length") - before["length"]
    assert by_length >= 8 and cancelled + by_length == 16, (cancelled, by_length)
    assert cancelled >= 1, "no client that left was cancelled"


def test_health_says_loading_until_every_rank_has_loaded_and_deadlines_hold(tessera):
    # Random weights of the default model's shape take a second or so to make on each rank, and
    # decode at some 20 tokens/s here: 150 tokens outlast --request-timeout 1.
    config = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "smollm2-135m.json")
    s = Server(tessera, config, 2, "--pp", "2", "--request-timeout", "1")
    try:
        status, body, _ = s.first_health
        assert status == 503 and json.loads(body)["status"] == "loading", s.first_health
        status, body, headers = s.first_models
        assert status == 503 and "loading" in json.loads(body)["error"]["message"]
        assert headers.get("Retry-After") == "1"
        status, body, _ = s.get("/health")
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert s.get("/v1/models")[0] == 200
        started = time.time()
        status, body, _ = s.post("/v1/completions", {"model": MODEL, "prompt": "hi",
                                                      "max_tokens": 150, "ignore_eos": True})
        assert status == 504 and "--request-timeout 1 s" in json.loads(body)["error"]["message"]
        assert time.time() - started < 5
        r = subprocess.run(["curl", "-sN", "-d", json.dumps(
            {"model": MODEL, "prompt": "hi", "max_tokens": 150, "ignore_eos": True,
             "stream": True}), s.url + "/v1/completions"], capture_output=True, text=True,
            timeout=60)
        events = [e[6:] for e in r.stdout.split("\n\n") if e.startswith("data: ")]
        assert events[-1] == "[DONE]" and "--request-timeout" in json.loads(events[-2])["error"][
            "message"], r.stdout[-500:]
        assert s.wait_metric("tessera_kv_blocks_used", 0) == 0
    finally:
        assert s.stop() == 0


def test_a_full_queue_answers_503_with_retry_after(tessera, serve_model):
    s = Server(tessera, serve_model[1], 2, "--pp", "2", "--max-batch", "2",
               "--max-queued-requests", "2")
    try:
        results = [None] * 12

        def go(i):
            results[i] = s.post("/v1/completions", {"model": MODEL, "prompt": "hello",
                                                     "max_tokens": 150, "ignore_eos": True})

        threads = [threading.Thread(target=go, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        codes = sorted(r[0] for r in results)
        assert set(codes) == {200, 503}, codes
        # The queue's 2 are always taken; the 2 running beside them only if the engine admitted
        # some of the burst before the rest arrived (a loaded CI machine took 3 of 12 once).
        assert codes.count(200) >= 2
        for status, body, headers in results:
            if status == 503:
                assert headers.get("Retry-After") == "1"
                assert "--max-queued-requests 2" in json.loads(body)["error"]["message"]
            else:
                assert json.loads(body)["usage"]["completion_tokens"] == 150
        assert s.wait_metric("tessera_kv_blocks_used", 0) == 0
    finally:
        assert s.stop() == 0


BAD_REQUESTS = [
    # (path, body, expected status, words in the error message)
    ("/v1/completions", b'{"model": "tiny", "prompt": ', 400, "malformed JSON"),
    ("/v1/completions", b"", 400, "malformed JSON"),
    ("/v1/completions", b"[1, 2, 3]", 400, "JSON object"),
    ("/v1/completions", {"prompt": "a"}, 400, "'model' is required"),
    ("/v1/completions", {"model": "gpt-4", "prompt": "a"}, 404, "'gpt-4' does not exist"),
    ("/v1/completions", {"model": 7, "prompt": "a"}, 400, "'model' must be a string"),
    ("/v1/completions", {"model": "tiny"}, 400, "'prompt' is required"),
    ("/v1/completions", {"model": "tiny", "prompt": {"a": 1}}, 400, "'prompt' must be"),
    ("/v1/completions", {"model": "tiny", "prompt": [1, 100000]}, 400, "outside the vocabulary"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": "5"}, 400, "integer"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": -3}, 400, "at least 1"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 1000}, 400,
     "context window is 256"),
    ("/v1/completions", {"model": "tiny", "prompt": "hello world " * 200}, 400,
     "context window is 256"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "temperature": "hot"}, 400,
     "'temperature' must be a number"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "top_p": 1.5}, 400, "top_p"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "n": 1000}, 400, "'n' must be in"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "logprobs": 50}, 400, "[0, 20]"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "stream": "yes"}, 400, "true or false"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "stop": [3]}, 400, "non-empty strings"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "frobnicate": True}, 400,
     "unknown field 'frobnicate'"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "stream_options":
                         {"include_usage": True}}, 400, "needs \"stream\": true"),
    ("/v1/chat/completions", {"model": "tiny", "messages": []}, 400, "non-empty array"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user"}]}, 400, "'content'"),
    ("/v1/chat/completions", {"model": "tiny", "messages": "hi"}, 400, "non-empty array"),
    ("/v1/chat/completions", {"model": "tiny", "prompt": "a"}, 400, "unknown field 'prompt'"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a"}],
                              "top_logprobs": 2}, 400, "needs \"logprobs\": true"),
    ("/v1/completions", b"{" + b'"prompt": "' + b"a" * 70000 + b'"}', 413, "too large"),
    ("/v1/nothing", {"model": "tiny"}, 404, "no route"),
    ("/v1/completions", b'{"model": ' + b"[" * 30000 + b"]" * 30000 + b"}", 400,
     "nested deeper than 64"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 2 ** 63 - 1}, 400,
     "context window is 256"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "stop": ["x"] * 17}, 400, "at most 16"),
]


def test_bad_requests_get_clear_4xx_and_the_server_goes_on(tessera, serve_model):
    s = Server(tessera, serve_model[1], 2, "--tp", "2", "--api-key", "sesame",
               "--max-body-bytes", "65536")
    try:
        auth = {"Authorization": "Bearer sesame"}
        assert s.post("/v1/completions", {"model": MODEL, "prompt": "a"})[0] == 401
        assert s.post("/v1/completions", {"model": MODEL, "prompt": "a"},
                      {"Authorization": "Bearer wrong"})[0] == 401
        assert s.get("/v1/models")[0] == 401
        assert s.get("/health")[0] == 200  # no key needed
        status, body, _ = s.request("GET", "/v1/completions", headers=auth)
        assert status == 405
        for path, body, want, words in BAD_REQUESTS:
            status, text, headers = s.post(path, body, auth)
            assert status == want, (path, body if len(str(body)) < 200 else "...", text)
            err = json.loads(text)["error"]
            assert words in err["message"], (words, err)
            assert err["type"]
        # Everyone else is still served, correctly.
        c = s.client(api_key="sesame")
        r = c.completions.create(model=MODEL, prompt="hello world", max_tokens=10,
                                 extra_body={"ignore_eos": True})
        assert r.usage.completion_tokens == 10
        assert s.wait_metric("tessera_kv_blocks_used", 0) == 0
        assert s.metric('tessera_http_responses_total{code="400"}') >= 20
    finally:
        assert s.stop() == 0


def raw_exchange(port, request, half_close):
    """Sends raw request bytes, half-closes the socket (shutdown(SHUT_WR), as nc -N does) when
    asked, and returns everything the server sends until it closes, and the seconds it took."""
    import socket
    t0 = time.time()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(request)
    if half_close:
        sock.shutdown(socket.SHUT_WR)
    sock.settimeout(30)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    return data, time.time() - t0


def post_bytes(body, version="HTTP/1.1", extra=b""):
    return (b"POST /v1/completions " + version.encode() + b"\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_half_closed_clients_are_answered(tessera, serve_model):
    """A client that shuts down its sending half after the request (nc -N, HTTP/1.0 tools, health
    checkers) is answered: health, errors, whole answers (after an interim 100 Continue when
    the FIN was seen while the answer ran) and streams; answers equal those of an ordinary
    client, and nothing is cancelled. (Clients that close their socket are still taken for gone:
    test_a_stream_whose_client_closes_before_its_first_token_is_cancelled, and the closed
    non-streamed client of the SIGTERM test.)"""
    s = Server(tessera, serve_model[1], 2, "--tp", "2", "--api-key", "sesame")
    try:
        for version in (b"HTTP/1.1", b"HTTP/1.0"):
            data, _ = raw_exchange(s.port, b"GET /health " + version + b"\r\nHost: x\r\n\r\n",
                                   True)
            assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b'{"status":"ok"}'), data
        data, _ = raw_exchange(s.port, post_bytes(b'{"prompt": "a"}'), True)
        assert data.startswith(b"HTTP/1.1 401 ") and b"API key" in data, data
        auth = b"Authorization: Bearer sesame\r\n"
        body = {"model": MODEL, "prompt": "hello world", "max_tokens": 8, "ignore_eos": True}
        want = json.loads(s.post("/v1/completions", body,
                                 {"Authorization": "Bearer sesame"})[1])["choices"][0]["text"]
        data, _ = raw_exchange(s.port, post_bytes(json.dumps(body).encode(), extra=auth), True)
        # (an interim 100 Continue first when the answer took long enough to see the FIN)
        data = data.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
        head, _, answer = data.partition(b"\r\n\r\n")
        assert b"Content-Length: %d" % len(answer) in head
        assert json.loads(answer)["choices"][0]["text"] == want
        # HTTP/1.0: no interim answer, the same text.
        data, _ = raw_exchange(s.port, post_bytes(json.dumps(body).encode(), "HTTP/1.0", auth),
                               True)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
        assert json.loads(data.partition(b"\r\n\r\n")[2])["choices"][0]["text"] == want
        # A stream: chunked (HTTP/1.1) or delimited by the close (HTTP/1.0), the same text.
        streamed = dict(body, stream=True)
        for version in ("HTTP/1.1", "HTTP/1.0"):
            data, _ = raw_exchange(s.port, post_bytes(json.dumps(streamed).encode(), version,
                                                      auth), True)
            head, _, rest = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK") and b"text/event-stream" in head, data
            if version == "HTTP/1.1":
                assert b"Transfer-Encoding: chunked" in head
                events, at = b"", 0
                while True:
                    end = rest.index(b"\r\n", at)
                    size = int(rest[at:end], 16)
                    if size == 0:
                        break
                    events += rest[end + 2:end + 2 + size]
                    at = end + 4 + size
            else:
                assert b"Transfer-Encoding" not in head
                events = rest
            chunks = [json.loads(e[6:]) for e in events.decode().split("\n\n")
                      if e.startswith("data: {")]
            assert "".join(c["choices"][0]["text"] for c in chunks) == want, version
            assert events.rstrip().endswith(b"data: [DONE]")
        assert s.wait_metric("tessera_kv_blocks_used", 0) == 0
        assert (s.metric('tessera_requests_finished_total{finish_reason="cancelled"}') or 0) == 0
    finally:
        assert s.stop() == 0


def test_declared_bodies_too_large_or_malformed_are_refused_at_once(tessera, serve_model):
    """A Content-Length above --max-body-bytes is answered 413, a negative or non-numeric one
    400, at once and without reading (or waiting for) the body; the server goes on."""
    s = Server(tessera, serve_model[1], 1, "--max-body-bytes", "65536")
    try:
        for length, status, words in [(b"999999999", b"413", b"more than --max-body-bytes"),
                                      (b"-5", b"400", b"is not a number of bytes"),
                                      (b"12abc", b"400", b"is not a number of bytes")]:
            for expect in (b"", b"Expect: 100-continue\r\n"):  # (curl asks before big bodies)
                request = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                           b"application/json\r\n" + expect + b"Content-Length: " + length +
                           b"\r\n\r\n")
                data, seconds = raw_exchange(s.port, request, False)
                assert data.startswith(b"HTTP/1.1 " + status), data  # (no 100 Continue first)
                assert words in data and b"Connection: close" in data
                assert seconds < 3, seconds  # not the 30 s read timeout
        # A refused body that arrives anyway is read and dropped: the client gets the 413.
        big = b"x" * 200_000
        data, _ = raw_exchange(s.port, post_bytes(big), False)
        assert data.startswith(b"HTTP/1.1 413"), data[:200]
        assert s.post("/v1/completions", {"model": MODEL, "prompt": "a", "max_tokens": 2})[0] == 200
    finally:
        assert s.stop() == 0


def test_a_stream_whose_client_closes_before_its_first_token_is_cancelled(tessera,
                                                                         default_model):
    """With one request at a time, a second streamed request waits; its client closes the
    socket before the first token: the SSE comment sent once its FIN is seen comes back as a
    reset, and the request is cancelled while the first still runs."""
    import http.client
    import socket
    s = Server(tessera, default_model, 1, "--max-batch", "1")
    try:
        first = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)
        first.request("POST", "/v1/completions", json.dumps(
            {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 150, "stream": True,
             "ignore_eos": True}), {"Content-Type": "application/json"})
        r = first.getresponse()
        assert r.readline().startswith(b"data: ")
        waiting = socket.create_connection(("127.0.0.1", s.port))
        waiting.sendall(post_bytes(json.dumps({"model": MODEL, "prompt": "Hello", "max_tokens": 50,
                                               "stream": True}).encode()))
        head = b""
        while b"\r\n\r\n" not in head:  # it reads the answer's head (nothing left unread)
            head += waiting.recv(1)
        assert head.startswith(b"HTTP/1.1 200"), head
        time.sleep(0.5)
        waiting.close()
        assert s.wait_metric('tessera_requests_finished_total{finish_reason="cancelled"}', 1,
                             seconds=5) == 1
        assert s.metric('tessera_requests_finished_total{finish_reason="length"}') is None, \
            "the first request finished before the second was cancelled: too slow to tell"
        rest = r.read().decode()
        assert rest.rstrip().endswith("data: [DONE]")
    finally:
        assert s.stop() == 0


def test_sigterm_finishes_running_requests_and_stops_every_rank(tessera, default_model):
    # The default model, slow enough on these CPUs that the request is still running.
    s = Server(tessera, default_model, 4, "--pp", "4")
    import http.client
    import socket
    # First a non-streamed client that leaves while its request runs: the server sees the socket
    # close and cancels the request.
    sock = socket.create_connection(("127.0.0.1", s.port))
    body = json.dumps({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 100,
                       "ignore_eos": True}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(1.0)
    sock.close()
    assert s.wait_metric('tessera_requests_finished_total{finish_reason="cancelled"}', 1) == 1
    assert s.wait_metric("tessera_kv_blocks_used", 0) == 0
    assert (s.metric("tessera_generation_tokens_total") or 0) < 100
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)
    conn.request("POST", "/v1/completions", json.dumps(
        {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 60, "stream": True,
         "ignore_eos": True}), {"Content-Type": "application/json"})
    r = conn.getresponse()
    first = r.readline()
    assert first.startswith(b"data: ")
    os.kill(s.pid, signal.SIGTERM)
    time.sleep(0.3)
    assert s.get("/health")[0] == 503
    assert s.post("/v1/completions", {"model": MODEL, "prompt": "a"})[0] == 503
    rest = r.read().decode()
    chunks = [json.loads(e[6:]) for e in (first.decode() + rest).split("\n\n")
              if e.startswith("data: {")]
    assert rest.rstrip().endswith("data: [DONE]")
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert s.proc.wait(60) == 0
    s.reader.join(10)
    assert any("shut down after" in l for l in s.log), "".join(s.log)


def test_speculative_decoding_streams_the_same_text(tessera, default_model):
    """--speculative ngram on the default model asked to copy a sentence: a streamed answer and a
    whole one equal the answer of a server without speculation (greedy, and seeded), and
    /metrics counts the proposals and accepted tokens."""
    msgs = [{"role": "user", "content": "Repeat this sentence exactly: The lighthouse keeper "
             "climbed the stairs every evening at dusk, carrying a can of oil and a cloth to "
             "clean the great lens."}]
    answers = {}
    for spec in ("off", "ngram"):
        s = Server(tessera, default_model, 1, "--speculative", spec)
        try:
            c = s.client()
            for label, kw in (("greedy", {"temperature": 0}),
                              ("seeded", {"temperature": 0.8, "seed": 11})):
                whole = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=40, **kw)
                chunks = list(c.chat.completions.create(model=MODEL, messages=msgs,
                                                        max_tokens=40, stream=True, **kw))
                streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks
                                   if ch.choices)
                assert streamed == whole.choices[0].message.content, (spec, label)
                answers[spec, label] = streamed
            accepted = s.metric("tessera_spec_decode_num_accepted_tokens_total")
            proposed = s.metric("tessera_spec_decode_num_draft_tokens_total")
            if spec == "ngram":
                assert proposed > 0 and 0 < accepted <= proposed, (proposed, accepted)
            else:
                assert proposed == 0 and accepted == 0, (proposed, accepted)
        finally:
            assert s.stop() == 0, "".join(s.log)
    assert answers["off", "greedy"] == answers["ngram", "greedy"]
    assert answers["off", "seeded"] == answers["ngram", "seeded"]
