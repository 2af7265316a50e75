"""The README's Layout table names every labkit module, and only modules that exist: the map matches the code."""
from __future__ import annotations

import re
from pathlib import Path

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
