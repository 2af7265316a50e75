"""The Chinese twins of the lessons: code once, prose twice.

A zh lesson (notebooks/zh-CN/NN_topic.ipynb) has the English lesson's cells in the same order with the same ids.
Its code cells are the English code cells, byte for byte (this tool copies them); its markdown cells are Chinese,
each stamped with the hash of the English text it translates, so a change to the English prose shows up as a
stale twin until the Chinese is updated too.

    python tools/zh_twins.py sync [NN ...]      # copy the English code cells into the twins (after any code change)
    python tools/zh_twins.py export NN [--zh]   # the markdown cells as text, '<!-- cell ID -->' before each
    python tools/zh_twins.py import NN FILE     # write the twin: English code + the Chinese markdown from FILE
    python tools/zh_twins.py check              # exit 1 with one line per problem (drift, missing, stale)

`export` prints the English markdown (for a translator); with --zh the Chinese one already in the twin. `import`
stamps every markdown cell it writes as a translation of the current English text.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ZH = NOTEBOOKS / "zh-CN"
MARKER = re.compile(r"^<!-- cell (\S+) -->\n", re.M)


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def lines(text: str) -> list[str]:
    """nbformat's on-disk form of a cell source: a list of lines, each but the last ending in a newline."""
    return text.splitlines(keepends=True)


def en_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def english(number: str) -> Path:
    found = sorted(NOTEBOOKS.glob(f"{number}_*.ipynb"))
    if len(found) != 1:
        raise SystemExit(f"no single English lesson numbered {number} in {NOTEBOOKS} (found {len(found)})")
    return found[0]


def twin_of(en_path: Path) -> Path:
    return ZH / en_path.name


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def save(path: Path, nb: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def build(en: dict, zh_markdown: dict[str, str], stamps: dict[str, str]) -> dict:
    """The twin: every English cell in order; code copied, markdown replaced by its Chinese text (by cell id)."""
    twin = copy.deepcopy(en)
    twin["metadata"] = {**en.get("metadata", {}), "language_edition": "zh-CN"}
    for cell in twin["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        cid = cell["id"]
        if cid in zh_markdown:
            cell["source"] = lines(zh_markdown[cid])
            cell["metadata"] = {**cell.get("metadata", {}), "zh": {"en_sha": stamps.get(cid, "")}}
        else:
            cell["metadata"] = {**cell.get("metadata", {}), "zh": {"en_sha": "", "untranslated": True}}
    return twin


def existing(en_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The twin's Chinese markdown and stamps by cell id ({} when there is no twin yet)."""
    path = twin_of(en_path)
    if not path.exists():
        return {}, {}
    texts, stamps = {}, {}
    for cell in load(path)["cells"]:
        zh = cell.get("metadata", {}).get("zh", {})
        if cell["cell_type"] == "markdown" and not zh.get("untranslated"):
            texts[cell["id"]] = source(cell)
            stamps[cell["id"]] = zh.get("en_sha", "")
    return texts, stamps


def sync(en_path: Path) -> bool:
    """Rewrite the twin from the English lesson, keeping its Chinese markdown; True when the file changed."""
    path = twin_of(en_path)
    if not path.exists():
        return False
    texts, stamps = existing(en_path)
    before = path.read_text(encoding="utf-8")
    save(path, build(load(en_path), texts, stamps))
    return path.read_text(encoding="utf-8") != before


def export(en_path: Path, chinese: bool) -> str:
    texts, _ = existing(en_path) if chinese else ({}, {})
    out = []
    for cell in load(en_path)["cells"]:
        if cell["cell_type"] == "markdown":
            text = texts.get(cell["id"], source(cell)) if chinese else source(cell)
            out.append(f"<!-- cell {cell['id']} -->\n{text.rstrip()}\n")
    return "\n".join(out)


def parse(text: str) -> dict[str, str]:
    parts = MARKER.split(text)
    if parts[0].strip():
        raise SystemExit("text before the first '<!-- cell ID -->' marker")
    return {cid: body.strip("\n") for cid, body in zip(parts[1::2], parts[2::2])}


def import_(en_path: Path, text: str) -> Path:
    en = load(en_path)
    wanted = {c["id"]: source(c) for c in en["cells"] if c["cell_type"] == "markdown"}
    given = parse(text)
    missing = [cid for cid in wanted if cid not in given]
    unknown = [cid for cid in given if cid not in wanted]
    if missing or unknown:
        raise SystemExit(f"{en_path.name}: cells missing from the file {missing}, not in the lesson {unknown}")
    path = twin_of(en_path)
    save(path, build(en, given, {cid: en_hash(text) for cid, text in wanted.items()}))
    return path


def problems(en_path: Path) -> list[str]:
    """What keeps a twin from being the English lesson's code with current Chinese prose."""
    name = en_path.name
    path = twin_of(en_path)
    if not path.exists():
        return [f"zh-CN/{name}: missing (python tools/zh_twins.py export {name[:2]} > FILE, translate, import)"]
    en, zh = load(en_path)["cells"], load(path)["cells"]
    if [(c["id"], c["cell_type"]) for c in en] != [(c["id"], c["cell_type"]) for c in zh]:
        return [f"zh-CN/{name}: cells differ from the English lesson's (ids or kinds): run sync"]
    found = []
    for i, (e, z) in enumerate(zip(en, zh)):
        if e["cell_type"] != "markdown":
            if source(e) != source(z) or e.get("metadata") != z.get("metadata"):
                found.append(f"zh-CN/{name} cell {i}: code differs from the English lesson: run sync")
            continue
        stamp = z.get("metadata", {}).get("zh", {})
        if stamp.get("untranslated"):
            found.append(f"zh-CN/{name} cell {i}: not translated")
        elif stamp.get("en_sha") != en_hash(source(e)):
            found.append(f"zh-CN/{name} cell {i}: the English text changed since it was translated")
    return found


def lessons(numbers: list[str]) -> list[Path]:
    return [english(n) for n in numbers] if numbers else sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sync").add_argument("numbers", nargs="*")
    ex = sub.add_parser("export")
    ex.add_argument("number")
    ex.add_argument("--zh", action="store_true")
    im = sub.add_parser("import")
    im.add_argument("number")
    im.add_argument("file", type=Path)
    sub.add_parser("check")
    args = parser.parse_args(argv)
    if args.command == "sync":
        for en_path in lessons(args.numbers):
            if sync(en_path):
                print(f"synced zh-CN/{en_path.name}")
    elif args.command == "export":
        sys.stdout.write(export(english(args.number), args.zh))
    elif args.command == "import":
        print(f"wrote {import_(english(args.number), args.file.read_text(encoding='utf-8'))}")
    else:
        found = [p for en_path in lessons([]) for p in problems(en_path)]
        print("\n".join(found) or "every twin matches its English lesson")
        return 1 if found else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
