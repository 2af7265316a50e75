"""`labkit setup | up | down | status | doctor | lab` — the course's command line."""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sys
import time
from pathlib import Path

from .errors import LabkitError
from .home import home, subdir
from .cpu import this_cpu
from .servers import KINDS, describe, port_of, start
from .pack import STEP_OF_PART, pack, unpack
from .procs import wait_gone
from .registries import doctor_rows
from .servers.install import find_tool, provenance


def _ports() -> dict[str, int]:
    return {kind: port_of(kind) for kind in KINDS}


def _run_file(kind: str, port: int) -> Path:
    return subdir("run") / f"{kind}-{port}.json"


def cmd_setup(args) -> int:
    from .setup import setup
    setup(args.group, only=args.only or None)
    return 0


def cmd_up(args) -> int:
    kinds = KINDS if args.kind == "all" else (args.kind,)
    for kind in kinds:
        server = start(kind, detached=True)
        if server.proc:
            server.proc.detach()
            _run_file(kind, server.port).write_text(json.dumps({"pid": server.proc.pid, "argv": server.proc.argv}))
        print(f"✔ {server}\n  # to point OpenAI clients at {kind}, paste this block:")
        print(f"  export OPENAI_BASE_URL={server.openai_base_url} OPENAI_API_KEY={server.key}\n")
    if len(kinds) > 1:
        print("(one block per server: the last block you paste wins)")
    return 0


def up_records(kind: str = "all") -> list[tuple[Path, dict]]:
    """The servers `labkit up` started: one run file each (kind-port.json), nothing else in run/."""
    found = []
    for f in sorted(subdir("run").glob("*.json")):
        m = re.fullmatch(rf"({'|'.join(map(re.escape, KINDS))})-\d+", f.stem)
        if m and kind in ("all", m.group(1)):
            try:
                found.append((f, json.loads(f.read_text())))
            except ValueError:
                f.unlink()  # a half-written record: nothing to stop
    return found


def still_ours(record: dict):
    """The process `labkit up` started, if it still runs: same pid *and* the same command line (pids are reused)."""
    import psutil
    try:
        proc = psutil.Process(record["pid"])
        return proc if proc.cmdline() == record.get("argv") else None
    except (psutil.Error, KeyError, TypeError):
        return None


def cmd_down(args) -> int:
    import psutil
    stopped = 0
    for f, record in up_records(args.kind):
        proc = still_ours(record)
        if proc is not None:
            group = [proc, *proc.children(recursive=True)]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            _, alive = psutil.wait_procs(group, timeout=5)
            for p in alive:  # did not stop on SIGTERM within 5 s
                p.kill()
            for p in alive:  # a zombie counts as stopped: its parent, not us, reaps it
                wait_gone(p.pid, timeout=5)
            stopped += 1
        f.unlink()
    print(f"stopped {stopped} server(s) started by `labkit up`")
    return 0


def setup_rows() -> list[tuple[str, str, str]]:
    """(mark, step, text) for what a `labkit setup` (the lab's background one, say) did or is doing."""
    from .setup import progress_running, read_progress
    progress = read_progress()
    if not progress:
        return []
    running = progress_running(progress)
    rows = []
    for name, step in progress["steps"].items():
        state = step["state"]
        if state == "done" and not running:
            continue  # a finished setup has nothing to report; doctor's rows say what is installed
        if state == "installing" and not running:
            state = "stopped before it finished"
        mark = {"done": "✔", "failed": "✘", "installing": "…"}.get(state, "·")
        rows.append((mark, name, f"{state} {step['detail']}".strip()))
    return rows


def cmd_status(args) -> int:
    for kind, port in _ports().items():
        ok, text = describe(kind, "127.0.0.1", port)
        print(f"{'✔' if ok else '·'} {kind:9} {text}")
    for mark, name, text in setup_rows():
        print(f"{mark} setup: {name:9} {text.splitlines()[0] if text else ''}")
    return 0


