"""Run the course's Postman collection with newman (Postman's CLI runner) against a labkit server."""
from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import LabkitError
from .home import data_dir
from .setup import newman_bin

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['COLLECTION', 'run_collection']

COLLECTION = data_dir() / "postman" / "local-llm-lab.postman_collection.json"


def environment_file(kind: str) -> Path:
    """The Postman environment for a server kind ("llamacpp" or "ollama"), as you import it into the app."""
    return data_dir() / "postman" / f"{kind}.postman_environment.json"


@dataclass
class NewmanRun:
    """What newman reported: counts, failed assertions (name → message) and the console output."""

    returncode: int
    requests: int
    assertions: int
    failures: list[tuple[str, str]]
    skipped: list[str]
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.failures


def run_collection(server, *, collection: Path = COLLECTION, timeout: float = 300) -> NewmanRun:
    """newman run the collection with the server's environment (baseUrl/model/apiKey overridden from `server`)."""
    newman = newman_bin()
    if newman is None:
        raise LabkitError("newman (the Postman CLI runner) is not installed.",
                          fix="Run `labkit setup --only newman` (npm installs it under ~/.cache/labkit/node).")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        argv = [str(newman), "run", str(collection), "-e", str(environment_file(server.kind)),
                "--env-var", f"baseUrl={server.base_url}", "--env-var", f"model={server.model}",
                "--env-var", f"apiKey={server.key}", "--timeout-request", str(int(timeout * 1000)),
                "--reporters", "cli,json", "--reporter-json-export", str(report), "--color", "off"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            raise LabkitError(f"newman did not finish within {timeout + 30:.0f} s.",
                              fix="Is the server answering? Check server.log_tail().") from None
        if not report.exists():
            raise LabkitError(f"newman exited {proc.returncode} without a report.", log_tail=proc.stderr[-2000:],
                              fix="Read the output; is the collection valid JSON?")
        run = json.loads(report.read_text())["run"]
    stats = run["stats"]
    failures = [(f["source"]["name"] + ": " + f["error"].get("test", f["error"].get("name", "")),
                 f["error"]["message"]) for f in run["failures"]]
    ran = {e["item"]["name"] for e in run["executions"] if e.get("response")}
    skipped = [item["name"] for item in json.loads(collection.read_text())["item"] if item["name"] not in ran]
    return NewmanRun(proc.returncode, stats["requests"]["total"], stats["assertions"]["total"], failures,
                     skipped, proc.stdout)
