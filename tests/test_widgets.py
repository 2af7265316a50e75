"""labkit.widgets: pure parts on a recorded real stream, then real sends against the session's llama-server."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

import labkit
from labkit import sse, widgets
from labkit.net import free_port

RECORDED = Path(__file__).resolve().parent.parent / "data" / "widgets" / "llamacpp_chat_stream.sse"


def recorded_chunks() -> list[dict]:
    return list(sse.iter_chunks(sse.iter_events([RECORDED.read_bytes()])))


def test_recorded_stream_folds_into_reply():
    reply = widgets.Reply(server="recorded", started=0.0)
    carried = [bool(reply.add(chunk, now=float(i))) for i, chunk in enumerate(recorded_chunks())]
    assert carried[0] is False  # the role-only first chunk carries no text
    assert reply.text == "Hello, I's"
    assert reply.finish_reason == "length"
    assert reply.usage["completion_tokens"] == 4 == reply.n_deltas == reply.n_tokens
    assert reply.timings["predicted_n"] == 4
    assert reply.first_token_s == 1.0 and reply.t_deltas[-1] == 4.0
    assert reply.decode_tps == pytest.approx(1.0)  # 3 tokens after the first over 3 "seconds"
    assert "4 completion tokens" in reply.stats() and "1.0 tok/s" in reply.stats()
    assert "streaming…" not in reply.stats() and reply.as_dict()["decode_tps"] == pytest.approx(1.0)


def test_error_reply_says_so_in_its_stats():
    reply = widgets.Reply(server="x", error="the request exceeds the context size")
    assert reply.stats().startswith("error")


def test_params_body_and_stop_parsing():
    body = widgets.Params(temperature=0, max_tokens=5, seed=None, stop=widgets.parse_stop(" ., \\n ,")).body()
    assert body == {"temperature": 0, "top_p": 0.95, "top_k": 40, "max_tokens": 5, "stop": [".", "\n"]}
    assert widgets.parse_stop('[" ", "\\n"]') == [" ", "\n"]  # JSON keeps whitespace exact
    with pytest.raises(ValueError):
        widgets.parse_stop('[""]')
    assert "stop" not in widgets.Params().body() and widgets.Params().body()["seed"] == 42


@pytest.mark.parametrize("fields, expected", [
    ({"text": "plain answer"}, ("", "plain answer")),
    ({"text": "<think>2+2 is 4</think>\n\nIt is 4."}, ("2+2 is 4", "It is 4.")),
    ({"text": "<think>still thinking"}, ("still thinking", "")),  # mid-stream: nothing to show as answer yet
    ({"text": "It is 4.", "reasoning": "2+2", "reasoning_field": "reasoning_content"}, ("2+2", "It is 4.")),
])
def test_pane_and_history_show_thoughts_apart_from_the_answer(fields, expected):
    """The pane uses labkit.reasoning's rules (a `<think>` counts only at the start), whether the server split
    the thoughts off or left the tags in the text."""
    reply = widgets.Reply(server="x", **fields)
    pane = widgets.Pane("x")
    pane.show(reply)
    thought, answer = expected
    assert widgets.Chat._answer(reply) == answer
    assert widgets.html.escape(answer) in pane.output.value and (thought in pane.reasoning.value)
    assert (pane.reasoning_box.layout.display != "none") == bool(thought)


# ------------------------------------------------------------------ against the real server


@pytest.fixture(scope="module")
def llama():
    return labkit.up("llamacpp", export=False, quiet=True)


def dead_server() -> labkit.Server:
    """A real address where nothing listens: what a learner gets after the server was stopped."""
    return labkit.Server("llamacpp", "127.0.0.1", free_port(), "smollm2-135m")


def test_chat_send_streams_into_widget_state(llama):
    chat = widgets.Chat(llama, params=widgets.Params(temperature=0, max_tokens=4, seed=42))
    updates: list[str] = []
    chat.pane.output.observe(lambda change: updates.append(change["new"]), names="value")
    reply = chat.send("你好")

    assert reply.error is None, reply.error
    assert reply.text.strip() and reply.finish_reason in ("length", "stop")
    assert 1 <= reply.usage["completion_tokens"] <= 4 and reply.usage["prompt_tokens"] > 0
    assert reply.decode_tps is None or reply.decode_tps > 0
    state = chat.state()
    assert "你好" in state["output_html"]
    assert widgets.html.escape(reply.text) in state["output_html"]
    assert f"{reply.usage['completion_tokens']} completion tokens" in state["stats"]
    assert "tok/s" in state["stats"] and f"finish: {reply.finish_reason}" in state["stats"]
    assert state["error"] == "" and not state["reasoning_shown"]
    assert state["send_disabled"] is False and state["stop_disabled"] is True
    # it streamed: the output was redrawn once per text chunk, growing each time
    assert len(updates) >= reply.n_deltas >= 1
    assert chat.history == [{"role": "user", "content": "你好"}, {"role": "assistant", "content": reply.text}]

    second = chat.send("Say it again.")
    assert second.error is None and len(chat.history) == 4
    assert second.usage["prompt_tokens"] > reply.usage["prompt_tokens"]  # the history went along


def test_stop_button_ends_a_click_started_stream(llama):
    chat = widgets.Chat(llama, params=widgets.Params(temperature=0, max_tokens=200, seed=42))
    chat.prompt.value = "Count from 1 to 100."
    chat.send_button.click()  # what the browser does: the handler streams in a thread
    deadline = time.monotonic() + 60
    while "tok/s" not in chat.pane.stats.value and time.monotonic() < deadline:  # first chunk drawn
        time.sleep(0.05)
    assert chat.busy and chat.stop_button.disabled is False
    chat.stop_button.click()
    chat.wait(60)
    assert chat.last.stopped and chat.last.n_tokens < 200
    assert "stopped" in chat.state()["stats"] and chat.state()["send_disabled"] is False


def test_http_error_becomes_reply_error(llama):
    """labkit.sse raises on it; the widget shows the server's words instead of raising out of a click."""
    too_long = [{"role": "user", "content": "hello " * 9000}]  # more tokens than any lab context: a 400
    reply = widgets.stream_reply(llama, too_long, widgets.Params(max_tokens=4))
    assert reply.error and "HTTP 400" in reply.error and "context size" in reply.error, reply.error
    assert reply.t_end is not None and reply.text == ""
    assert reply.stats().startswith("error")


