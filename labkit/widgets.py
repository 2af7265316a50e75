"""Chat and parameter-playground widgets for JupyterLab: watch tokens stream, see usage and tok/s, compare servers.

    from labkit import widgets
    chat = widgets.Chat(labkit.up("llamacpp"))          # display it, type, press Send (or chat.send("你好"))
    pg = widgets.Playground({"llama.cpp": llama, "Ollama": ollama})   # sliders + side-by-side

Everything a widget shows is also plain state (`chat.last`, `chat.history`, `chat.state()`), so a lesson can
assert on what the learner sees. A server that is down never raises out of a click: its pane says so.
"""
from __future__ import annotations

import html
import json
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Mapping

import httpx
import ipywidgets as W

from . import sse
from .reasoning import Split, split_message
from .servers import KINDS, Server
from .sse import Assembled

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['Chat', 'Params', 'Playground', 'Reply']

# ---------------------------------------------------------------- pure parts: request body, reply


@dataclass
class Params:
    """The sampling knobs the playground exposes, turned into an OpenAI chat-completions body."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40           # not in the OpenAI spec: llama-server reads it, Ollama's /v1 ignores it
    max_tokens: int = 64
    seed: int | None = 42
    stop: list[str] = field(default_factory=list)

    def body(self) -> dict:
        """The sampling part of the request; always with max_tokens, seed only when set, stop only when given."""
        body: dict = {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                      "max_tokens": self.max_tokens}
        if self.seed is not None:
            body["seed"] = self.seed
        if self.stop:
            body["stop"] = list(self.stop)
        return body


def parse_stop(text: str) -> list[str]:
    """Stop sequences from the stop box: a JSON list (`[" ", "\\n"]`, exact) or `a, b` (trimmed, \\n = newline)."""
    if text.strip().startswith("["):
        items = json.loads(text)
        if not (isinstance(items, list) and all(isinstance(i, str) and i for i in items)):
            raise ValueError(f"stop must be a JSON list of non-empty strings, not {text!r}")
        return items
    return [s.strip().replace("\\n", "\n") for s in text.split(",") if s.strip()]


@dataclass(kw_only=True)
class Reply(Assembled):
    """One streamed answer as the widget saw it: the folded stream (`labkit.sse.Assembled`: text, reasoning,
    usage, timings, arrival times in seconds since `started`), plus who answered, Stop, or the error instead."""

    server: str = ""
    started: float = 0.0          # time.monotonic() when the request left
    stopped: bool = False         # the learner pressed Stop
    error: str | None = None

    @property
    def first_token_s(self) -> float | None:
        """Time to first token: prompt processing plus queueing, what a learner feels as 'lag'."""
        return self.ttft

    def split(self) -> Split:
        """Thoughts and answer: from the server's reasoning field, else from `<think>` tags in the text."""
        return split_message(self.message(), prefilled=False)  # iter_split's rule: a tag counts only at the start

    def stats(self) -> str:
        """The one-line label under a reply."""
        if self.error:
            return "error: see the message below"
        parts = []
        if self.usage:
            parts.append(f"{self.usage.get('prompt_tokens', '?')} prompt + "
                         f"{self.usage.get('completion_tokens', '?')} completion tokens")
        else:
            parts.append(f"{self.n_deltas} chunks")
        rate = self.decode_tps
        parts.append(f"{rate:.1f} tok/s" if rate is not None else "… tok/s")
        if self.first_token_s is not None:
            parts.append(f"first token {self.first_token_s:.2f} s")
        if self.timings and self.timings.get("predicted_per_second"):
            parts.append(f"server says {self.timings['predicted_per_second']:.1f} tok/s")
        if self.stopped:
            parts.append("stopped")
        elif self.finish_reason:
            parts.append(f"finish: {self.finish_reason}")
        elif self.t_end is None:
            parts.append("streaming…")
        return " · ".join(parts)

    def as_dict(self) -> dict:
        return {**asdict(self), "first_token_s": self.first_token_s, "decode_tps": self.decode_tps}


# ---------------------------------------------------------------- I/O: one streamed request


def kind_label(server: Server) -> str:
    """How a learner knows the server's kind ("llama.cpp", "Ollama"); the raw name for kinds labkit lacks."""
    return KINDS[server.kind].label if server.kind in KINDS else server.kind


def server_label(server: Server) -> str:
    return f"{kind_label(server)} · {server.model}"


