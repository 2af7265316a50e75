"""The original guide's `llm/AutoGen/main.py`, corrected: AG2's classic `AssistantAgent` + `UserProxyAgent`
(`import autogen`, from `pip install ag2==0.14.0` — see lesson 08 for why not the guide's install line) against a
local server. Run it with a server up (`labkit up`, or `make lab`):

    python main.py            # the chat, printed by AG2 as it goes
    python main.py --json     # one JSON object: who said what (what tests/test_python_examples.py parses)

What changed from the guide, and why:
- base URL, key and model from OPENAI_BASE_URL / OPENAI_API_KEY / LABKIT_MODEL_NAME (or flags), and
  `api_type: "openai"`; "deepseek-r1:8b" is not what the lab serves, and Ollama checks the name;
- a short `system_message`: AG2's default one is ~500 tokens of instructions a small model cannot follow;
- `max_tokens`, `temperature=0`, `seed`, and `cache_seed=None` (AG2 otherwise caches replies on disk in .cache/);
- `max_turns` as well as `max_consecutive_auto_reply`, so the chat has a known length;
- code runs in a temporary `work_dir`, still without Docker (`use_docker: False`): it runs on your machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from autogen import AssistantAgent, UserProxyAgent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL", "http://localhost:8080/v1"))
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "sk-no-key-required"))
    p.add_argument("--model", default=os.environ.get("LABKIT_MODEL_NAME", "smollm2-135m"))
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--max-turns", type=int, default=2)
    p.add_argument("--message", default="你好请你介绍一下自己")  # "Hello, please introduce yourself"
    p.add_argument("--json", action="store_true", help="print the chat as one JSON object")
    args = p.parse_args(argv)

    config_list = [{"model": args.model, "base_url": args.base_url, "api_key": args.api_key, "api_type": "openai",
                    "max_tokens": args.max_tokens, "temperature": 0, "seed": 42}]
    assistant = AssistantAgent("assistant", llm_config={"config_list": config_list, "cache_seed": None},
                               system_message="You are a helpful assistant. Answer briefly.")
    with tempfile.TemporaryDirectory(prefix="ag2-") as work_dir:
        user_proxy = UserProxyAgent(
            "user_proxy",
            code_execution_config={"work_dir": work_dir, "use_docker": False},
            human_input_mode="NEVER",                     # no human input: the proxy answers by itself
            max_consecutive_auto_reply=5,                 # at most 5 automatic replies in a row
            default_auto_reply="你分析的对，请继续分析",   # "You're right, keep analysing"
        )
        try:
            result = user_proxy.initiate_chat(assistant, message=args.message, max_turns=args.max_turns,
                                              silent=args.json)
        except Exception as e:  # AG2 wraps openai's errors; name the server and what to check
            print(f"error: the chat with {args.base_url} failed: {type(e).__name__}: {e}. Is a server up "
                  "(`labkit up`), and do OPENAI_API_KEY / LABKIT_MODEL_NAME match it?", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps({"turns": [{"name": m.get("name"), "content": m.get("content")}
                                    for m in result.chat_history]}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