def test_down_server_shows_clear_message():
    chat = widgets.Chat(dead_server())
    reply = chat.send("你好")
    assert reply.error and "is not answering" in reply.error and "labkit.up('llamacpp')" in reply.error
    assert "is not answering" in chat.state()["error"] and chat.history == []


def test_playground_side_by_side_with_one_server_down(llama):
    pg = widgets.Playground({"llama.cpp": llama, "down": dead_server()})
    pg.temperature.value, pg.max_tokens.value, pg.seed.value = 0.0, 3, 7
    pg.stop_text.value = "\\n"
    assert pg.targets() == ["llama.cpp", "down"] and pg.current_params().stop == ["\n"]
    replies = pg.send("你好")
    assert replies["llama.cpp"].error is None and replies["llama.cpp"].usage["completion_tokens"] <= 3
    assert "is not answering" in replies["down"].error
    state = pg.state()
    assert "tok/s" in state["llama.cpp"]["stats"] and state["llama.cpp"]["error"] == ""
    assert "is not answering" in state["down"]["error"]

    pg.side_by_side.value = False  # one server again: only its pane stays
    assert pg.targets() == ["llama.cpp"] and len(pg.panes_box.children) == 1


def test_playground_stop_box_typo_is_shown_not_raised():
    pg = widgets.Playground(dead_server())
    pg.stop_text.value = '["unclosed'
    replies = pg.send("你好")  # never reaches the network: the stop box is checked first
    assert "stop box" in replies["llama.cpp"].error and "stop box" in pg.state()["llama.cpp"]["error"]
    assert pg.send_button.disabled is False


def test_a_closing_tag_in_the_middle_of_an_answer_is_answer_text():
    """As labkit.reasoning.iter_split decides: a `</think>` that no `<think>` opened at the start is just text."""
    reply = widgets.Reply(server="x", text="The </think> tag ends thoughts.")
    assert reply.split().answer == reply.text and reply.split().reasoning == ""
    with pytest.raises(TypeError):
        widgets.Reply("positional text")  # keywords only: a Reply's first field is not its server any more
