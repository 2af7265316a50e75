"""The original guide's OpenAI Agents SDK program, corrected: an `Agent` on a local server through Chat
Completions, streamed (`Runner.run_streamed`) or not (`Runner.run_sync`). Run it with a server up (`labkit up`):

    python main.py                    # streamed, the guide's default (isStream = True)
    python main.py --no-stream        # Runner.run_sync
    python main.py --json             # one JSON object (what tests/test_python_examples.py parses)

What changed from the guide, and why:
- base URL, key and model from OPENAI_BASE_URL / OPENAI_API_KEY / LABKIT_MODEL_NAME (or flags):
  "deepseek-r1:1.5b" is not what the lab serves, and Ollama checks the name;
- `ModelSettings(max_tokens, temperature=0, seed, include_usage=True)`: short, repeatable runs with token counts;
- `set_default_openai_api("chat_completions")` and `set_tracing_disabled(True)` stay: the SDK speaks the
  Responses API by default, and would upload traces to OpenAI with a key the local server does not have;
- `run_sync` works here because a script has no running event loop (in Jupyter it refuses: lesson 09).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import openai
from agents import (Agent, ModelSettings, Runner, set_default_openai_api, set_default_openai_client,
                    set_tracing_disabled)
from openai import AsyncOpenAI
from openai.types.responses import ResponseTextDeltaEvent


def make_agent(base_url: str, api_key: str, model: str, max_tokens: int) -> Agent:
    set_default_openai_api("chat_completions")
    set_default_openai_client(AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60))
    set_tracing_disabled(disabled=True)
    settings = ModelSettings(temperature=0, max_tokens=max_tokens, include_usage=True, extra_body={"seed": 42})
    return Agent(name="Assistant", instructions="You are a helpful assistant", model=model, model_settings=settings)


def run_sync_mode(agent: Agent, user_input: str, echo: bool) -> dict:
    result = Runner.run_sync(agent, user_input)
    if echo:
        print("\n=== Final Output ===")
        print(result.final_output)
    usage = result.context_wrapper.usage
    return {"mode": "sync", "final_output": result.final_output, "requests": usage.requests,
            "output_tokens": usage.output_tokens}


async def run_stream_mode(agent: Agent, user_input: str, echo: bool) -> dict:
    result = Runner.run_streamed(agent, input=user_input)
    if echo:
        print("\n=== Streaming Output ===")
    deltas = []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
            deltas.append(event.data.delta)
            if echo:
                print(event.data.delta, end="", flush=True)
    if echo:
        print()
    usage = result.context_wrapper.usage
    return {"mode": "stream", "final_output": result.final_output, "deltas": len(deltas),
            "joined_equals_final": "".join(deltas) == result.final_output, "output_tokens": usage.output_tokens}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL", "http://localhost:8080/v1"))
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "dummy_key"))
    p.add_argument("--model", default=os.environ.get("LABKIT_MODEL_NAME", "smollm2-135m"))
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--input", default="你好")  # "Hello"
    p.add_argument("--no-stream", action="store_true", help="Runner.run_sync instead of Runner.run_streamed")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text")
    args = p.parse_args(argv)
    agent = make_agent(args.base_url, args.api_key, args.model, args.max_tokens)
    try:
        if args.no_stream:
            out = run_sync_mode(agent, args.input, echo=not args.json)
        else:
            out = asyncio.run(run_stream_mode(agent, args.input, echo=not args.json))
    except openai.APIConnectionError:
        print(f"error: no server answers at {args.base_url}. Start one: `labkit up` (or `make lab`).",
              file=sys.stderr)
        return 1
    except openai.APIStatusError as e:
        print(f"error: HTTP {e.status_code} from {args.base_url}: {e.message}. "
              "401: set OPENAI_API_KEY to the server's key; 404: set LABKIT_MODEL_NAME to a model it serves.",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
