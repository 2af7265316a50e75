"""The widgets lesson in a real browser: JupyterLab on loopback, headless Debian Chromium through Playwright.

nbmake only runs kernels; this checks what a learner sees: the lesson runs top to bottom in JupyterLab, the chat
widget renders, and typing a prompt + clicking Send streams text into it and updates the tok/s label.
Bounded in time (pytest-timeout + a deadline on every wait) and leaves nothing running (asserted)."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from labkit.net import port_open
from labkit.procs import ManagedProcess

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "notebooks" / "12_playground.ipynb"
RESULTS = ROOT / "test-results"
CHROMIUM = Path(os.environ.get("LABKIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
LAB_PORTS = range(8880, 8890)

# JS run in the page: the notebook panel JupyterLab has open (exposed by --LabApp.expose_app_in_browser)
NOTEBOOK_JS = "window.jupyterapp && window.jupyterapp.shell.currentWidget"
PROGRESS_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.model.cells;
  const out = {kernel: panel.sessionContext.session?.kernel?.status, run: 0, code: 0, errors: []};
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    out.code += 1;
    if (cell.executionCount) out.run += 1;
    for (const o of cell.outputs.toJSON())
      if (o.output_type === 'error') out.errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
  }
  return out;
}"""


def launch(pw):
    """Debian's Chromium, headless, through Playwright (no browser download)."""
    return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS, timeout=60_000)


def pick_port() -> int:
    for port in LAB_PORTS:
        if not port_open("127.0.0.1", port):
            return port
    raise RuntimeError(f"all JupyterLab test ports {LAB_PORTS.start}-{LAB_PORTS.stop - 1} are taken")


def tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


