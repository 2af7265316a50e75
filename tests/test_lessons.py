"""The shape every lesson keeps, checked on the committed notebooks (no server needed): numbered without gaps, a
title, what you will learn, how long it takes, what it assumes; at least one exercise with an empty cell for the
learner followed by a collapsed solution that asserts; no glossary word used before the glossary is linked; no
assert that compares an expression with itself; no recording from data/ shown without saying it is one; and no
port named by two lessons.
Each failure names the lesson and the rule it breaks."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from notebook_code import parse_cell

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
GLOSSARY = NOTEBOOKS / "glossary.md"

# How each glossary entry (its heading = its anchor) is spotted in a lesson's prose.
TERMS = {
    "token": r"\btokens?\b",
    "weights": r"\bweights\b",
    "gguf": r"\bGGUF\b",
    "quantisation": r"\bquanti[sz](ed|ation|e)\b",
    "context-window": r"\bcontext (window|size)\b",
    "slot": r"\bslots?\b",
    "kv-cache": r"\bKV cache\b",
    "chat-template": r"\bchat template\b",
    "system-prompt": r"\bsystem prompts?\b",
    "sse": r"\bSSE\b|server-sent events",
    "ndjson": r"\bNDJSON\b",
    "grammar": r"\bGBNF\b|\bgrammars?\b",
    "prefill": r"\bprefill(s|ed|ing)?\b",
    "tool-call": r"\btool calls?\b",
    "structured-output": r"\bstructured output\b",
    "reasoning": r"<think>",
    "sampling": r"\bsampling\b|\bsampler\b",
    "temperature": r"\btemperature\b",
    "ttft": r"\bTTFT\b",
    "itl": r"\bITL\b",
    "e2e": r"\bE2E\b",
    "pp-tg": r"\bpp\d*\b|\btg\d*\b",
    "event-hook": r"\bevent hooks?\b",
    "ignore-eos": r"\bignore_eos\b",
    "modelfile": r"\bModelfile\b",
    "embedding": r"\bembeddings?\b",
    "rag": r"\bRAG\b",
    "loopback": r"\bloopback\b",
    "reverse-proxy": r"\breverse proxy\b",
    "rpc": r"\bRPC\b",
    "openai-compatible": r"\bOpenAI[- ]compatible\b",
    "finish-reason": r"\bfinish[_ ]reasons?\b",
    "agent": r"\b[Aa]gents?\b(?! SDK)",  # the concept, not the product name "OpenAI Agents SDK"
    "lcel": r"\bLCEL\b",
    "logprobs": r"\blogprobs\b|\blog-probabilit(y|ies)\b",
    "vllm": r"\bvLLM\b",
    "p95": r"\bp(50|90|95|99)\b",
    "cors": r"\bCORS\b",
}


CODE_TERMS = {"ignore-eos", "reasoning", "finish-reason", "logprobs"}  # spotted inside `code` too (they are fields)
# Acronyms and names: only as written (agent: lowercase or capitalised, never inside a name such as AgentChat).
CASED = {"rag", "sse", "rpc", "gguf", "ttft", "itl", "e2e", "ndjson", "lcel", "p95", "cors", "agent"}


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def text(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def only_comments(source: str) -> bool:
    return all(not line.strip() or line.strip().startswith("#") for line in source.splitlines())


def test_lessons_are_numbered_without_gaps():
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert numbers == list(range(len(LESSONS))), f"lessons must be numbered 00, 01, ... without gaps: {numbers}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_opening_says_what_how_long_and_what_it_assumes(path):
    first = cells(path)[0]
    opening = text(first)
    assert first["cell_type"] == "markdown", f"{path.name}: the first cell must be markdown (the lesson's opening)"
    assert opening.startswith(f"# {path.name[:2]} · "), f"{path.name}: the first line must be '# {path.name[:2]} · Title'"
    assert "**You will learn**" in opening, f"{path.name}: the opening must say '**You will learn**'"
    assert re.search(r"\*\*Time:\*\* ⏱ ~?\d+", opening), f"{path.name}: the opening must say '**Time:** ⏱ N min'"
    need = re.search(r"\*\*You need:\*\*(.*?)(\n\n|$)", opening, re.S)
    assert need, f"{path.name}: the opening must say '**You need:**' (which lessons and tools it assumes)"
    if path.name[:2] != "00":
        assert re.search(r"\blessons? \d\d", need.group(1)), \
            f"{path.name}: '**You need:**' must name the earlier lessons it assumes (e.g. 'lessons 00–01')"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_exercises_have_an_empty_cell_then_a_collapsed_checked_solution(path):
    nb = cells(path)
    headings = [i for i, c in enumerate(nb) if c["cell_type"] == "markdown"
                and re.search(r"^#+ Exercises?\b", text(c), re.M)]
    assert headings, f"{path.name}: no '## Exercise' section"
    solutions = [i for i, c in enumerate(nb) if "solution" in c["metadata"].get("tags", [])]
    assert solutions and solutions[0] > headings[0], f"{path.name}: no solution cell (tag 'solution') after the exercise"
    for i in solutions:
        cell = nb[i]
        assert cell["metadata"].get("jupyter", {}).get("source_hidden") is True, \
            f"{path.name} cell {i}: a solution is collapsed (metadata.jupyter.source_hidden)"
        assert re.search(r"^\s*assert\b", text(cell), re.M), f"{path.name} cell {i}: a solution checks itself (assert)"
        before = [j for j in range(i) if nb[j]["cell_type"] == "code"]
        assert before and only_comments(text(nb[before[-1]])) and nb[before[-1]]["source"], \
            f"{path.name} cell {i}: the code cell before a solution is the learner's, empty but for '# your code here'"


def test_the_glossary_has_every_term_and_each_is_linked_before_it_is_used():
    anchors = re.findall(r"^### (\S+)$", GLOSSARY.read_text(encoding="utf-8"), re.M)
    assert sorted(anchors) == sorted(TERMS), "glossary.md headings and TERMS must list the same entries"
    linked: set[str] = set()
    problems = []
    for path in LESSONS:
        for i, cell in enumerate(cells(path)):
            if cell["cell_type"] != "markdown":
                continue
            prose = text(cell)
            linked |= set(re.findall(r"glossary\.md#([\w-]+)", prose))
            unlinked = re.sub(r"\[[^\]]*\]\(glossary\.md#[\w-]+\)", "", prose)  # the link text itself is fine
            words = re.sub(r"`[^`]*`", "", unlinked)  # code spans name things, they don't use the word...
            for term, pattern in TERMS.items():
                where = unlinked if term in CODE_TERMS else words  # ...except the terms that are code
                if term not in linked and re.search(pattern, where, re.I if term not in CASED else 0):
                    problems.append(f"{path.name} cell {i}: '{term}' used before glossary.md#{term} is linked")
                    linked.add(term)  # report each term once, where it first appears
    assert not problems, "\n".join(problems)


# What must never run under JupyterLab's Run All (which ignores nbmake's skip-execution tag): a model download, a
# package install, a system change. Such commands are shown in markdown code blocks instead.
HEAVY = re.compile(
    r"""pip3?["',\s]+install|["'\s]install["',\s]+(-U|--upgrade)|ollama["',\s]+pull|ollama\s+pull"""
    r"""|huggingface-cli|\bhf["',\s]+download|snapshot_download|hf_hub_download|modelscope["',\s]+download"""
    r"""|\bwget\b|apt-get["',\s]+install|npm["',\s]+(install|i)\b|\bgo["',\s]+install\b|git["',\s]+clone""")


