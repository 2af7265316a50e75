"""labkit.probe: the judges on replies recorded from both real servers, each failing case made by editing one of
those replies, the known differences (≠) by server kind, and a short live run."""
from __future__ import annotations

import copy
import json

import pytest

import labkit
from labkit import probe
from labkit.home import data_dir
from labkit.probe import checks as C
from labkit.tables import KNOWN, MARK


def load(name: str) -> tuple[str, str | None, dict[str, list[probe.HttpReply]]]:
    """A recording: its model, the server kind its "server kind" replies give, and the replies by check."""
    raw = json.loads((data_dir() / "bench" / name).read_text())
    replies = {k: [probe.HttpReply(**r) for r in v] for k, v in raw["replies"].items()}
    return raw["model"], C.server_kind(*replies["server kind"]), replies


@pytest.fixture(scope="module")
def recorded():
    return {"llama": load("probe_llamacpp.json"), "ollama": load("probe_ollama.json")}


def _judged(rec) -> dict[str, probe.Check]:
    model, kind, replies = rec
    return {name: C.judge(name, rs, model, kind) for name, rs in replies.items()}


@pytest.fixture(scope="module")
def llama(recorded):
    return _judged(recorded["llama"])


@pytest.fixture(scope="module")
def ollama(recorded):
    return _judged(recorded["ollama"])


def replies(recorded, server: str, name: str) -> list[probe.HttpReply]:
    """A deep copy of one check's recorded replies, to edit into a failing case."""
    return copy.deepcopy(recorded[server][2][name])


def verdict(name: str, rs: list[probe.HttpReply], kind: str | None = None) -> probe.Check:
    return C.judge(name, rs, "smollm2-135m", kind)


def sse(text: str, edit) -> str:
    """An SSE body with its JSON events edited: `edit(list of (event name, data))` returns the new list."""
    events = [(ev.event, ev.data) for ev in C.iter_events([text.encode()])]
    out = []
    for name, data in edit([(n, json.loads(d) if d != "[DONE]" else d) for n, d in events]):
        head = f"event: {name}\n" if name != "message" else ""
        out.append(head + "data: " + (data if data == "[DONE]" else json.dumps(data)) + "\n\n")
    return "".join(out)


# ---------------------------------------------------------------- the recordings and the server kinds

def test_every_check_was_recorded_from_both_servers(recorded, llama, ollama):
    assert len(probe.CHECKS) == len(probe.BY_NAME) == 26
    assert list(llama) == list(ollama) == list(probe.BY_NAME)  # nothing timed out: every check has its replies
    for server in ("llama", "ollama"):
        raw = json.loads((data_dir() / "bench" / f"probe_{'llamacpp' if server == 'llama' else 'ollama'}.json")
                         .read_text())
        assert "2-core AMD EPYC" in raw["recorded"] and "record=" in raw["recorded"]


def test_the_kind_comes_from_api_version_or_props(recorded, llama, ollama):
    assert recorded["llama"][1] == "llamacpp:no-tools"  # SmolLM2's template has no tools (/props caps)
    assert recorded["ollama"][1] == "ollama"
    assert llama["server kind"].ok is None and "llama.cpp" in llama["server kind"].detail
    assert ollama["server kind"].ok is None and "Ollama 0.24.0" in ollama["server kind"].detail
    props = replies(recorded, "llama", "server kind")
    props[1].body["chat_template_caps"]["supports_tools"] = True  # a model whose template has tools
    assert C.server_kind(*props) == "llamacpp"
    nobody = [probe.HttpReply(404, None, "not found"), probe.HttpReply(404, None, "not found")]  # e.g. vLLM
    assert C.server_kind(*nobody) is None and "neither" in verdict("server kind", nobody).detail


