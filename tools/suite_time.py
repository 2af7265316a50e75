"""How long the suite's parts took, against the developers' time budget: printed at the end of every pytest run
(`conftest.py`), so each machine's CI log carries the figures with the CPU that produced them.

The budget: `tests/` + the English lessons ≤ 6 min, the Chinese twins ≤ 3 min more, each notebook ≤ 60 s. It was
set on a 2-core AMD EPYC whose llama-bench decoded the lab's SmolLM2 Q4_1 at 110–120 tok/s (2 threads). The
2-core machines this course has run on differ by 2× either way (60–163 tok/s), and the lessons time real
inference, so a whole run also measures this machine's decode speed (llama-bench tg64, after the suite, servers
stopped): a time over budget on a machine half as fast is not the same finding as on the budget's machine.
A whole run (`make test`: every test, every lesson in both editions, no -k/-m, no xdist) leaves its figures in
test-results/suite-time.json (per-item seconds, CPU, decode speed); a partial run prints its times only.

    python tools/suite_time.py [test-results/suite-time.json]   # the summary of the last whole run again
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

import zh_twins  # its lesson list: the English lessons, each with a Chinese twin

BUDGET_S = {"tests + English": 360.0, "Chinese twins": 180.0}
NOTEBOOK_S = 60.0
REFERENCE_TPS = (110, 120)  # llama-bench decode, 2 threads, on the machine the budget was set on
PARTS = ("tests", "English", "Chinese")
SAVED = Path(__file__).resolve().parents[1] / "test-results" / "suite-time.json"


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


def whole_run(*, from_testpaths: bool, keyword: str = "", markexpr: str = "", deselected: int = 0,
              workers: object = None) -> bool:
    """The session was `make test`'s: pytest's own testpaths, nothing selected away, one process (under xdist the
    items' times add up the workers', not the wall clock)."""
    return from_testpaths and not keyword and not markexpr and not deselected and not workers


def covers_every_lesson(t: dict, lessons: int | None = None) -> bool:
    """Tests ran and every lesson in both editions did (a run stopped early by -x did not)."""
    lessons = len(zh_twins.lessons([])) if lessons is None else lessons
    return t["tests"]["items"] > 0 and t["English"]["items"] == t["Chinese"]["items"] == lessons


def against(seconds: float, budget: float) -> str:
    return f"{clock(seconds)} of {clock(budget)}" + ("" if seconds <= budget else " — over")


def summary(t: dict, *, whole: bool, cpu: str = "", decode_tps: float | None = None, threads: int = 2) -> list[str]:
    """The lines printed after a run: each part's time; for a whole run the budget's two sums with this machine's
    decode speed; the notebooks over their minute, or else the slowest one."""
    parts = " · ".join(f"{part} {clock(t[part]['seconds'])} ({t[part]['items']})" for part in PARTS if t[part]["items"])
    lines = [parts + (f" — on {cpu}" if cpu else "")]
    if whole:
        first = t["tests"]["seconds"] + t["English"]["seconds"]
        speed = f"{decode_tps:.0f} tok/s here at {threads} threads" if decode_tps else "not measured here"
        lines.append(f"budget: tests + English {against(first, BUDGET_S['tests + English'])} · Chinese twins "
                     f"{against(t['Chinese']['seconds'], BUDGET_S['Chinese twins'])} — set on a machine decoding "
                     f"{REFERENCE_TPS[0]}–{REFERENCE_TPS[1]} tok/s (llama-bench, 2 threads); {speed}")
    slow = sorted(((s, nb) for nb, s in t["notebooks"].items() if s > NOTEBOOK_S), reverse=True)
    slowest = max(t["notebooks"].items(), key=lambda kv: kv[1], default=None)
    if slow:
        lines.append(f"notebooks over {NOTEBOOK_S:.0f} s: " + ", ".join(f"{Path(nb).name} {s:.0f} s" for s, nb in slow))
    elif slowest:
        lines.append(f"slowest notebook: {Path(slowest[0]).name} {slowest[1]:.1f} s (each ≤ {NOTEBOOK_S:.0f} s)")
    return lines


def decode_speed(threads: int) -> float | None:
    """This machine's decode speed on the embedded SmolLM2 Q4_1 — the reference's model, whatever LABKIT_MODEL
    says — by llama-bench tg64, one repetition (~1 s); None when the model or the build is not there or it fails:
    the report never fails a run, and never downloads."""
    try:
        from labkit.bench.limits import run_llama_bench
        from labkit.models import cached_path, is_verified
        gguf = cached_path()
        if not is_verified(gguf):
            return None
        return run_llama_bench(gguf, threads=threads, n_prompt=0, n_gen=64, repetitions=1,
                               timeout=60)["tg64"]["tokens_per_s"]
    except Exception:  # noqa: BLE001 - "not measured here" says it
        return None


def save(path: Path, items: dict[str, float], *, cpu: str, decode_tps: float | None, threads: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cpu": cpu, "decode_tps": decode_tps, "threads": threads, "seconds": items},
                               indent=0))


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else SAVED
    try:
        saved = json.loads(path.read_text())
        lines = summary(totals(saved["seconds"]), whole=True, cpu=saved["cpu"], decode_tps=saved["decode_tps"],
                        threads=saved.get("threads", 2))   # only a whole run is saved
    except FileNotFoundError:
        print(f"{path}: no such file (a whole pytest run writes it)", file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"{path}: not a suite-time record ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
