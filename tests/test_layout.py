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


def labkit_imports() -> dict[str, set[str]]:
    """Which labkit modules each labkit module imports, counting imports inside functions (no __main__: an entry
    point that nothing imports)."""
    import ast
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in (ROOT / "labkit").rglob("*.py") if p.name != "__main__.py"}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                found = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            for t in found:
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def test_labkit_imports_point_down_no_cycles_even_inside_functions():
    graph = labkit_imports()
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, path: list[str]) -> bool:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle.extend(path[path.index(t):] + [m, t] if t in path else [m, t])
                return True
            if t not in state and visit(t, path + [m]):
                return True
        state[m] = 2
        return False
    assert not any(visit(m, []) for m in sorted(graph) if m not in state), f"import cycle: {' -> '.join(cycle)}"
    assert "labkit.lab" not in graph["labkit.session"], "the session layer asks the lab through labkit.labclient"


def test_ruff_finds_nothing():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "labkit", "tests", "tools", "conftest.py"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]


def lesson_uses(paths: list[Path]) -> dict[str, set[str]]:
    """{labkit module: names the lessons' code takes from it}: `from labkit.x import y`, and `x.y` after
    `import labkit` / `from labkit import x` (IPython's `!cmd` and `%magic` turned into Python first)."""
    import ast
    import importlib

    from notebook_code import parse_cell

    def is_module(name: str) -> bool:
        try:
            importlib.import_module(name)
        except ImportError:
            return False
        return True

    used: dict[str, set[str]] = {}
    for path in paths:
        alias: dict[str, str] = {}  # a notebook's names for labkit modules, kept from cell to cell
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code":
                continue
            tree = parse_cell("".join(cell["source"]))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "labkit":
                    for a in node.names:
                        if is_module(f"{node.module}.{a.name}"):
                            alias[a.asname or a.name] = f"{node.module}.{a.name}"
                        else:
                            used.setdefault(node.module, set()).add(a.name)
                elif isinstance(node, ast.Import):
                    alias |= {a.asname or "labkit": a.name if a.asname else "labkit"
                              for a in node.names if a.name.split(".")[0] == "labkit"}
            for node in ast.walk(tree):
                chain, n = [], node
                while isinstance(n, ast.Attribute):
                    chain.append(n.attr)
                    n = n.value
                if not chain or not isinstance(n, ast.Name) or n.id not in alias:
                    continue
                parts = alias[n.id].split(".") + chain[::-1]
                if is_module(".".join(parts)):
                    continue  # a module itself (`labkit.sse`), not a name taken from one
                for i in range(len(parts) - 1, 0, -1):
                    if is_module(".".join(parts[:i])):
                        used.setdefault(".".join(parts[:i]), set()).add(parts[i])
                        break
    return used


def test_lessons_use_only_what_labkit_declares_for_them():
    """labkit has many internal names; what a lesson may use is each module's __all__ (a learner reading a lesson
    meets only those), so a refactor knows what it must keep."""
    import importlib
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    used = lesson_uses(notebooks)
    assert "labkit.widgets" in used and "labkit.sse" in used, "the scan finds what lessons use"
    undeclared = {m: sorted(n for n in names if n not in getattr(importlib.import_module(m), "__all__", ()))
                  for m, names in used.items()}
    undeclared = {m: n for m, n in undeclared.items() if n}
    assert not undeclared, f"lessons use names their module does not declare in __all__: {undeclared}"