def cmd_doctor(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .setup import STEPS
    table = Table(title=f"labkit doctor — home {home()}")
    for col in ("", "check", "found", "fix"):
        table.add_column(col, overflow="fold")
    bad = 0
    installing = {name for mark, name, _ in setup_rows() if mark == "…"}
    table.add_row("✔", "python", f"{platform.python_version()} ({sys.executable})", "")
    table.add_row("✔", "cpu", this_cpu().describe(), "")
    for step in STEPS:
        found, step_fix = "missing", step.fix
        try:
            detail = step.check()
        except Exception as exc:  # noqa: BLE001 - doctor reports, never crashes
            detail = None
            found = getattr(exc, "what", None) or f"{type(exc).__name__}: {exc}"
            step_fix = getattr(exc, "fix", "") or step.fix
        optional = "lab" not in step.groups
        if detail is None and step.name in installing:  # the lab's background setup is on it: not a fault
            table.add_row("…", step.name, "installing in the background", "labkit status shows its progress")
            continue
        bad += detail is None and not optional
        table.add_row("✔" if detail else ("·" if optional else "✘"), step.name, detail or found,
                      "" if detail else step_fix)
    for name, binary in ((name, find_tool(name)) for name in ("llama-server", "ollama")):
        if binary:
            how = provenance(binary)
            ours = how.startswith("runs on")
            table.add_row("✔" if ours else "·", f"{name} runs on this CPU" if ours else f"{name} (yours)", how, "")
    for mark, name, text in setup_rows():
        table.add_row(mark, f"setup: {name}", text, "labkit status; the log in the labkit home" if mark == "✘" else "")
    for row in doctor_rows():
        table.add_row(*row)
    for kind, port in _ports().items():
        ok, text = describe(kind, "127.0.0.1", port)
        table.add_row("✔" if ok else "·", f"{kind} server", text,
                      "" if ok else f"labkit up {kind}  (lessons start it themselves)")
    Console().print(table)
    return 1 if bad else 0


def cmd_pack(args) -> int:
    started = time.monotonic()
    path = pack(Path(args.out), portable=args.portable)
    print(f"✔ {path} ({path.stat().st_size / 1e6:.0f} MB, {time.monotonic() - started:.0f} s). On each laptop: "
          f"make lab PACK={path}  (or: labkit unpack {path})")
    return 0


def cmd_unpack(args) -> int:
    """Unpack, then let setup prove each binary runs on this CPU (a smoke test; a rebuild only if it dies here)."""
    from .setup import setup
    started = time.monotonic()
    moved = unpack(Path(args.pack))
    print(f"✔ unpacked {', '.join(moved) or 'nothing (the home has every part)'} "
          f"({time.monotonic() - started:.0f} s)", flush=True)
    if moved:
        setup("test", only=[STEP_OF_PART.get(part, part) for part in moved])
    return 0


def cmd_room(args) -> int:
    """The instructor's server for a room: keys printed and written to a file, then a live view until Ctrl-C."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from .room import parse_room_log, per_learner, server_rate, start_room, write_keys
    with start_room(args.learners, host=args.host, port=args.port, ollama=not args.no_ollama,
                    per_minute=args.per_minute) as room:
        url = f"http://{'<this machine’s address>' if args.host == '0.0.0.0' else args.host}:{room.port}"
        keys = write_keys(Path(args.keys_file), room.taken, url)
        table = Table(title=f"room: llama-server on :{room.port}"
                            f"{'' if args.no_ollama else f', Ollama on :{room.port + 1}'} — keys in {keys}")
        for col in ("learner", "LABKIT_KEY"):
            table.add_column(col)
        for seat in room.taken:
            table.add_row(seat.learner, seat.key)
        Console().print(table)
        print(f"Each learner: LABKIT_SERVER={url} LABKIT_KEY=<their key> make lab     (Ctrl-C here stops the room)")

        def view() -> Table:
            rows = per_learner(parse_room_log(room.access_log.read_text(errors="replace")))
            live = Table(title=f"who is connected — server decoding {server_rate(room) or 0:.0f} tokens/s")
            for col in ("learner", "requests", "refused (429)", "median s", "last seen"):
                live.add_column(col)
            for name, r in sorted(rows.items()):
                live.add_row(name, str(r["requests"]), str(r["refused"]),
                             f"{r['median_s']:.2f}" if r["median_s"] is not None else "",
                             time.strftime("%H:%M:%S", time.localtime(r["last"])))
            return live
        try:
            with Live(view(), refresh_per_second=1) as screen:
                while True:
                    time.sleep(2)
                    screen.update(view())
        except KeyboardInterrupt:
            pass
    return 0


def cmd_lab(args) -> int:
    from .lab import run
    return run(args.jupyter_args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labkit", description="Local LLM Lab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("setup", help="install everything a fresh machine needs (idempotent)")
    p.add_argument("--group", choices=("lab", "test"), default="test")
    p.add_argument("--only", action="append", help="only this step (repeatable)")
    p.set_defaults(func=cmd_setup)
    p = sub.add_parser("up", help="start servers in the background (stop them with `labkit down`)")
    p.add_argument("kind", nargs="?", default="llamacpp", choices=(*KINDS, "all"))
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop servers started by `labkit up`")
    p.add_argument("kind", nargs="?", default="all", choices=(*KINDS, "all"))
    p.set_defaults(func=cmd_down)
    sub.add_parser("status", help="what listens on the lab's ports").set_defaults(func=cmd_status)
    sub.add_parser("doctor", help="check binaries, model, ports; each problem with its fix").set_defaults(
        func=cmd_doctor)
    p = sub.add_parser("pack", help="write a workshop pack of this home's builds and models, for other laptops")
    p.add_argument("--out", default=".", help="folder for the pack (default: here)")
    p.add_argument("--portable", action="store_true",
                   help="pack builds for the portable CPU level (built once, ~15 min) instead of this CPU's native ones")
    p.set_defaults(func=cmd_pack)
    p = sub.add_parser("unpack", help="install a workshop pack into the labkit home (verified, smoke-tested)")
    p.add_argument("pack")
    p.set_defaults(func=cmd_unpack)
    p = sub.add_parser("room", help="one server for a workshop room: a key per learner, a limit per key, a live view")
    p.add_argument("--learners", type=int, required=True)
    p.add_argument("--host", default="0.0.0.0", help="where nginx listens (default: every interface)")
    p.add_argument("--port", type=int, default=8200, help="llama-server's port; Ollama's is the next one")
    p.add_argument("--per-minute", type=int, default=60, help="requests each learner may send per minute")
    p.add_argument("--no-ollama", action="store_true", help="llama-server only")
    p.add_argument("--keys-file", default="room-keys.csv")
    p.set_defaults(func=cmd_room)
    p = sub.add_parser("lab", help="set up, start llama-server and open JupyterLab on lesson 00")
    p.add_argument("jupyter_args", nargs=argparse.REMAINDER, help="passed to `jupyter lab`")
    p.set_defaults(func=cmd_lab)
    from . import bench, probe
    bench.add_cli(sub)
    probe.add_cli(sub)
    args, extra = parser.parse_known_args(argv)
    # `kill` / the lab stopping us: unwind normally, so a running build step's process group is killed too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Ctrl-C works even when we were started with SIGINT ignored (`cmd &` in a script or a Makefile, nohup):
    # Python installs no KeyboardInterrupt handler then, and the lab or a build would ignore Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if extra and args.cmd != "lab":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.cmd == "lab":
        args.jupyter_args = extra + list(args.jupyter_args)  # e.g. `labkit lab --no-browser --port 8899`
    try:
        return args.func(args)
    except LabkitError as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
