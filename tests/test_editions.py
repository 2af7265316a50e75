"""The two editions (English, 中文) on the committed notebooks, no server needed: every lesson has a Chinese twin whose
code is the English code byte for byte and whose prose translates the current English text; both open and end the
same way (summary, Next); their links resolve; and the lab opens the learner's edition."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import zh_twins  # tools/zh_twins.py (conftest puts tools/ on the path)

from labkit.errors import LabkitError
from labkit.language import edition, jupyter_settings, lesson_00, text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ZH = NOTEBOOKS / "zh-CN"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


# ---- parity: code once, prose twice ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_the_chinese_twin_has_the_english_code_and_current_prose(path):
    problems = zh_twins.problems(path)
    assert not problems, "\n".join(problems) + "\n(tools/zh_twins.py: sync for code, export/import for prose)"


def test_no_chinese_lesson_without_an_english_one():
    orphans = {p.name for p in ZH.glob("*.ipynb")} - {p.name for p in LESSONS}
    assert not orphans, f"zh-CN lessons without an English lesson: {sorted(orphans)}"


@pytest.fixture
def two_lessons(tmp_path, monkeypatch):
    """A copy of lesson 04 and a twin made from it, in a scratch notebooks folder the tool is pointed at."""
    notebooks = tmp_path / "notebooks"
    (notebooks / "zh-CN").mkdir(parents=True)
    en = notebooks / LESSONS[4].name
    shutil.copy(LESSONS[4], en)
    monkeypatch.setattr(zh_twins, "NOTEBOOKS", notebooks)
    monkeypatch.setattr(zh_twins, "ZH", notebooks / "zh-CN")
    exported = zh_twins.export(en, chinese=False)
    chinese = zh_twins.MARKER.sub(lambda m: m.group(0) + "【译】", exported)  # a "translation" of every cell
    twin = zh_twins.import_(en, chinese)
    return en, twin


def test_the_tool_finds_drift_and_sync_repairs_it(two_lessons):
    en, twin = two_lessons
    assert zh_twins.problems(en) == []
    nb = json.loads(twin.read_text(encoding="utf-8"))
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["source"] = ["print('edited in the twin only')\n"]
    twin.write_text(json.dumps(nb), encoding="utf-8")
    assert any("code differs" in p for p in zh_twins.problems(en))
    assert zh_twins.sync(en) is True and zh_twins.problems(en) == []
    assert all(source(c).startswith("【译】") for c in cells(twin) if c["cell_type"] == "markdown"), \
        "sync keeps the Chinese prose"


def test_a_changed_english_paragraph_makes_its_twin_stale(two_lessons):
    en, _ = two_lessons
    nb = json.loads(en.read_text(encoding="utf-8"))
    i = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown" and i > 0)
    nb["cells"][i]["source"].append("\nOne more English sentence.")
    en.write_text(json.dumps(nb), encoding="utf-8")
    assert zh_twins.problems(en) == [f"zh-CN/{en.name} cell {i}: the English text changed since it was translated"]


def test_a_new_english_cell_is_reported_untranslated_after_sync(two_lessons):
    en, _ = two_lessons
    nb = json.loads(en.read_text(encoding="utf-8"))
    nb["cells"].insert(1, {"cell_type": "markdown", "id": "new-cell", "metadata": {}, "source": ["New text."]})
    en.write_text(json.dumps(nb), encoding="utf-8")
    assert "cells differ" in zh_twins.problems(en)[0]
    zh_twins.sync(en)
    assert zh_twins.problems(en) == [f"zh-CN/{en.name} cell 1: not translated"]


def test_import_refuses_a_file_with_missing_cells(two_lessons):
    en, _ = two_lessons
    with pytest.raises(SystemExit, match="missing"):
        zh_twins.import_(en, "<!-- cell nonexistent -->\n文字\n")


# ---- the shape of both editions ----------------------------------------------------------------------------------

TWINS = [ZH / p.name for p in LESSONS]
ENDING = {
    "en": (r"^## Summary\n- \*\*You did:\*\* .+\n- \*\*Remember:\*\* .+\n- \*\*Where it leads:\*\* .+\n\n"
           r"\*\*Next:\*\* (.*)$", r"\[the tracks\]\(\.\./README\.md#tracks\)"),
    "zh-CN": (r"^## 小结\n- \*\*做了什么：\*\* .+\n- \*\*要记住：\*\* .+\n- \*\*接下来：\*\* .+\n\n"
              r"\*\*下一课：\*\* (.*)$", r"\[学习路线\]\(\.\./\.\./README\.zh-CN\.md#tracks\)"),
}


@pytest.mark.parametrize("path", LESSONS + TWINS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_lesson_ends_with_a_summary_and_the_next_lesson(path):
    if not path.exists():
        pytest.fail(f"{path.relative_to(NOTEBOOKS)}: missing")
    which = "zh-CN" if path.parent == ZH else "en"
    pattern, back = ENDING[which]
    last = cells(path)[-1]
    ending = re.match(pattern, source(last).strip(), re.S)
    assert last["cell_type"] == "markdown" and ending, \
        f"{path.relative_to(NOTEBOOKS)}: the last cell must be the three-line summary and the Next line ({pattern})"
    number = int(path.name[:2])
    following = [p.name for p in LESSONS if int(p.name[:2]) == number + 1]
    assert re.search(back, ending.group(1)), f"{path.name}: the Next line leads back to the tracks"
    if following:
        assert f"]({following[0]})" in ending.group(1), f"{path.name}: the Next line links {following[0]}"


@pytest.mark.parametrize("path", TWINS, ids=lambda p: p.stem)
def test_a_chinese_lesson_opens_with_what_how_long_and_what_it_assumes(path):
    if not path.exists():
        pytest.fail(f"zh-CN/{path.name}: missing")
    opening = source(cells(path)[0])
    assert opening.startswith(f"# {path.name[:2]} · "), f"zh-CN/{path.name}: first line '# NN · 标题'"
    assert "**你将学到**" in opening, f"zh-CN/{path.name}: the opening says '**你将学到**'"
    assert re.search(r"\*\*用时：\*\* ⏱ 约 ?\d+", opening), f"zh-CN/{path.name}: '**用时：** ⏱ 约 N 分钟'"
    need = re.search(r"\*\*前置：\*\*(.*?)(\n\n|$)", opening, re.S)
    assert need, f"zh-CN/{path.name}: the opening says '**前置：**'"
    if path.name[:2] != "00":
        assert re.search(r"第 ?\d\d", need.group(1)), f"zh-CN/{path.name}: '**前置：**' names earlier lessons (第 NN 课)"
    assert any(re.search(r"^#+ 练习", source(c), re.M) for c in cells(path) if c["cell_type"] == "markdown"), \
        f"zh-CN/{path.name}: an exercise section '## 练习'"


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", LESSONS + TWINS + [NOTEBOOKS / "glossary.md", ZH / "glossary.md"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_local_links_resolve_from_where_the_lesson_is(path):
    if not path.exists():
        pytest.fail(f"{path.relative_to(NOTEBOOKS)}: missing")
    prose = (path.read_text(encoding="utf-8") if path.suffix == ".md" else
             "\n".join(source(c) for c in cells(path) if c["cell_type"] == "markdown"))
    broken = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file, _, anchor = target.partition("#")
        where = (path.parent / file).resolve()
        if not where.exists():
            broken.append(target)
        elif anchor and where.suffix == ".md" and where.name.startswith("glossary"):
            if not re.search(rf"^### {re.escape(anchor)}$", where.read_text(encoding="utf-8"), re.M):
                broken.append(target)
        elif anchor and where.suffix == ".md" and f'<a id="{anchor}"></a>' not in where.read_text(encoding="utf-8"):
            broken.append(target)
    assert not broken, f"{path.relative_to(NOTEBOOKS)}: links that lead nowhere: {broken}"


def test_the_glossaries_have_the_same_entries():
    def anchors(p):
        return re.findall(r"^### (\S+)$", p.read_text(encoding="utf-8"), re.M)
    assert sorted(anchors(ZH / "glossary.md")) == sorted(anchors(NOTEBOOKS / "glossary.md"))


# ---- which edition a learner gets --------------------------------------------------------------------------------

@pytest.mark.parametrize("env, expected", [
    ({}, "en"),
    ({"LANG": "zh_CN.UTF-8"}, "zh-CN"),
    ({"LANG": "en_US.UTF-8"}, "en"),
    ({"LANG": "zh_CN.UTF-8", "LC_ALL": "C.UTF-8"}, "en"),          # LC_ALL wins over LANG, as in POSIX
    ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "zh_TW.UTF-8"}, "zh-CN"),
    ({"LANG": "en_US.UTF-8", "LABKIT_LANG": "zh-CN"}, "zh-CN"),   # LABKIT_LANG wins over the locale
    ({"LANG": "zh_CN.UTF-8", "LABKIT_LANG": "en"}, "en"),
    ({"LABKIT_LANG": "zh"}, "zh-CN"),
])
def test_the_edition_follows_labkit_lang_then_the_locale(env, expected):
    assert edition(env) == expected


def test_a_misspelt_labkit_lang_is_a_clear_error_but_messages_still_print():
    expected = r"LABKIT_LANG=.klingon. names no edition.*Fix: set LABKIT_LANG to one of: en, zh-CN"
    with pytest.raises(ValueError, match=expected):
        edition({"LABKIT_LANG": "klingon"})
    from labkit.lab import jupyter_command
    with pytest.raises(LabkitError, match=expected):  # the lab says it before anything starts
        jupyter_command([], env={"LABKIT_LANG": "klingon"})
    assert text("hello", "你好", {"LABKIT_LANG": "klingon"}) == "hello"
    assert text("hello", "你好", {"LANG": "zh_CN.UTF-8"}) == "你好"


def test_under_a_chinese_locale_the_lab_opens_the_chinese_lesson_00(tmp_path, monkeypatch):
    from labkit.lab import jupyter_command
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    argv, lesson = jupyter_command(["--no-browser"], env={"LANG": "zh_CN.UTF-8"})
    assert lesson == "zh-CN/00_welcome.ipynb" == lesson_00("zh-CN") and (NOTEBOOKS / lesson).exists()
    assert "--ServerApp.default_url=/lab/tree/zh-CN/00_welcome.ipynb" in argv
    settings = Path(next(a for a in argv if a.startswith("--LabApp.app_settings_dir=")).split("=", 1)[1])
    overrides = json.loads((settings / "overrides.json").read_text())
    assert overrides == jupyter_settings("zh-CN")
    assert overrides["@jupyterlab/translation-extension:plugin"]["locale"] == "zh_CN"
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    _, lesson = jupyter_command([], env={"LANG": "en_US.UTF-8"})
    assert lesson == "00_welcome.ipynb"


def literal_asterisks(markdown: str) -> list[str]:
    """The text runs where a `*` survives CommonMark rendering: emphasis that did not open or close. Next to Chinese
    punctuation this is easy to write: in `的*“引文”*：` neither `*` can open or close (CommonMark's flanking rules),
    so the reader sees the asterisks instead of italics; `“*引文*”` works."""
    from markdown_it import MarkdownIt

    found = []
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        for child in token.children or []:
            if child.type == "text" and "*" in child.content:
                found.append(child.content[:80])
    return found


def test_literal_asterisk_check_catches_emphasis_that_cannot_open():
    assert literal_asterisks("原教程 FAQ 里的*“流式输出什么都不显示”*：让代理") != []
    assert literal_asterisks("原教程 FAQ 里的“*流式输出什么都不显示*”：让代理") == []
    assert literal_asterisks("**粗体**、*斜体*、`a * b` and 2 × 3") == []


PROSE = [ROOT / "README.md", ROOT / "README.zh-CN.md", ROOT / "WORKSHOP.md", ROOT / "WORKSHOP.zh-CN.md",
         NOTEBOOKS / "glossary.md", ZH / "glossary.md"]


@pytest.mark.parametrize("path", LESSONS + sorted(ZH.glob("[0-9][0-9]_*.ipynb")) + PROSE,
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_emphasis_renders_in_both_editions(path):
    texts = ([source(c) for c in cells(path) if c["cell_type"] == "markdown"] if path.suffix == ".ipynb"
             else [path.read_text(encoding="utf-8")])
    found = [run for text_ in texts for run in literal_asterisks(text_)]
    assert not found, f"{path.name}: `*` shown as a literal asterisk (emphasis that cannot open or close): {found}"
