"""The README's Layout table names every labkit module, and only modules that exist: the map matches the code."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_layout_names_every_module_once():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Layout"):]
    rows = re.findall(r"^\| `([^`]+)` \| (.+) \|$", table, re.M)
    named = [name for name, _ in rows]
    assert len(named) == len(set(named)), "a module is listed twice"
    modules = {str(p.relative_to(ROOT / "labkit")) for p in (ROOT / "labkit").rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    packages = {name for name in named if name.endswith("/")}
    listed = {name for name in named if not name.endswith("/")}
    in_packages = {m for m in modules for pkg in packages if m.startswith(pkg)}
    assert listed | in_packages == modules, (
        f"missing from the README: {sorted(modules - listed - in_packages)}; "
        f"not in labkit/: {sorted(listed - modules)}")
    for pkg in packages:  # a package row names each of its modules
        text = dict(rows)[pkg]
        for m in sorted(m for m in modules if m.startswith(pkg)):
            assert f"`{Path(m).name}`" in text, (pkg, m)
    assert all(len(what) > 20 for _, what in rows), "each row says what lives there"


def lesson_minutes() -> dict[str, int]:
    """Each lesson's ⏱ minutes, from its opening."""
    out = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        opening = "".join(json.loads(path.read_text(encoding="utf-8"))["cells"][0]["source"])
        out[path.name[:2]] = int(re.search(r"⏱ ~?(\d+)", opening).group(1))
    return out


def expand(lessons: str) -> list[str]:
    """'00, 01, 05' or '00–18' → the lesson numbers."""
    out = []
    for part in re.split(r",\s*", lessons.strip()):
        a, _, b = part.partition("–")
        out += [f"{n:02d}" for n in range(int(a), int(b or a) + 1)]
    return out


@pytest.mark.parametrize("readme", ["README.md", "README.zh-CN.md"])
def test_the_tracks_add_up_the_lessons_times(readme):
    text = (ROOT / readme).read_text(encoding="utf-8")
    section = text[text.index('<a id="tracks"></a>'):]
    rows = re.findall(r"^\| .+? \| ([\d, –]+) \| (?:~|约 ?)(\d+) (?:min|分钟) \|$", section, re.M)
    assert len(rows) == 4, f"{readme}: the tracks table has core, clients, operations and everything"
    minutes = lesson_minutes()
    for lessons, total in rows:
        numbers = expand(lessons)
        assert set(numbers) <= set(minutes), f"{readme}: a track names a lesson that does not exist: {lessons}"
        assert int(total) == sum(minutes[n] for n in numbers), \
            f"{readme}: the track {lessons} takes {sum(minutes[n] for n in numbers)} min by the lessons' own times"
    assert expand(rows[-1][0]) == sorted(minutes), f"{readme}: the last track is every lesson"
