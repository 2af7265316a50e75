"""How long the suite's parts took, against the developers' time budget: printed at the end of every pytest run
(`conftest.py`), so each machine's CI log carries the figures with the CPU that produced them.

The budget: `tests/` + the English lessons ≤ 6 min, the Chinese twins ≤ 3 min more, each notebook ≤ 60 s. It was
set on a 2-core AMD EPYC whose llama-bench decoded the lab's SmolLM2 Q4_1 at 110–120 tok/s (2 threads). The
2-core machines this course has run on differ by 2× either way (60–163 tok/s), and the lessons time real
inference, so a full run also measures this machine's decode speed (llama-bench tg64, after the suite, servers
idle): a time over budget on a machine half as fast is not the same finding as on the budget's machine.
Each run also leaves its figures in test-results/suite-time.json (per-item seconds, CPU, decode speed).

    python tools/suite_time.py [test-results/suite-time.json]   # the summary of a saved run again
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

BUDGET_S = {"tests + English": 360.0, "Chinese twins": 180.0}
NOTEBOOK_S = 60.0
REFERENCE_TPS = (110, 120)  # llama-bench decode, 2 threads, on the machine the budget was set on
PARTS = ("tests", "English", "Chinese")


def part_of(nodeid: str) -> str | None:
    """Which part of the suite a test belongs to: 'tests', 'English' (a lesson), 'Chinese' (its twin)."""
    path = nodeid.split("::", 1)[0].replace("\\", "/")
    if path.startswith("notebooks/zh-CN/") and path.endswith(".ipynb"):
        return "Chinese"
    if path.startswith("notebooks/") and path.endswith(".ipynb"):
        return "English"
    if path.startswith("tests/"):
        return "tests"
    return None


def per_item(durations: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Each test's time, its setup, call and teardown summed (pytest reports them apart)."""
    out: dict[str, float] = {}
    for nodeid, seconds in durations:
        if part_of(nodeid):
            out[nodeid] = out.get(nodeid, 0.0) + seconds
    return out


def totals(items: dict[str, float]) -> dict:
    """Seconds and item count per part, and each notebook's own time, from `per_item`'s {nodeid: seconds}."""
    out = {part: {"seconds": 0.0, "items": 0} for part in PARTS}
    notebooks = {}
    for nodeid, seconds in items.items():
        part = part_of(nodeid)
        if part is None:
            continue
        out[part]["seconds"] += seconds
        out[part]["items"] += 1
        if part != "tests":
            notebooks[nodeid.split("::", 1)[0]] = seconds
    out["notebooks"] = notebooks
    return out


def clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def lesson_count() -> int:
    return len(list((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb")))


def is_full_run(t: dict, lessons: int | None = None) -> bool:
    """Tests ran and every lesson in both editions (the README's `make test`): the budget applies. A run of a few
    tests or lessons prints its times without it."""
    lessons = lesson_count() if lessons is None else lessons
    return t["tests"]["items"] > 0 and t["English"]["items"] == t["Chinese"]["items"] == lessons


def summary(t: dict, *, cpu: str = "", decode_tps: float | None = None, lessons: int | None = None) -> list[str]:
    """The lines printed after a run: each part's time, the budget's two sums, notebooks over 60 s."""
    parts = " · ".join(f"{part} {clock(t[part]['seconds'])} ({t[part]['items']})" for part in PARTS if t[part]["items"])
    lines = [parts + (f" — on {cpu}" if cpu else "")]
    if is_full_run(t, lessons):
        first = t["tests"]["seconds"] + t["English"]["seconds"]
        speed = f"{decode_tps:.0f} tok/s here" if decode_tps else "not measured here"
        lines.append(f"budget: tests + English {clock(first)} of {clock(BUDGET_S['tests + English'])} · Chinese twins "
                     f"{clock(t['Chinese']['seconds'])} of {clock(BUDGET_S['Chinese twins'])} — set on a machine "
                     f"decoding {REFERENCE_TPS[0]}–{REFERENCE_TPS[1]} tok/s (llama-bench decode, 2 threads); {speed}")
    slow = sorted(((s, nb) for nb, s in t["notebooks"].items() if s > NOTEBOOK_S), reverse=True)
    slowest = max(t["notebooks"].items(), key=lambda kv: kv[1], default=None)
    if slow:
        lines.append("notebooks over 60 s: " + ", ".join(f"{Path(nb).name} {s:.0f} s" for s, nb in slow))
    elif slowest:
        lines.append(f"slowest notebook: {Path(slowest[0]).name} {slowest[1]:.1f} s (each ≤ {NOTEBOOK_S:.0f} s)")
    return lines


def decode_speed(threads: int) -> float | None:
    """This machine's decode speed on the lab's model (llama-bench tg64, one repetition, ~1 s), or None when the
    build or the model is not there."""
    try:
        from labkit.bench.limits import run_llama_bench
        from labkit.models import model_path
        return run_llama_bench(model_path(), threads=threads, n_prompt=0, n_gen=64, repetitions=1,
                               timeout=60)["tg64"]["tokens_per_s"]
    except Exception:  # noqa: BLE001 - the report must never fail a run; "not measured here" says it
        return None


def save(path: Path, items: dict[str, float], *, cpu: str, decode_tps: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cpu": cpu, "decode_tps": decode_tps, "seconds": items}, indent=0))


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else Path(__file__).resolve().parents[1] / "test-results" / "suite-time.json")
    if not path.is_file():
        print(f"{path}: no such file (pytest writes it at the end of a run)", file=sys.stderr)
        return 2
    saved = json.loads(path.read_text())
    print("\n".join(summary(totals(saved["seconds"]), cpu=saved["cpu"], decode_tps=saved["decode_tps"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
