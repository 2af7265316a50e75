"""`<think>` handling: split reasoning from answer in whole texts and in streams, and read the servers' own fields.

    split_think(text)                  whole text → Split(reasoning, answer, closed)
    ThinkSplitter().feed(chunk)        streamed text → Split deltas, correct at any chunk boundary
    split_message(message)             a reply (dict or openai object) → Split, from server fields or tags
    iter_split(chunks)                 streamed chat chunks → ("reasoning" | "answer", text) pairs
    think_server()                     llama-server on the lab model with a Qwen3-style template (port 8130)

Rules (the same for whole texts and streams, so any chunking gives the same split):
- An opening `<think>` counts only at the very start (after whitespace); one later in the text is answer text.
- The first `</think>` after it ends the reasoning; everything after it (more tags too) is answer.
- `prefilled=True` means the chat template already wrote `<think>` into the prompt (DeepSeek-R1, QwQ): the
  model's text starts inside the thoughts. A stream cannot guess this, so say it.
- A `<think>` never closed leaves `closed=False` and no answer (the reply was cut off while thinking).
- Nothing is stripped: `reasoning`/`answer` keep their newlines exactly as llama-server's fields do.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .sse import Assembled, as_dict, reasoning_field

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['Split', 'THINK_GRAMMAR', 'THINK_TEMPLATE', 'ThinkSplitter', 'display_stream', 'iter_split',
           'split_message', 'split_think', 'think_server']

OPEN, CLOSE = "<think>", "</think>"

THINK_TEMPLATE = Path(__file__).resolve().parent.parent / "data" / "templates" / "qwen3-think.jinja"
THINK_PORT = 8130
THINK_MODEL = "smollm2-135m-think"
# GBNF that makes any model answer as a reasoning model would: thoughts in tags, then a one-line answer.
THINK_GRAMMAR = r'''root    ::= "<think>\n" thought "\n</think>\n\n" answer
thought ::= [^<\n]{8,80}
answer  ::= [^<\n]{1,60}
'''


@dataclass(frozen=True)
class Split:
    """Reasoning and answer of one reply; `closed` says the thoughts ended (a `</think>` was seen or none began)."""

    reasoning: str = ""
    answer: str = ""
    closed: bool = True

    def __add__(self, other: "Split") -> "Split":
        return Split(self.reasoning + other.reasoning, self.answer + other.answer, other.closed)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that could be the start of `tag` (hold it back: more may follow)."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


def split_think(text: str, *, prefilled: bool | None = False) -> Split:
    """Split a whole reply; `prefilled=None` guesses (a `</think>` without `<think>` means the template opened it)."""
    if prefilled is None:
        prefilled = CLOSE in text and not text.lstrip().startswith(OPEN)
    if not prefilled:
        m = re.match(r"\s*" + re.escape(OPEN), text)
        if not m:
            return Split("", text, True)
        text = text[m.end():]
    thought, sep, answer = text.partition(CLOSE)
    return Split(thought, answer, bool(sep))


class ThinkSplitter:
    """Incremental twin of `split_think`: feed text as it streams, get only what is certain so far."""

    def __init__(self, *, prefilled: bool = False) -> None:
        self._state = "think" if prefilled else "start"
        self._buf = ""

    def feed(self, chunk: str) -> Split:
        self._buf += chunk
        out = Split("", "", self._state != "think")
        if self._state == "start":
            head = self._buf.lstrip()
            if head.startswith(OPEN):
                self._state, self._buf = "think", head[len(OPEN):]
            elif OPEN.startswith(head):  # whitespace or "<th": can't tell yet
                return out
            else:
                self._state = "answer"
        if self._state == "think":
            thought, sep, rest = self._buf.partition(CLOSE)
            if not sep:
                keep = _partial_suffix(self._buf, CLOSE)
                emit, self._buf = self._buf[:len(self._buf) - keep], self._buf[len(self._buf) - keep:]
                return Split(emit, "", False)
            out, self._state, self._buf = Split(thought, "", True), "answer", rest
        out, self._buf = out + Split("", self._buf, True), ""
        return out

    def close(self) -> Split:
        """End of stream: whatever was held back (a partial tag is just text) goes where it belongs."""
        rest, self._buf = self._buf, ""
        if self._state == "think":
            return Split(rest, "", False)
        return Split("", rest, True)

    def split(self, chunks: Iterable[str]) -> Split:
        """Feed all chunks and close: the whole-text result, built the streaming way."""
        total = Split()
        for chunk in chunks:
            total = total + self.feed(chunk)
        return total + self.close()


def split_message(message: Any, *, prefilled: bool | None = None) -> Split:
    """Split a reply message: the server's field when it separated the thoughts, else the tags in `content`.
    A streamed reply splits the same way through `Assembled.message()`."""
    found = reasoning_field(message)
    content = as_dict(message).get("content") or ""
    if found:
        return Split(found[1], content, True)
    return split_think(content, prefilled=prefilled)


def iter_split(chunks: Iterable[Any], *, prefilled: bool = False) -> Iterator[tuple[str, str]]:
    """("reasoning" | "answer", text) pieces of a streamed reply (OpenAI chunks or Ollama `/api/chat` lines,
    folded by `labkit.sse.Assembled`), whether the server split the thoughts off or left the tags in."""
    splitter, total = ThinkSplitter(prefilled=prefilled), Assembled()
    for chunk in chunks:
        delta = total.add(chunk)
        if delta.reasoning:
            yield "reasoning", delta.reasoning
        piece = splitter.feed(delta.content)
        yield from ((k, t) for k, t in (("reasoning", piece.reasoning), ("answer", piece.answer)) if t)
    tail = splitter.close()
    yield from ((k, t) for k, t in (("reasoning", tail.reasoning), ("answer", tail.answer)) if t)


def collect(pieces: Iterable[tuple[str, str]]) -> Split:
    """Join `iter_split` pieces into one Split."""
    reasoning, answer = [], []
    for kind, text in pieces:
        (reasoning if kind == "reasoning" else answer).append(text)
    return Split("".join(reasoning), "".join(answer), True)


def to_html(split: Split, *, open_thoughts: bool = False) -> str:
    """Thoughts in a collapsed <details>, the answer shown: how chat UIs display reasoning."""
    thoughts = html.escape(split.reasoning.strip()) or "<i>(no thoughts)</i>"
    state = " open" if open_thoughts else ""
    return (f"<details{state}><summary>💭 thoughts ({len(split.reasoning.strip())} chars)</summary>"
            f"<pre style='white-space:pre-wrap;color:#666'>{thoughts}</pre></details>"
            f"<div style='white-space:pre-wrap'>{html.escape(split.answer.strip())}</div>")


def display_stream(pieces: Iterable[tuple[str, str]]) -> Split:
    """Show a streaming reply in a notebook, updated per piece: thoughts collapsed, answer growing."""
    from IPython.display import HTML, display
    total = Split()
    handle = display(HTML(to_html(total)), display_id=True)
    for kind, text in pieces:
        total = total + (Split(text, "") if kind == "reasoning" else Split("", text))
        handle.update(HTML(to_html(total)))
    return total


def think_server(**options: Any):
    """llama-server on the lab model with a Qwen3-style `<think>` template, so it fills `reasoning_content`.

    On its own port (8130) and model name, beside the plain server on 8080. Options go to `labkit.up`.
    """
    from .session import up
    extra = ["--chat-template-file", str(THINK_TEMPLATE), *options.pop("extra_args", ())]
    options.setdefault("port", THINK_PORT)
    options.setdefault("model", THINK_MODEL)
    options.setdefault("parallel", 2)
    return up("llamacpp", extra_args=extra, **options)
