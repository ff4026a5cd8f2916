"""Open a local HTML file in headless Chromium and report what a browser saw.

A small DevTools-protocol client (websocket-client): it records every console message,
uncaught exception, log entry and network request while the page loads, evaluates a script in
the page, and saves PNG screenshots. Used by the report's browser tests; it needs Debian's
`chromium` on PATH, which `.ci/run` installs.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, SCREEN = 1400, 900  # CSS pixels of the emulated screen


@dataclass
class PageVisit:
    url: str
    console: list[dict[str, Any]] = field(default_factory=list)  # console.* calls and log entries
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    evaluated: Any = None
    screenshots: list[Path] = field(default_factory=list)


class _Session:
    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.events.append(json.loads(self.ws.recv()))

    def drain(self, seconds: float) -> None:
        """Collect events that arrive within `seconds` (late requests, late console output)."""
        import websocket

        self.ws.settimeout(seconds)
        with contextlib.suppress(websocket.WebSocketTimeoutException, TimeoutError):
            while True:
                self.events.append(json.loads(self.ws.recv()))
        self.ws.settimeout(30)


@contextlib.contextmanager
def _browser(profile: Path) -> Iterator[str]:
    """A headless Chromium with a fresh profile; yields its first page's DevTools URL."""
    assert CHROMIUM, "chromium is not installed"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-port=0",
         "--remote-allow-origins=*", f"--user-data-dir={profile}", f"--window-size={WIDTH},{SCREEN}",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            targets = json.load(reply)
        yield next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def visit(page: Path, workdir: Path, script: str,
          shots: dict[str, bool | tuple[int, int]]) -> PageVisit:
    """Load `page` (file://), run `script` (an expression returning JSON), save screenshots.

    shots: file name -> the full page (True), the first screen (False) or a band (top,
    height) in CSS pixels, each written under workdir.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    url = page.resolve().as_uri()
    result = PageVisit(url)
    with _browser(workdir / "profile") as ws_url:
        session = _Session(ws_url)
        for domain in ("Page", "Runtime", "Log", "Network"):
            session.call(f"{domain}.enable")
        session.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=SCREEN,
                     deviceScaleFactor=1, mobile=False)
        session.events.clear()
        session.call("Page.navigate", url=url)
        session.wait_for("Page.loadEventFired")
        session.drain(1.0)
        result.evaluated = session.call("Runtime.evaluate", expression=script,
                                        returnByValue=True)["result"].get("value")
        height = session.call("Runtime.evaluate", expression="document.documentElement.scrollHeight",
                              returnByValue=True)["result"]["value"]
        for name, band in shots.items():
            top, tall = band if isinstance(band, tuple) else (0, height if band else SCREEN)
            if top >= height:
                continue
            clip = {"x": 0, "y": top, "width": WIDTH, "height": min(tall, height - top),
                    "scale": 1}
            shot = session.call("Page.captureScreenshot", format="png", clip=clip,
                                captureBeyondViewport=True)
            path = workdir / name
            path.write_bytes(base64.b64decode(shot["data"]))
            result.screenshots.append(path)
        session.drain(0.3)
        session.ws.close()
    for event in session.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            result.console.append({"type": params["type"], "text": text})
            if params["type"] in ("error", "assert"):
                result.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            result.errors.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            result.console.append({"type": entry["level"], "text": entry["text"]})
            if entry["level"] == "error":
                result.errors.append(f"log: {entry['text']}")
        elif method == "Network.requestWillBeSent":
            result.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed":
            result.errors.append(f"load failed: {params.get('errorText')}")
    return result


# Each chart's <svg data-chart=NAME> and its drawn data marks (not axes or grid lines) with a
# non-empty box on the page.
CHART_PROBE = """JSON.stringify(Array.from(document.querySelectorAll('svg[data-chart]')).map(svg => {
  const box = svg.getBoundingClientRect();
  const marks = Array.from(svg.querySelectorAll(
      'circle, rect, polyline, path, line:not(.axis):not(.grid):not(.tickmark)'))
    .map(e => e.getBoundingClientRect())
    .filter(r => r.width > 0 || r.height > 0);
  return {name: svg.dataset.chart, width: box.width, height: box.height,
          marks: marks.length, areas: marks.filter(r => r.width > 0 && r.height > 0).length,
          texts: Array.from(svg.querySelectorAll('text')).map(t => t.textContent)};
}))"""


OVERVIEW = 1500  # CSS pixels from the top of a report: the verdict and the first charts


def check_in_browser(page: Path, workdir: Path, charts: Sequence[str]) -> PageVisit:
    """Assert what a reader's browser must see; return the visit for further checks."""
    seen = visit(page, workdir, CHART_PROBE, {"overview.png": (0, OVERVIEW), "full-page.png": True})
    assert seen.errors == []
    assert seen.requests == [seen.url]  # the page itself, nothing fetched
    found = {c["name"]: c for c in json.loads(seen.evaluated)}
    assert set(found) == set(charts)
    for name in charts:
        chart = found[name]
        assert chart["width"] > 300 and chart["height"] > 150, name
        assert chart["areas"] >= 2, f"{name} draws nothing: {chart}"
        assert chart["texts"][0], f"{name} has no title"
    for shot in seen.screenshots:
        assert shot.stat().st_size > 20_000  # a blank page compresses to a few kB
    return seen