def down_message(server: Server, exc: Exception) -> str:
    """What a learner sees when a server does not answer: what, where, and the call that fixes it."""
    return (f"{kind_label(server)} at {server.base_url} is not answering "
            f"({type(exc).__name__}: {exc}). Start it with labkit.up({server.kind!r}) "
            f"(or `labkit up {server.kind}` in a terminal), then send again.")


def stream_reply(server: Server, messages: list[dict], params: Params, *,
                 on_update: Callable[[Reply], None] | None = None, cancel: threading.Event | None = None,
                 timeout: float = 120.0) -> Reply:
    """Stream a chat completion through `labkit.sse` and fold it into a Reply, calling `on_update` per chunk that
    carried text; a server that is down, an HTTP error or a broken stream ends up in reply.error, never raised."""
    body = {"model": server.model, "messages": messages, "stream_options": {"include_usage": True}, **params.body()}
    reply = Reply(server=server_label(server), started=time.monotonic())
    notify = on_update or (lambda r: None)
    chunks = sse.stream_chat(server.base_url, body, api_key=server.key, timeout=timeout, connect_timeout=5.0)
    try:
        for chunk in chunks:
            if cancel is not None and cancel.is_set():
                reply.stopped = True
                break
            if reply.add(chunk, time.monotonic() - reply.started):
                notify(reply)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        reply.error = down_message(server, exc)
    except sse.StreamError as exc:  # the server said no (HTTP status, or an error inside the stream)
        reply.error = f"{server_label(server)}: {exc.what}"
    except (httpx.HTTPError, sse.SSEError) as exc:
        reply.error = f"{server_label(server)}: the stream broke ({type(exc).__name__}: {exc})"
    finally:
        chunks.close()  # closes the connection: after Stop, the server stops generating
    reply.t_end = time.monotonic() - reply.started
    notify(reply)
    return reply


# ---------------------------------------------------------------- widgets


def _pre(text: str, style: str = "") -> str:
    return f'<div style="white-space: pre-wrap; {style}">{html.escape(text)}</div>'


def _servers(servers: Server | Mapping[str, Server] | Iterable[Server]) -> dict[str, Server]:
    if isinstance(servers, Server):
        servers = [servers]
    if isinstance(servers, Mapping):
        return dict(servers)
    return {KINDS[s.kind].label if s.kind in KINDS else s.model: s for s in servers}


