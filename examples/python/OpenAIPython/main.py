"""The original guide's `llm/OpenAIPython/main.py`, corrected: openai-python against a local server, streamed and
not. Run it with a server up (`labkit up`, or `make lab`):

    python main.py                      # both calls, text as it streams
    python main.py --mode chat --json   # one JSON object per call (what tests/test_python_examples.py parses)

Base URL, key and model: the flags, else OPENAI_BASE_URL / OPENAI_API_KEY / LABKIT_MODEL_NAME (what `labkit`
exports), else llama-server's defaults. What changed from the guide, and why:
- the model name comes from the environment: llama-server ignores it, but Ollama looks it up (a wrong name is a
  404), and "deepseek-r1:1.5b" is not what the lab serves;
- `print(event)` dumped whole chunk objects; we print each chunk's text and keep `finish_reason`;
- `stream_options={"include_usage": True}` asks for the token counts in a last chunk (a stream has none without);
- `max_tokens`, `temperature=0` and a `seed` keep a run short and repeatable on a CPU;
- errors (no server, a wrong key, an unknown model) end with one line that says what to do, and exit code 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import openai
from openai import OpenAI

MESSAGES = [  # the guide's conversation
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Who won the world series in 2020?"},
    {"role": "assistant", "content": "The LA Dodgers won in 2020."},
    {"role": "user", "content": "Where was it played?"},
]


def stream(client: OpenAI, model: str, max_tokens: int, echo: bool) -> dict:
    chunks = client.chat.completions.create(model=model, messages=MESSAGES, stream=True, max_tokens=max_tokens,
                                            temperature=0, seed=42, stream_options={"include_usage": True})
    text, finish, usage, n = [], None, None, 0
    for chunk in chunks:
        if chunk.usage:  # the extra last chunk: no choices, only the totals
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            n += 1
            if choice.delta.content:
                text.append(choice.delta.content)
                if echo:
                    print(choice.delta.content, end="", flush=True)
            finish = choice.finish_reason or finish
    if echo:
        print()
    return {"mode": "stream", "text": "".join(text), "chunks": n, "finish_reason": finish, "usage": usage}


def chat(client: OpenAI, model: str, max_tokens: int, echo: bool) -> dict:
    resp = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=max_tokens, temperature=0,
                                          seed=42)
    text = resp.choices[0].message.content or ""
    if echo:
        print(text)
    return {"mode": "chat", "text": text, "model": resp.model, "finish_reason": resp.choices[0].finish_reason,
            "usage": resp.usage.model_dump() if resp.usage else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL", "http://localhost:8080/v1"))
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "sk-no-key-required"))
    p.add_argument("--model", default=os.environ.get("LABKIT_MODEL_NAME", "smollm2-135m"))
    p.add_argument("--mode", choices=["stream", "chat", "both"], default="both")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--json", action="store_true", help="print one JSON object per call instead of the text")
    args = p.parse_args(argv)
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=60, max_retries=0)
    calls = {"stream": [stream], "chat": [chat], "both": [stream, chat]}[args.mode]
    try:
        for call in calls:
            if not args.json:
                print(f"== {call.__name__} ==")
            result = call(client, args.model, args.max_tokens, echo=not args.json)
            print(json.dumps(result, ensure_ascii=False) if args.json else f"usage: {result['usage']}")
    except openai.APIConnectionError:
        print(f"error: no server answers at {args.base_url}. Start one: `labkit up` (or `make lab`).",
              file=sys.stderr)
        return 1
    except openai.APIStatusError as e:
        print(f"error: HTTP {e.status_code} from {args.base_url}: {e.message}. "
              "401: set OPENAI_API_KEY to the server's key; 404: set LABKIT_MODEL_NAME to a model it serves.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
