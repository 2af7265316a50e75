"""The probe's I/O: send each check's requests to a server and judge the replies (`probe`)."""
from __future__ import annotations

import time
from dataclasses import asdict

import httpx

from ..errors import LabkitError
from ..models import same_model
from ..net import url_for
from ..servers.base import PLACEHOLDER_KEY
from .checks import CHECKS, Check, HttpReply, Request, judge


def send(client: httpx.Client, base_url: str, req: Request, api_key: str) -> HttpReply:
    """One request; streams are read whole (the judge parses them), JSON bodies decoded when they are JSON."""
    method, path, payload = req
    key = "sk-wrong-key-for-the-probe" if method.endswith("+BADKEY") else api_key
    method = method.split("+")[0]
    t0 = time.perf_counter()
    for attempt in (1, 2):
        try:
            r = client.request(method, url_for(base_url, path), headers={"Authorization": f"Bearer {key}"},
                               json=payload if method == "POST" else None)
            break
        except httpx.RemoteProtocolError:
            # A pooled keep-alive connection the server had just closed: the request never reached it. Once.
            if attempt == 2:
                raise
    try:
        body = r.json() if "json" in r.headers.get("content-type", "") else None
    except ValueError:
        body = None
    return HttpReply(r.status_code, body, r.text if body is None else "", time.perf_counter() - t0)


def probe(base_url: str, model: str, *, api_key: str = PLACEHOLDER_KEY, only: list[str] | None = None,
          timeout: float = 60.0, record: dict | None = None) -> list[Check]:
    """Run the battery against a server (its root …:8080, or …:8080/v1). With `record`, the replies are stored into it."""
    checks = []
    with httpx.Client(timeout=timeout) as client:
        for spec in CHECKS:
            name = spec.name
            if only and name not in only:
                continue
            try:
                replies = [send(client, base_url, req, api_key) for req in spec.requests(model)]
            except httpx.HTTPError as exc:
                checks.append(Check(name, False, f"{type(exc).__name__}: {exc}"[:90]))
                continue
            if record is not None:
                record[name] = [asdict(r) for r in replies]
            try:
                checks.append(judge(name, replies, model))
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