SERVED = [ROOT / "notebooks" / name for name in ("00_welcome.ipynb", "02_ollama.ipynb", LESSON.name)]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for this module's tests (each opens its own pages); gone when they are done."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: the browser test needs Debian's chromium. "
                    "Fix: `labkit setup --only chromium` (or set LABKIT_CHROMIUM=/path/to/chromium).")
    me = psutil.Process()
    with sync_playwright() as pw:
        chromium = launch(pw)
        try:
            yield chromium
        finally:
            chromium.close()
    left = [p for p in me.children(recursive=True) if "chrom" in p.name().lower()]
    assert not psutil.wait_procs(left, timeout=10)[1], "Chromium left running"


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """One JupyterLab for the lessons opened in Chromium, serving copies of them (its autosave must not touch the
    repo); each test's kernels are shut down by `lab_page`, and the end stops JupyterLab and asserts nothing of
    it is left."""
    tmp_path = tmp_path_factory.mktemp("jupyterlab")
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    for lesson in SERVED:
        shutil.copy(lesson, lab_dir / lesson.name)
    jupyter_home = tmp_path / "jupyter"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(jupyter_home / "config"),
           "JUPYTER_DATA_DIR": str(jupyter_home / "data"), "JUPYTER_RUNTIME_DIR": str(jupyter_home / "runtime"),
           "JUPYTER_PLATFORM_DIRS": "1"}
    # render every cell, not only those in view: a widget scrolled off screen would otherwise have no text yet
    tracker = jupyter_home / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')
    port = pick_port()
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--port-retries=0", f"--ServerApp.root_dir={lab_dir}", "--IdentityProvider.token=",
            "--ServerApp.password=", "--LabApp.expose_app_in_browser=True",
            f"--LabApp.workspaces_dir={jupyter_home / 'workspaces'}",
            f"--LabApp.user_settings_dir={jupyter_home / 'settings'}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.disable_check_xsrf=True"]  # loopback, no token: the fixtures shut kernels down over REST
    if os.geteuid() == 0:  # CI containers run as root; JupyterLab refuses that unless told
        argv.append("--allow-root")
    lab = ManagedProcess(argv, log_path=tmp_path / "jupyterlab.log", env=env, cwd=lab_dir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if not lab.alive():
            pytest.fail(f"JupyterLab exited during start (code {lab.returncode}):\n{lab.log_tail(40)}")
        try:
            if httpx.get(url + "/api/status", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            lab.stop()
            pytest.fail(f"JupyterLab did not answer on {url} within 90 s:\n{lab.log_tail(40)}")
        time.sleep(0.5)
    root = psutil.Process(lab.pid)
    try:
        yield url, root
    finally:
        started = tree(root)  # the server and the kernels it started
        lab.stop(timeout=20)  # SIGTERM: jupyter_server shuts its kernels down, then exits
        gone, alive = psutil.wait_procs(started, timeout=20)
        for p in alive:  # only processes this test started (descendants of our JupyterLab)
            p.kill()
        assert not alive, f"still running after JupyterLab stopped: {[(p.pid, p.name()) for p in alive]}"


@pytest.fixture
def lab_page(jupyterlab, browser):
    """A fresh page in the shared Chromium on the shared JupyterLab; afterwards the page closes and the kernels
    this test started are shut down (through JupyterLab's REST API) and gone — the next lesson starts clean."""
    url, root = jupyterlab
    before = {k["id"] for k in httpx.get(url + "/api/kernels", timeout=10).json()}
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    try:
        yield page, url, root
    finally:
        page.close()
        kernels = [k["id"] for k in httpx.get(url + "/api/kernels", timeout=10).json() if k["id"] not in before]
        procs = [p for p in tree(root)[1:] if any(k in " ".join(p.cmdline()) for k in kernels)]
        for k in kernels:
            assert httpx.delete(f"{url}/api/kernels/{k}", timeout=30).status_code == 204
        alive = psutil.wait_procs(procs, timeout=20)[1]
        assert not alive, f"kernels still running after their shutdown: {[p.pid for p in alive]}"


@pytest.mark.timeout(480)
def run_all(page, url: str, name: str, deadline_s: float = 300) -> dict:
    """Open a lesson in JupyterLab and press Run ▸ Run All Cells, as a learner does; wait until every code cell
    ran and the kernel is idle. Fails on the first error output."""
    # a workspace of its own: JupyterLab would otherwise reopen the lessons an earlier test had open
    page.goto(f"{url}/lab/workspaces/{Path(name).stem}/tree/{name}", wait_until="domcontentloaded")
    page.wait_for_function(f"() => {NOTEBOOK_JS} && {NOTEBOOK_JS}.content && "
                           f"{NOTEBOOK_JS}.sessionContext.session?.kernel?.status === 'idle'", timeout=120_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    deadline = time.monotonic() + deadline_s
    while True:
        progress = page.evaluate(PROGRESS_JS)
        assert not progress["errors"], f"{name} failed in JupyterLab: {progress['errors']}"
        if progress["run"] == progress["code"] and progress["kernel"] == "idle":
            return progress
        assert time.monotonic() < deadline, f"{name} still running after {deadline_s:.0f} s: {progress}"
        time.sleep(0.25)  # a page.evaluate is cheap: finish within a quarter second of the last cell


# The text of every output, and for each output the widest line against what its area shows in characters.
OUTPUTS_JS = """() => [...document.querySelectorAll('.jp-OutputArea-output pre')].map(el => {
  const ctx = document.createElement('canvas').getContext('2d');
  const style = getComputedStyle(el);
  ctx.font = `${style.fontSize} ${style.fontFamily}`;
  const lines = el.innerText.split('\\n');
  const widest = Math.max(...lines.map(l => ctx.measureText(l).width));
  return {text: el.innerText, widest: widest, room: el.clientWidth};
})"""


@pytest.mark.timeout(540)
@pytest.mark.parametrize("name", ["00_welcome", "02_ollama"])
def test_run_all_is_safe_and_outputs_fit(lab_page, name):
    """Run All in JupyterLab runs every cell — nbmake's skip-execution tag means nothing there: no cell may
    download or install (no 'command not found', no pull), and lesson 00's doctor table fits its output area."""
    page, url, _ = lab_page
    RESULTS.mkdir(exist_ok=True)
    run_all(page, url, name + ".ipynb", deadline_s=420)  # lesson 02 reloads Ollama per option: slow on a busy machine
    outputs = page.evaluate(OUTPUTS_JS)
    page.screenshot(path=str(RESULTS / f"{name}.png"), full_page=False)
    text = "\n".join(o["text"] for o in outputs)
    for sign in ("command not found", "pulling manifest", "Downloading", "Successfully installed"):
        assert sign not in text, f"Run All ran something it must not ({sign!r}) in {name}.ipynb"
    if name == "00_welcome":
        doctor = [o for o in outputs if "labkit doctor" in o["text"]]
        assert doctor, "the doctor table is shown"
        assert doctor[0]["widest"] <= doctor[0]["room"] + 1, f"the doctor table is wider than its area: {doctor[0]}"


def test_lesson_runs_and_chat_streams_in_chromium(lab_page):
    from playwright.sync_api import expect

    page, url, lab_root = lab_page
    RESULTS.mkdir(exist_ok=True)
    run_all(page, url, LESSON.name)

    chat = page.locator(".labkit-chat").first
    chat.scroll_into_view_if_needed()
    stats, output = chat.locator(".labkit-stats"), chat.locator(".labkit-output")
    expect(chat.locator(".labkit-prompt input")).to_be_visible(timeout=30_000)
    # the lesson ends by handing the widget back cleared, with everyday settings: nothing from its checks
    before_stats, before_text = stats.inner_text(), output.inner_text()

    # record every value the stats label takes while streaming
    chat.evaluate("""el => {
      window.__labkitStats = [];
      const label = el.querySelector('.labkit-stats');
      new MutationObserver(() => window.__labkitStats.push(label.innerText))
        .observe(label, {subtree: true, childList: true, characterData: true});
    }""")
    chat.locator(".labkit-prompt input").fill("What is the capital of France?")
    chat.locator(".labkit-prompt input").press("Enter")  # as people send in a chat box
    page.wait_for_function(
        """([el, before]) => {
             const s = el.querySelector('.labkit-stats').innerText;
             return s !== before && s.includes('tok/s') && s.includes('finish:');
           }""", arg=[chat.element_handle(), before_stats], timeout=180_000)

    after_text = output.inner_text()
    seen = page.evaluate("() => window.__labkitStats")
    page.screenshot(path=str(RESULTS / "12_playground.png"), full_page=False)
    chat.screenshot(path=str(RESULTS / "12_playground_chat.png"))

    assert "What is the capital of France?" in after_text and after_text.startswith(before_text[:10])
    answer = after_text.split("What is the capital of France?", 1)[1].split("model:", 1)[1].strip()
    assert answer, f"no streamed text after the prompt: {after_text!r}"
    assert any("streaming…" in s for s in seen), f"the label never showed a live update: {seen}"
    assert "tok/s" in stats.inner_text() and stats.inner_text() != before_stats
    assert "finish: stop" in stats.inner_text(), \
        f"after Run All the chat still answers in full (no exercise left a tiny max_tokens): {stats.inner_text()}"
    assert chat.locator(".labkit-error").inner_text() == ""
    # rendered, not just present in the DOM: the pane is tall enough to show the whole transcript
    out_box, pane_box = output.bounding_box(), chat.locator(".labkit-pane").bounding_box()
    assert out_box["height"] > 20 and pane_box["height"] >= out_box["height"], (out_box, pane_box)
    assert not chat.locator("button.labkit-send").is_disabled()
    assert lab_root.is_running()  # the fixtures shut its kernel down, stop JupyterLab and Chromium, assert both gone


@pytest.mark.timeout(300)
def test_the_url_make_lab_prints_opens_lesson_00(tmp_path, browser):
    """`labkit lab` (what `make lab` runs) prints a URL; in Chromium that URL shows lesson 00, not the Launcher."""
    from lab_helpers import start_lab, stop_lab, wait_for_lab_url

    import labkit
    from labkit.procs import wait_gone
    lesson = ROOT / "notebooks" / "00_welcome.ipynb"
    before = lesson.read_bytes()
    labkit.up("llamacpp", export=False, quiet=True)
    lab, port, log = start_lab(tmp_path, extra=("--LabApp.expose_app_in_browser=True",))
    try:
        url = wait_for_lab_url(lab, port, log)["url"]  # printed, and in lab.json
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        try:
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_function(f"() => {NOTEBOOK_JS} && {NOTEBOOK_JS}.title.label === '00_welcome.ipynb'",
                                   timeout=90_000)
            RESULTS.mkdir(exist_ok=True)
            page.screenshot(path=str(RESULTS / "make_lab_opens_lesson_00.png"))
        finally:
            page.close()
    finally:
        t0 = time.monotonic()
        stop_lab(lab)  # Ctrl-C right after a page was served: JupyterLab's idle threads used to hold it 10-15 s
        took = time.monotonic() - t0
    assert wait_gone(lab.pid)
    assert took < 10, f"Ctrl-C took {took:.1f} s to stop the lab"
    assert lesson.read_bytes() == before, "opening lesson 00 must not rewrite the committed notebook"


def _letters(text: str) -> str:
    """ASCII letters only: markdown rendering drops `*`, `#`, list numbers and line breaks, the words stay. (Only
    ASCII, because Chromium hands an SSE body without a charset over as Latin-1: é arrives as Ã©.)"""
    return "".join(ch for ch in text if ch.isascii() and ch.isalpha())


@pytest.mark.timeout(240)
def test_llama_server_web_ui_chats(browser):
    """llama.cpp's own web UI (built by npm from the sdist, served with --path): one message typed into it comes
    back streamed — the page's text grows while the SSE response arrives, and ends as what the server sent."""
    import json

    from playwright.sync_api import expect

    import labkit
    from labkit.net import free_port
    from labkit.servers.ui import ui_built
    if not ui_built():
        pytest.fail("llama-server's web UI is not built. Fix: `labkit setup --only web-ui` (npm, ~3 min).")
    server = labkit.up("llamacpp", port=free_port(), parallel=1, export=False, quiet=True,
                       extra_args=["--n-predict", "32"])  # the UI sends no max_tokens: the server's limit applies
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        try:
            page.set_default_timeout(60_000)
            page.goto(server.base_url + "/", wait_until="networkidle")
            expect(page).to_have_title("llama-ui", timeout=30_000)  # set by the UI's script once it runs
            box = page.get_by_placeholder("Type a message...")
            box.fill("What is the capital of France?")
            with page.expect_response(lambda r: r.url.endswith("/v1/chat/completions"), timeout=60_000) as info:
                box.press("Enter")
            response = info.value
            messages = page.locator(".markdown-content")
            lengths, deadline = [], time.monotonic() + 90
            while time.monotonic() < deadline:
                if messages.count() >= 2:  # the user's message, then the assistant's
                    lengths.append(len(messages.nth(1).inner_text()))
                    if len(lengths) > 5 and lengths[-1] == lengths[-6] and lengths[-1] > 0:
                        break  # nothing new for 0.5 s
                time.sleep(0.1)
            assert response.finished() is None  # the stream ended (None = no network error)
            shown, body = messages.nth(1).inner_text(), response.text()
            request = json.loads(response.request.post_data)
            content_type = response.headers["content-type"]
            RESULTS.mkdir(exist_ok=True)
            page.screenshot(path=str(RESULTS / "01_web_ui.png"))
        finally:
            page.close()
        assert request["stream"] is True and request["messages"][-1]["content"] == "What is the capital of France?"
        assert content_type.startswith("text/event-stream")
        chunks = [json.loads(line[6:]) for line in body.splitlines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
        streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
        assert body.rstrip().endswith("data: [DONE]") and len(chunks) > 3, body[-500:]
        growing = sorted(set(n for n in lengths if n > 0))
        assert len(growing) >= 3, f"the reply appeared all at once, not streamed: {lengths}"
        assert shown.strip() and _letters(shown) == _letters(streamed), (shown, streamed)
    finally:
        server.stop()
    assert not server.alive()


@pytest.mark.timeout(120)
def test_web_ui_placeholder_until_built_then_served_without_restart(tmp_path, monkeypatch):
    """Before the UI is built, `/` says so (not a 404); when a build lands, the running server serves it."""
    import httpx

    import labkit
    from labkit.models import model_path
    from labkit.net import free_port
    from labkit.servers.install import find_llama_tool
    from labkit.servers.ui import STAMP, check_assets, install_into, ui_built, ui_dir
    if not ui_built():
        pytest.fail("llama-server's web UI is not built. Fix: `labkit setup --only web-ui`.")
    real_ui, binary, gguf = ui_dir(), find_llama_tool("llama-server"), model_path()
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    assert ui_built() is None
    server = labkit.up("llamacpp", port=free_port(), parallel=1, export=False, quiet=True, binary=binary,
                       gguf=gguf)
    try:
        before = httpx.get(server.base_url + "/", timeout=10)
        assert before.status_code == 200 and "still being built" in before.text
        assert httpx.get(server.base_url + "/health", timeout=10).json() == {"status": "ok"}
        # what build_ui does when npm is done: the finished build moves into the folder the server serves
        staged = tmp_path / "staged"
        shutil.copytree(real_ui, staged)
        assert check_assets(staged) == [] and (staged / STAMP).is_file()
        install_into(staged, ui_dir())
        assert ui_built() and not any(staged.iterdir())
        after = httpx.get(server.base_url + "/", timeout=10)
        assert after.status_code == 200 and "_app/immutable/bundle." in after.text and "still being built" not in after.text
        assert httpx.get(server.base_url + "/_app/version.json", timeout=10).status_code == 200
    finally:
        server.stop()