def test_llama_server_passes_the_core_api(llama):
    for name in ("models list", "non-stream chat", "stream", "stream = non-stream", "stream include_usage", "stop",
                 "seed determinism", "n > 1", "logprobs", "max_completion_tokens", "json_object", "json_schema",
                 "tool_choice none", "/v1/responses", "/v1/messages (Anthropic)", "/v1/messages stream",
                 "error shape", "alive after bad JSON"):
        assert llama[name].ok is True, (name, llama[name].detail)
    assert "timings" in llama["stream include_usage"].detail  # llama.cpp adds its timings to the usage chunk


def test_ollama_passes_the_core_api(ollama):
    for name in ("models list", "non-stream chat", "stream", "stream = non-stream", "stream include_usage", "stop",
                 "seed determinism", "logprobs", "json_object", "json_schema", "/v1/responses", "/v1/responses stream",
                 "/v1/embeddings", "/v1/messages (Anthropic)", "/v1/messages stream", "error shape",
                 "alive after bad JSON"):
        assert ollama[name].ok is True, (name, ollama[name].detail)
    assert "dimension 576" in ollama["/v1/embeddings"].detail


def test_known_differences_are_marked_with_their_reason(llama, ollama):
    """What each server fails by design is ≠ with the reason; the recordings' only ✘ are Ollama's ignored
    max_completion_tokens and llama-server's output_text parts without `annotations` (bugs, not design)."""
    assert {n for n, c in llama.items() if c.known} == {"tool_choice (forced)", "tool_choice required",
                                                        "/v1/embeddings"}
    assert {n for n, c in ollama.items() if c.known} == {"n > 1", "tools", "tool_choice (forced)",
                                                         "tool_choice required", "tool_choice none",
                                                         "reasoning fields"}
    for checks in (llama, ollama):
        for c in checks.values():
            assert (c.mark == KNOWN) == bool(c.known) and (not c.known or c.ok is False), c
    assert "--embeddings" in llama["/v1/embeddings"].known and "501" in llama["/v1/embeddings"].detail
    required = llama["tool_choice required"]
    assert "chat template" in required.known and "no tool_calls" in required.detail
    assert "no `n`" in ollama["n > 1"].known and "1 choice(s)" in ollama["n > 1"].detail
    assert "does not support tools" in ollama["tool_choice required"].detail
    assert "refuses tools" in ollama["tool_choice required"].known
    assert {n for n, c in llama.items() if c.ok is False and not c.known} == {"/v1/responses stream"}
    assert {n for n, c in ollama.items() if c.ok is False and not c.known} == {"max_completion_tokens"}


def test_a_known_difference_needs_its_kind_and_its_failure(recorded):
    rs = replies(recorded, "ollama", "n > 1")
    assert verdict("n > 1", rs, "ollama").mark == KNOWN
    assert verdict("n > 1", rs, None).mark == MARK[False]  # another server: a plain ✘
    assert verdict("n > 1", rs, "llamacpp").mark == MARK[False]  # llama-server has n: one choice is a bug there
    crashed = [probe.HttpReply(500, {"error": {"message": "model runner has unexpectedly stopped"}})]
    assert verdict("n > 1", crashed, "ollama").mark == MARK[False]  # not the known "1 choice": a real failure
    rs[0].body["choices"].append({**rs[0].body["choices"][0], "index": 1})  # if Ollama ever sends two: ✔
    assert verdict("n > 1", rs, "ollama").mark == MARK[True]
    tool = replies(recorded, "llama", "tool_choice required")
    assert verdict("tool_choice required", tool, "llamacpp:no-tools").mark == KNOWN
    assert verdict("tool_choice required", tool, "llamacpp").mark == MARK[False]  # a template with tools: a bug


# ---------------------------------------------------------------- each new judge: recorded ✔, edited ✘