class Pane:
    """One server's reply: folded reasoning, streamed text, a stats label, an error line."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.title = W.HTML(f"<b>{html.escape(name)}</b>")
        self.reasoning = W.HTML("")
        self.reasoning_box = W.Accordion(children=[self.reasoning], selected_index=None)
        self.reasoning_box.set_title(0, "reasoning")
        self.reasoning_box.layout.display = "none"  # shown only when a model actually reasons
        self.output = W.HTML("").add_class("labkit-output")
        self.stats = W.HTML("").add_class("labkit-stats")  # HTML wraps: a narrow pane shows the whole line
        self.error = W.HTML("").add_class("labkit-error")
        self.box = W.VBox([self.title, self.reasoning_box, self.output, self.stats, self.error],
                          layout=W.Layout(border="1px solid #ddd", padding="4px", min_width="0"))
        self.box.add_class("labkit-pane")

    def show(self, reply: Reply, prefix_html: str = "") -> None:
        """Render the reply as it is now (called on every chunk while streaming)."""
        split = reply.split()
        thought, answer = split.reasoning.strip(), split.answer.lstrip()
        self.reasoning.value = _pre(thought, "color: #666")
        self.reasoning_box.layout.display = "" if thought else "none"
        self.output.value = prefix_html + _pre(answer)
        self.stats.value = html.escape(reply.stats())
        self.error.value = (f'<span style="color: #b00">✖ {html.escape(reply.error)}</span>'
                            if reply.error else "")


class _Base:
    """What Chat and Playground share: a server dropdown, send/stop buttons, a worker thread for clicks."""

    def __init__(self, servers, params: Params | None) -> None:
        self.servers = _servers(servers)
        if not self.servers:
            raise ValueError("give at least one server, e.g. widgets.Chat(labkit.up('llamacpp'))")
        self.params = params or Params()
        self.server_choice = W.Dropdown(options=list(self.servers), description="server").add_class("labkit-server")
        self.send_button = W.Button(description="Send", button_style="primary", icon="paper-plane")
        self.send_button.add_class("labkit-send")
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True).add_class("labkit-stop")
        self.send_button.on_click(lambda _: self._start(self._prompt_value()))
        self.stop_button.on_click(lambda _: self.stop())
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None

    def _prompt_value(self) -> str:
        raise NotImplementedError

    def send(self, prompt: str):
        raise NotImplementedError

    def _start(self, prompt: str) -> None:
        """A click: stream in a thread so the kernel stays free to receive the Stop click."""
        if not prompt.strip() or self.busy:
            return
        self._worker = threading.Thread(target=self.send, args=(prompt,), daemon=True)
        self._worker.start()

    @property
    def busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def stop(self) -> None:
        """Ask the running stream to end; the connection closes and the server stops generating."""
        self._cancel.set()

    def wait(self, timeout: float = 120.0) -> None:
        """Block until a send started by a click has finished (for tests and scripted demos)."""
        if self._worker is not None:
            self._worker.join(timeout)
            if self._worker.is_alive():
                raise TimeoutError(f"the reply did not finish within {timeout:.0f} s; press Stop or raise timeout")

    def _busy(self, on: bool) -> None:
        self.send_button.disabled = on
        self.stop_button.disabled = not on
        if on:
            self._cancel.clear()

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


class Chat(_Base):
    """A chat with history and a system prompt; tokens stream into the transcript, usage + tok/s below."""

    def __init__(self, servers, *, system: str = "You are a helpful assistant.", params: Params | None = None) -> None:
        super().__init__(servers, params)
        self.system = W.Textarea(value=system, description="system", layout=W.Layout(width="100%"))
        self.prompt = W.Text(placeholder="Type a message, then press Enter or Send", layout=W.Layout(width="70%"))
        self.prompt.add_class("labkit-prompt")
        with warnings.catch_warnings():  # ipywidgets 8 calls on_submit deprecated; it is still the only Enter hook
            warnings.simplefilter("ignore", DeprecationWarning)
            self.prompt.on_submit(lambda _: self._start(self._prompt_value()))
        self.clear_button = W.Button(description="Clear", icon="trash").add_class("labkit-clear")
        self.clear_button.on_click(lambda _: self.clear())
        self.pane = Pane(server_label(self.current_server))
        self.server_choice.observe(lambda _: setattr(self.pane.title, "value",
                                                     f"<b>{html.escape(server_label(self.current_server))}</b>"),
                                   names="value")
        self.history: list[dict] = []
        self.last: Reply | None = None
        self.widget = W.VBox([self.server_choice, self.system, self.pane.box,
                              W.HBox([self.prompt, self.send_button, self.stop_button, self.clear_button])])
        self.widget.add_class("labkit-chat")

    @property
    def current_server(self) -> Server:
        return self.servers[self.server_choice.value]

    def _prompt_value(self) -> str:
        return self.prompt.value

    def messages(self, prompt: str) -> list[dict]:
        """What goes over the wire: system prompt, the whole history, the new user turn."""
        system = [{"role": "system", "content": self.system.value}] if self.system.value.strip() else []
        return system + self.history + [{"role": "user", "content": prompt}]

    def _transcript(self) -> str:
        rows = []
        for m in self.history:
            who = "you" if m["role"] == "user" else "model"
            rows.append(f"<div><b>{who}:</b></div>" + _pre(m["content"], "margin-bottom: 6px"))
        return "".join(rows)

    def send(self, prompt: str) -> Reply:
        """Send one user turn and stream the answer into the widget; returns the finished Reply."""
        self._busy(True)
        self.prompt.value = ""
        before = self._transcript() + f"<div><b>you:</b></div>{_pre(prompt)}<div><b>model:</b></div>"
        try:
            reply = stream_reply(self.current_server, self.messages(prompt), self.params,
                                on_update=lambda r: self.pane.show(r, before), cancel=self._cancel)
            if not reply.error:  # a failed turn stays out of the history, so a resend is clean
                self.history += [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": self._answer(reply)}]
            self.last = reply
            return reply
        finally:
            self._busy(False)

    @staticmethod
    def _answer(reply: Reply) -> str:
        """What goes back into the history: the answer without the thoughts (and the blank line after them)."""
        split = reply.split()
        return split.answer.lstrip() if split.reasoning else split.answer

    def clear(self) -> None:
        self.history.clear()
        self.last = None
        self.pane.show(Reply(server=""))
        self.pane.stats.value = ""

    def state(self) -> dict:
        """What the browser shows, read from the widget models (the same values the front end renders)."""
        return {"output_html": self.pane.output.value, "stats": self.pane.stats.value,
                "error": self.pane.error.value, "reasoning_html": self.pane.reasoning.value,
                "reasoning_shown": self.pane.reasoning_box.layout.display != "none",
                "send_disabled": self.send_button.disabled, "stop_disabled": self.stop_button.disabled,
                "server": self.server_choice.value}


class Playground(_Base):
    """Sliders for the sampling knobs; one prompt to one server, or side by side to all of them at once."""

    def __init__(self, servers, *, params: Params | None = None) -> None:
        super().__init__(servers, params)
        p = self.params
        style = {"description_width": "90px"}
        self.temperature = W.FloatSlider(value=p.temperature, min=0, max=2, step=0.05, description="temperature",
                                         style=style)
        self.top_p = W.FloatSlider(value=p.top_p, min=0, max=1, step=0.01, description="top_p", style=style)
        self.top_k = W.IntSlider(value=p.top_k, min=0, max=200, description="top_k", style=style)
        self.max_tokens = W.IntSlider(value=p.max_tokens, min=1, max=512, description="max_tokens", style=style)
        self.seed = W.IntText(value=p.seed if p.seed is not None else -1, description="seed (-1: random)",
                              style=style)
        self.stop_text = W.Text(value=", ".join(p.stop), description="stop", style=style,
                                placeholder='e.g. \\n, .  or  [" "]')
        self.side_by_side = W.Checkbox(value=len(self.servers) > 1, description="side by side (all servers)")
        self.prompt = W.Textarea(value="你好", placeholder="prompt", layout=W.Layout(width="100%"))
        self.prompt.add_class("labkit-prompt")
        self.panes = {name: Pane(f"{name} · {s.model}") for name, s in self.servers.items()}
        for pane in self.panes.values():
            pane.box.layout.flex = "1 1 0"  # equal columns side by side (in a column this would collapse it)
        self.panes_box = W.HBox([])
        self.side_by_side.observe(lambda _: self._layout(), names="value")
        self.server_choice.observe(lambda _: self._layout(), names="value")
        self._layout()
        knobs = W.VBox([self.temperature, self.top_p, self.top_k, self.max_tokens, self.seed, self.stop_text])
        self.widget = W.VBox([W.HBox([knobs, W.VBox([self.server_choice, self.side_by_side])]), self.prompt,
                              W.HBox([self.send_button, self.stop_button]), self.panes_box])
        self.widget.add_class("labkit-playground")
        self.last: dict[str, Reply] = {}

    def _layout(self) -> None:
        names = self.targets()
        self.panes_box.children = [self.panes[n].box for n in names]

    def targets(self) -> list[str]:
        """The servers the next send goes to."""
        return list(self.servers) if self.side_by_side.value else [self.server_choice.value]

    def current_params(self) -> Params:
        """The sliders as a Params (seed -1 means: let the server pick)."""
        return Params(temperature=self.temperature.value, top_p=self.top_p.value, top_k=self.top_k.value,
                      max_tokens=self.max_tokens.value, seed=None if self.seed.value < 0 else self.seed.value,
                      stop=parse_stop(self.stop_text.value))

    def _prompt_value(self) -> str:
        return self.prompt.value

    def send(self, prompt: str | None = None) -> dict[str, Reply]:
        """Send the prompt to the chosen server(s) at once, each streaming into its own pane."""
        prompt = self.prompt.value if prompt is None else prompt
        names = self.targets()
        try:
            params = self.current_params()
        except ValueError as exc:  # a typo in the stop box: say so in every pane instead of failing silently
            self.last = {n: Reply(server=n, error=f"stop box: {exc}") for n in names}
            for n in names:
                self.panes[n].show(self.last[n])
            return self.last
        self._busy(True)
        replies: dict[str, Reply] = {}

        def one(name: str) -> None:
            replies[name] = stream_reply(self.servers[name], [{"role": "user", "content": prompt}], params,
                                        on_update=self.panes[name].show, cancel=self._cancel)
        try:
            threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in names]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.last = {n: replies[n] for n in names}
            return self.last
        finally:
            self._busy(False)

    def state(self) -> dict:
        """Per pane: the rendered output, stats and error, as the front end shows them."""
        return {name: {"output_html": self.panes[name].output.value, "stats": self.panes[name].stats.value,
                       "error": self.panes[name].error.value} for name in self.targets()}
