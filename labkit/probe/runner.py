"""The probe's I/O: send each check's requests to a server and judge the replies (`probe`)."""
from __future__ import annotations

import time
from dataclasses import asdict

import httpx

from ..errors import LabkitError
from ..models import same_model
from ..net import url_for
from ..servers.base import PLACEHOLDER_KEY
from .checks import CHECKS, Check, HttpReply, Request, judge, server_kind

KIND_CHECK = "server kind"  # always sent (two quick GETs): the other rows' known differences depend on it


STREAM_CAP = 64  # SSE events read from one stream before the probe hangs up: a server that ignores the token
                 # limit (Ollama and max_completion_tokens) would otherwise generate on, hundreds of tokens


def send(client: httpx.Client, base_url: str, req: Request, api_key: str) -> HttpReply:
    """One request; streams are read whole, up to STREAM_CAP events (the judge parses them), JSON bodies decoded
    when they are JSON. The method may carry a tag: POST+BADKEY sends a wrong key, POST+RAW sends the payload (a
    str) as the body, as it is, labelled JSON (a malformed request)."""
    method, path, payload = req
    method, _, tag = method.partition("+")
    headers = {"Authorization": f"Bearer {'sk-wrong-key-for-the-probe' if tag == 'BADKEY' else api_key}"}
    if tag == "RAW":
        request = client.build_request(method, url_for(base_url, path), content=str(payload).encode(),
                                       headers=headers | {"Content-Type": "application/json"})
    else:
        request = client.build_request(method, url_for(base_url, path), headers=headers,
                                       json=payload if method == "POST" else None)
    t0 = time.perf_counter()
    for attempt in (1, 2):
        try:
            r = client.send(request, stream=True)
            break
        except httpx.RemoteProtocolError:
            # A pooled keep-alive connection the server had just closed: the request never reached it. Once.
            if attempt == 2:
                raise
    try:
        if "text/event-stream" in r.headers.get("content-type", ""):
            return HttpReply(r.status_code, None, _read_events(r), time.perf_counter() - t0)
        r.read()
    finally:
        r.close()
    try:
        body = r.json() if "json" in r.headers.get("content-type", "") else None
    except ValueError:
        body = None
    return HttpReply(r.status_code, body, r.text if body is None else "", time.perf_counter() - t0)


def _read_events(r: httpx.Response) -> str:
    """A stream's text, up to STREAM_CAP `data:` lines (then the connection is closed: the server stops)."""
    lines, events = [], 0
    for line in r.iter_lines():
        lines.append(line)
        events += line.startswith("data:")
        if events >= STREAM_CAP:
            lines.append("")  # the blank line that ends the last event
            break
    return "\n".join(lines) + "\n"


def probe(base_url: str, model: str, *, api_key: str = PLACEHOLDER_KEY, only: list[str] | None = None,
          timeout: float = 60.0, record: dict | None = None) -> list[Check]:
    """Run the battery against a server (its root …:8080, or …:8080/v1). With `record`, the replies are stored into
    it. The first check finds the server's kind (Ollama, llama-server, other); it runs even when `only` leaves it out,
    since a failure the kind gives by design is judged a known difference (≠) rather than a ✘."""
    checks, kind = [], None
    with httpx.Client(timeout=timeout) as client:
        for spec in CHECKS:
            name = spec.name
            wanted = not only or name in only
            if not wanted and name != KIND_CHECK:
                continue
            try:
                replies = [send(client, base_url, req, api_key) for req in spec.requests(model)]
            except httpx.HTTPError as exc:
                if wanted:
                    checks.append(Check(name, False, f"{type(exc).__name__}: {exc}"[:90]))
                continue
            if record is not None:
                record[name] = [asdict(r) for r in replies]
            if name == KIND_CHECK:
                kind = server_kind(*replies)
            if not wanted:
                continue
            try:
                checks.append(judge(name, replies, model, kind))
            except LabkitError as exc:  # e.g. a stream labkit.sse refuses: that is a finding, not a crash
                checks.append(Check(name, False, str(exc).splitlines()[0][:90]))
    return checks


def default_model(base_url: str, api_key: str = PLACEHOLDER_KEY) -> str:
    """What to probe when no model is named: the lab's model when the server lists it, else its first one."""
    from ..models import model_name
    url = url_for(base_url, "/v1/models")
    try:
        r = httpx.get(url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
        r.raise_for_status()
        ids = [m["id"] for m in r.json()["data"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise LabkitError(f"{url} did not list models ({exc}).",
                          fix="Is the server up (`labkit status`), and is this its address? "
                              "Name the model with --model.") from None
    if not ids:
        raise LabkitError(f"{url} lists no model.", fix="Load one, or name it with --model.")
    lab = model_name()
    return next((i for i in ids if same_model(lab, i)), ids[0])