def test_stream_equals_non_stream(recorded):
    for server in ("llama", "ollama"):
        plain, streamed = replies(recorded, server, "stream = non-stream")
        assert verdict("stream = non-stream", [plain, streamed]).ok is True
        edited = sse(streamed.text, lambda evs: [(n, _retext(d)) for n, d in evs])
        c = verdict("stream = non-stream", [plain, probe.HttpReply(200, None, edited)])
        assert c.ok is False and "≠ streamed" in c.detail and "XX" in c.detail
        plain.body["choices"][0]["finish_reason"] = "stop" if plain.body["choices"][0]["finish_reason"] != "stop" \
            else "length"
        assert verdict("stream = non-stream", [plain, streamed]).ok is False  # same text, other finish_reason


def _retext(chunk):
    """A chunk whose content delta is changed (the first one that has text)."""
    if isinstance(chunk, dict):
        for choice in chunk.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                choice["delta"]["content"] = "XX"
    return chunk


def test_include_usage_rules(recorded):
    for server in ("llama", "ollama"):
        (r,) = replies(recorded, server, "stream include_usage")
        assert verdict("stream include_usage", [r]).ok is True

        def edited(edit):
            return verdict("stream include_usage", [probe.HttpReply(200, None, sse(r.text, edit))])
        twice = edited(lambda evs: [(n, {**d, "usage": evs[-2][1]["usage"]} if i == 0 else d)
                                    for i, (n, d) in enumerate(evs)])
        assert twice.ok is False and "2 chunks carry usage" in twice.detail
        early = edited(lambda evs: [*evs[:-3], evs[-2], evs[-3], evs[-1]])  # usage chunk before the finish chunk
        assert early.ok is False and "not the last" in early.detail
        with_choice = edited(lambda evs: [*evs[:-2], ("message", {**evs[-2][1], "choices": evs[-3][1]["choices"]}),
                                          evs[-1]])
        assert with_choice.ok is False and "choices=" in with_choice.detail
        no_done = edited(lambda evs: evs[:-1])
        assert no_done.ok is False and "no [DONE]" in no_done.detail
        none = edited(lambda evs: [*evs[:-2], evs[-1]])
        assert none.ok is False and "0 chunks carry usage" in none.detail


def test_alive_after_a_malformed_request(recorded):
    for server in ("llama", "ollama"):
        bad, after = replies(recorded, server, "alive after bad JSON")
        assert bad.status == 400 and after.status == 200
        assert verdict("alive after bad JSON", [bad, after]).ok is True
        crashed = verdict("alive after bad JSON", [probe.HttpReply(500, None, "panic"), after])
        assert crashed.ok is False and "want 4xx" in crashed.detail
        down = verdict("alive after bad JSON", [bad, probe.HttpReply(503, {"error": {"message": "unavailable"}})])
        assert down.ok is False and "then HTTP 503" in down.detail