@pytest.mark.parametrize("path", LESSONS + sorted((NOTEBOOKS / "zh-CN").glob("[0-9][0-9]_*.ipynb")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_code_cell_downloads_a_model_or_installs_a_package(path):
    found = [f"cell {i}: {m.group(0)!r}" for i, c in enumerate(cells(path)) if c["cell_type"] == "code"
             for m in [HEAVY.search(text(c))] if m]
    assert not found, (f"{path.name}: Run All would run these (skip-execution does not stop JupyterLab); show "
                       f"them as a markdown code block: {found}")


def test_the_heavy_command_pattern_catches_what_it_should():
    for line in ('subprocess.run(["ollama", "pull", "deepseek-r1:8b"])', "!pip install -U huggingface_hub",
                 '!huggingface-cli download x', 'subprocess.run([sys.executable, "-m", "pip", "install", "x"])',
                 "!wget https://x/y.gguf", '!go install github.com/x@latest', "snapshot_download(repo_id='x')"):
        assert HEAVY.search(line), line
    for line in ('labkit.up("ollama")', 'print("install nothing")', 'client.models.list()'):
        assert not HEAVY.search(line), line


# Asserts that cannot fail: a constant, or a comparison whose two sides are the same expression (`x == x`,
# `a <= a`), also inside `and`/`or`. They check nothing, so the prose above them claims more than the lesson checks.
def hollow_asserts(source: str) -> list[str]:
    found = []
    for node in ast.walk(parse_cell(source)):
        if not isinstance(node, ast.Assert):
            continue
        parts = node.test.values if isinstance(node.test, ast.BoolOp) else [node.test]
        for part in parts:
            if isinstance(part, ast.Constant) and part.value:
                found.append(ast.unparse(part))
            elif isinstance(part, ast.Compare):
                sides = [part.left, *part.comparators]
                if any(ast.dump(a) == ast.dump(b) for a, b in zip(sides, sides[1:])):
                    found.append(ast.unparse(part))
    return found


ALL_LESSONS = LESSONS + sorted((NOTEBOOKS / "zh-CN").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", ALL_LESSONS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_assert_compares_an_expression_with_itself(path):
    found = [f"cell {i}: assert {a}" for i, c in enumerate(cells(path)) if c["cell_type"] == "code"
             for a in hollow_asserts(text(c))]
    assert not found, f"{path.name}: these asserts cannot fail: {found}"


def test_the_hollow_assert_check_catches_what_it_should():
    for line in ("assert x == x", "assert r.status == 200 and t.ttft <= t.ttft", "assert True", "assert 1",
                 "!ls\nassert len(a) >= len(a)", "assert a < b < b"):
        assert hollow_asserts(line), line
    for line in ("assert x == y", "assert f(x) <= f(y)", "%time x = 1\nassert x", "out = !ls\nassert out"):
        assert not hollow_asserts(line), line


# A recording in data/ (a measurement made once, on one machine) is shown as one: the markdown cell before the code
# that reads it says so, and neither says it was measured "on this machine". Inputs (model shapes, templates, the
# Postman collection, the RAG documents, vLLM's configs) are not recordings.
INPUTS = {"models", "templates", "postman", "rag", "vllm"}
RECORDED = {"en": re.compile(r"\brecord(ed|ing)\b", re.I), "zh-CN": re.compile(r"录制")}
THIS_MACHINE = {"en": re.compile(r"\bon this machine\b|\bthis machine's\b", re.I),
                "zh-CN": re.compile(r"这台机器|本机上|你的机器上测")}


def reads_a_recording(source: str) -> list[str]:
    return [d for d in re.findall(r"""data_dir\(\)\s*/\s*["'](\w+)["']""", source) if d not in INPUTS]


@pytest.mark.parametrize("path", ALL_LESSONS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_recording_is_labelled_a_recording_never_this_machine(path):
    edition = "zh-CN" if path.parent.name == "zh-CN" else "en"
    nb = cells(path)
    problems = []
    for i, cell in enumerate(nb):
        if cell["cell_type"] != "code" or not reads_a_recording(text(cell)):
            continue
        before = next((text(nb[j]) for j in range(i - 1, -1, -1) if nb[j]["cell_type"] == "markdown"), "")
        if not RECORDED[edition].search(before):
            problems.append(f"cell {i} reads data/{reads_a_recording(text(cell))[0]}/ but the prose before it "
                            f"does not call it a recording")
        strings = " ".join(n.value for n in ast.walk(parse_cell(text(cell)))
                           if isinstance(n, ast.Constant) and isinstance(n.value, str))
        if THIS_MACHINE["en"].search(strings) or THIS_MACHINE[edition].search(before):
            problems.append(f"cell {i}: a recording presented as measured on this machine")
    assert not problems, f"{path.name}: {problems}"


def test_the_recording_check_finds_the_reads():
    assert reads_a_recording('json.loads((data_dir() / "bench" / "x.json").read_text())') == ["bench"]
    assert reads_a_recording("(data_dir() / 'models' / 'shapes.json')") == []


# Two lessons open at once must not break each other: the ports a lesson's code names (8000–8999, the course's
# range) belong to that lesson alone. The shared servers (the lab's llama-server on 8080, Ollama, the tools and
# embedding servers, bench's) are reused by whoever asks with the same options, so their ports live in labkit, not
# in the lessons. 8192 is left out: lessons use it as a context size, never as a port.
def ports_named(source: str) -> set[int]:
    return {n.value for n in ast.walk(parse_cell(source))
            if isinstance(n, ast.Constant) and type(n.value) is int and 8000 <= n.value <= 8999
            and n.value not in (8080, 8192)}


def test_two_lessons_open_at_once_use_different_ports():
    owners: dict[int, set[str]] = {}
    for path in LESSONS:
        for cell in cells(path):
            if cell["cell_type"] == "code":
                for port in ports_named(text(cell)):
                    owners.setdefault(port, set()).add(path.name[:2])
    shared = {port: sorted(who) for port, who in owners.items() if len(who) > 1}
    assert not shared, f"ports used by more than one lesson (open both and one breaks the other): {shared}"
    assert ports_named('labkit.up("llamacpp", port=8176, ctx_size=8192)\nstart_pool((8181, 8182))') == {8176, 8181, 8182}