def test_tool_choice_required_and_none(recorded):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    for name in ("tool_choice required", "tool_choice (forced)"):
        (r,) = replies(recorded, "llama", name)
        assert verdict(name, [r]).ok is False and "no tool_calls" in verdict(name, [r]).detail  # prose came back
        r.body["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [copy.deepcopy(call)]}
        r.body["choices"][0]["finish_reason"] = "tool_calls"
        assert verdict(name, [r]).ok is True  # what a template with tools gives
        r.body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"city": '
        assert verdict(name, [r]).ok is False
    (r,) = replies(recorded, "llama", "tool_choice none")
    assert verdict("tool_choice none", [r]).ok is True
    r.body["choices"][0]["message"]["tool_calls"] = [call]
    assert verdict("tool_choice none", [r]).ok is False
    (o,) = replies(recorded, "ollama", "tool_choice none")
    assert verdict("tool_choice none", [o], "ollama").mark == KNOWN  # 400: the model has no tools


def test_logprobs_invariants(recorded):
    for server in ("llama", "ollama"):
        (r,) = replies(recorded, server, "logprobs")
        c = verdict("logprobs", [r])
        assert c.ok is True and "sorted" in c.detail, c.detail
        tokens = r.body["choices"][0]["logprobs"]["content"]
        assert len(tokens[0]["top_logprobs"]) == C.TOP_LOGPROBS

        def broken(edit):
            bad = copy.deepcopy(r)
            edit(bad.body["choices"][0]["logprobs"]["content"])
            return verdict("logprobs", [bad])
        unsorted = broken(lambda t: t[1]["top_logprobs"].reverse())
        assert unsorted.ok is False and "token 1: top_logprobs not sorted" in unsorted.detail
        above = broken(lambda t: t[0]["top_logprobs"][0].update(logprob=0.5))
        assert above.ok is False and "> 0 (probability > 1)" in above.detail
        missing = broken(lambda t: t[2]["top_logprobs"].pop(0) and t[2]["top_logprobs"].append(
            {"id": -1, "token": "zzz", "logprob": -99.0}))
        assert missing.ok is False and "token 2" in missing.detail and "not among its top_logprobs" in missing.detail
        short = broken(lambda t: t[0]["top_logprobs"].pop())
        assert short.ok is False and "2 top_logprobs" in short.detail
        other = broken(lambda t: t[0].update(logprob=t[0]["logprob"] - 1))
        assert other.ok is False and "in its top_logprobs" in other.detail


def test_json_schema_output_valid_against_the_schema(recorded):
    for server in ("llama", "ollama"):
        (r,) = replies(recorded, server, "json_schema")
        assert verdict("json_schema", [r]).ok is True
        obj = json.loads(r.body["choices"][0]["message"]["content"])
        for edit, why in ((lambda o: o.update(population=str(o["population"])), "$.population is str, not integer"),
                          (lambda o: o.update(country="France"), "$.country not allowed"),
                          (lambda o: o.pop("city"), "$.city missing"),
                          (lambda o: o.update(population=True), "$.population is bool")):
            bad, changed = copy.deepcopy(r), dict(obj)
            edit(changed)
            bad.body["choices"][0]["message"]["content"] = json.dumps(changed)
            c = verdict("json_schema", [bad])
            assert c.ok is False and why in c.detail, c.detail


def test_schema_errors_agree_with_jsonschema():
    jsonschema = pytest.importorskip("jsonschema")  # only to cross-check: the probe itself does not need it
    for obj in ({"city": "Paris", "population": 2}, {"city": "Paris", "population": 2.0}, {"city": 1, "population": 2},
                {"city": "Paris"}, {"city": "Paris", "population": 2, "x": 0}, {"city": "P", "population": True},
                [], "Paris", None, {"city": "Paris", "population": 2.5}):
        valid = jsonschema.Draft202012Validator(probe.SCHEMA).is_valid(obj)
        assert (C.schema_errors(obj, probe.SCHEMA) == []) == valid, obj


def with_part(evs, change):
    """The events with `change(part)` applied to each output_text part (content_part.added / .done)."""
    return [(n, {**d, "part": change(dict(d["part"]))} if isinstance(d, dict) and isinstance(d.get("part"), dict)
             else d) for n, d in evs]


def test_responses_stream_event_order(recorded):
    for server in ("llama", "ollama"):
        (r,) = replies(recorded, server, "/v1/responses stream")
        c = verdict("/v1/responses stream", [r])

        def edited(edit):
            return verdict("/v1/responses stream", [probe.HttpReply(200, None, sse(r.text, edit))])
        if server == "llama":  # llama-server's content_part.added has no `annotations` (what broke Agent Framework)
            assert c.ok is False and c.detail == "output_text part without annotations in content_part.added", c.detail
            fixed = edited(lambda evs: with_part(evs, lambda p: {"annotations": [], **p}))
            assert fixed.ok is True and "response.completed" in fixed.detail, fixed.detail
        else:
            assert c.ok is True and "response.completed" in c.detail, c.detail
            stripped = edited(lambda evs: with_part(evs, lambda p: {k: v for k, v in p.items() if k != "annotations"}))
            assert stripped.ok is False and "annotations in content_part.added, content_part.done" in stripped.detail
        assert "first event" in edited(lambda evs: evs[1:]).detail  # no response.created
        unfinished = edited(lambda evs: [e for e in evs if e[1].get("type") != "response.completed"])
        assert unfinished.ok is False and "last event" in unfinished.detail
        after = edited(lambda evs: [*evs, next(e for e in evs if e[1].get("type") == "response.output_text.delta")])
        assert after.ok is False and "last event response.output_text.delta" in after.detail
        none = edited(lambda evs: [e for e in evs if e[1].get("type") != "response.output_text.delta"])
        assert none.ok is False and "no response.output_text.delta" in none.detail
        lost = edited(lambda evs: [e for i, e in enumerate(evs) if i != next(
            j for j, x in enumerate(evs) if x[1].get("type") == "response.output_text.delta")])
        assert lost.ok is False and "do not add up" in lost.detail


def test_messages_stream_event_order(recorded):
    for server in ("llama", "ollama"):
        (r,) = replies(recorded, server, "/v1/messages stream")
        c = verdict("/v1/messages stream", [r])
        assert c.ok is True and "max_tokens" in c.detail, c.detail

        def edited(edit):
            return verdict("/v1/messages stream", [probe.HttpReply(200, None, sse(r.text, edit))])
        no_stop = edited(lambda evs: [e for e in evs if e[1].get("type") != "content_block_stop"])
        assert no_stop.ok is False and no_stop.detail.startswith("order: message_start content_block_start")
        swapped = edited(lambda evs: [*evs[:-2], evs[-1], evs[-2]])  # message_stop before message_delta
        assert swapped.ok is False
        no_delta = edited(lambda evs: [e for e in evs if e[1].get("type") != "content_block_delta"])
        assert no_delta.ok is False
        with_ping = edited(lambda evs: [evs[0], ("ping", {"type": "ping"}), *evs[1:]])
        assert with_ping.ok is True  # Anthropic's pings may come anywhere

        def unstopped(evs):
            for _, d in evs:
                if d.get("type") == "message_delta":
                    d["delta"]["stop_reason"] = None
            return evs
        assert "without a stop_reason" in edited(unstopped).detail


# ---------------------------------------------------------------- older judges on edge cases

def test_findings_recorded_from_llama_server(llama):
    assert llama["/v1/embeddings"].ok is False and "501" in llama["/v1/embeddings"].detail  # needs --embeddings
    assert llama["tool_choice (forced)"].ok is False  # SmolLM2's template has no tools: plain text comes back
    assert llama["tools"].ok and "0 tool call(s)" in llama["tools"].detail  # accepted, prose
    assert llama["auth (wrong key)"].ok is None and "open" in llama["auth (wrong key)"].detail


def test_ollama_recorded_replies(ollama):
    assert ollama["models list"].ok and "'smollm2-135m:latest' among" in ollama["models list"].detail
    assert ollama["tools"].ok is False and "does not support tools" in ollama["tools"].detail
    # Ollama takes max_completion_tokens but does not obey it (no `length` after 5 tokens): a real ✘
    assert ollama["max_completion_tokens"].ok is False and not ollama["max_completion_tokens"].known


def test_messages_judge_on_edge_cases():
    assert probe.judge_messages(probe.HttpReply(400, {"type": "error", "error": {"message": "max_tokens is required"}}))[0] is False
    no_text = {"type": "message", "content": [], "stop_reason": "end_turn", "usage": {"output_tokens": 0}}
    assert probe.judge_messages(probe.HttpReply(200, no_text))[0] is False


def test_error_and_auth_judges_on_edge_cases():
    assert probe.judge_error_shape(probe.HttpReply(500, None, "boom")) == (False, "HTTP 500, error=NoneType: boom")
    assert probe.judge_auth(probe.HttpReply(401, {"error": {"message": "Invalid API Key"}}))[0] is True
    assert probe.judge_chat(probe.HttpReply(503, {"error": {"message": "Loading model"}})) == (
        False, "HTTP 503: Loading model")


def test_table_puts_servers_side_by_side_in_100_columns(llama, ollama):
    names = list(ollama)
    results = {"llama-server": [llama[n] for n in names], "ollama": [ollama[n] for n in names]}
    table = probe.format_table(results, details=False)
    header, rule, *rows, passed = table.splitlines()
    assert "llama-server" in header and "ollama" in header and set(rule) == {"─"} and len(rows) == len(names)
    assert all(row.startswith(name) and row.split()[-2:] == [llama[name].mark, ollama[name].mark]
               for row, name in zip(rows, names))
    assert KNOWN in rows[names.index("n > 1")] and passed.startswith("passed: llama-server ")
    assert f"3 {KNOWN} by design" in passed and f"6 {KNOWN} by design" in passed
    full = probe.format_table(results)
    assert max(len(line) for line in full.splitlines()) <= 100  # JupyterLab's output area
    assert "no `n`" in full and "--embeddings" in full  # the reasons, in the details


def test_a_known_difference_does_not_fail_the_cli(monkeypatch, capsys, recorded):
    from types import SimpleNamespace

    from labkit.probe import cli
    model, kind, recs = recorded["ollama"]
    monkeypatch.setattr(cli, "probe", lambda url, model, **kw: [C.judge(n, rs, model, kind) for n, rs in recs.items()
                                                                if n != "max_completion_tokens"])
    args = SimpleNamespace(urls=["http://127.0.0.1:11434"], model=[model], api_key="x", only=None, brief=True)
    assert cli.cmd_probe(args) == 0 and KNOWN in capsys.readouterr().out  # six ≠, no ✘
    monkeypatch.setattr(cli, "probe", lambda url, model, **kw: [C.judge(n, rs, model, None) for n, rs in recs.items()
                                                                if n == "n > 1"])
    assert cli.cmd_probe(args) == 1  # the same reply from a server of no known kind: a ✘


# ---------------------------------------------------------------- live, and the parts around the probe

def test_live_probe_against_the_session_llama_server():
    server = labkit.up("llamacpp", export=False, quiet=True)
    checks = probe.probe(server.base_url, server.model, api_key=server.key, timeout=60,
                         only=["models list", "non-stream chat", "error shape"])
    assert [c.ok for c in checks] == [True, True, True], checks


def test_the_cli_takes_the_openai_base_url_with_v1_and_picks_the_lab_model():
    """`labkit probe $OPENAI_BASE_URL` (…/v1) works as the root does, and probes the lab's model by default."""
    import subprocess
    import sys
    server = labkit.up("llamacpp", export=False, quiet=True)
    assert probe.default_model(server.openai_base_url) == server.model
    out = subprocess.run([sys.executable, "-m", "labkit", "probe", server.openai_base_url, "--only", "models list",
                          "--only", "non-stream chat"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "models list" in out.stdout and "✔" in out.stdout and "HTTP 404" not in out.stdout


def test_send_posts_a_raw_body_for_the_malformed_request():
    import httpx
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers["content-type"], request.content, request.headers["authorization"]))
        return httpx.Response(400, json={"error": {"message": "bad json"}})
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        r = probe.send(client, "http://h:1", ("POST+RAW", C.CHAT, '{"model": "m", "messages": [{'), "sk-key")
    assert r.status == 400 and r.body == {"error": {"message": "bad json"}}
    assert seen == [("application/json", b'{"model": "m", "messages": [{', "Bearer sk-key")]


def test_url_for_accepts_the_root_and_the_v1_form():
    from labkit.net import url_for
    for base in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"):
        assert url_for(base, "/v1/chat/completions") == "http://h:1/v1/chat/completions"
    assert url_for("http://h:1/v1", "/health") == "http://h:1/v1/health"  # only /v1 paths fold


def test_stream_judge_counts_answer_chunks_only():
    """A stream whose chunks carry only reasoning has no content: the judge says so."""
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in (
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]},
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}))
    ok, detail = probe.judge_stream(probe.HttpReply(200, None, body + "data: [DONE]\n\n"))
    assert ok is False and "0 with content" in detail
