"""Drive a real headless Chromium over the DevTools protocol, with nothing but the stdlib.

``--remote-debugging-pipe`` makes Chromium read protocol commands on fd 3 and write replies and
events on fd 4 (NUL-terminated JSON), so no websocket library or driver binary is needed.  Used
by the report's browser test, and as a script to take the README's screenshot::

    python tests/chromium.py runs/x/report.html docs/report.png [MAX_HEIGHT_PX [SCALE]]
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--remote-debugging-pipe"]

CHECK_FIGURES = """JSON.stringify([...document.querySelectorAll('.js-plotly-plot')].map(d => {
  // calcdata: the points Plotly actually computed for drawing (after decoding typed arrays)
  const finite = (d.calcdata || []).map(cd => cd.filter(p => Number.isFinite(p.x) && Number.isFinite(p.y)).length);
  const fl = d._fullLayout;
  const axes = Object.keys(fl).filter(k => /^[xy]axis[0-9]*$/.test(k)).sort().map(k => ({
    name: k, type: fl[k].type, title: ((fl[k].title || {}).text || '').trim(),
    visible: fl[k].visible !== false, ticklabels: fl[k].showticklabels !== false,
    rendered_title: !!d.querySelector('.g-' + k.replace('axis', '') + 'title text')}));
  // Every piece of text drawn in the figure: titles, legend entries, annotations, tick labels.
  // Legend entries: class legendtext, legend2text, ... (one legend per panel is allowed).
  const entries = [...d.querySelectorAll('text')].filter(e => /^legend[0-9]*text$/.test(e.getAttribute('class')));
  const sel = ['.g-gtitle text', '.infolayer [class^="g-"][class$="title"] text', 'text[class$="titletext"]',
               '.annotation-text', '.textpoint text', '.xtick text', '.ytick text'];
  const boxes = [...new Set(entries.concat(sel.flatMap(s => [...d.querySelectorAll(s)])))]
    .map(e => ({text: e.textContent, r: e.getBoundingClientRect()}))
    .filter(b => b.text.trim() && b.r.width > 0 && b.r.height > 0);
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i].r, b = boxes[j].r;  // 1 px of slack: glyph boxes touch without clashing
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
      overlaps.push([boxes[i].text, boxes[j].text]);
  }
  const r = d.getBoundingClientRect();
  return {id: d.id, traces: finite.length, points: finite.reduce((a, b) => a + b, 0),
          empty_traces: finite.filter(n => n === 0).length, drawn: d.querySelectorAll('.main-svg').length,
          axes: axes, legend: entries.map(e => e.textContent),
          text_points: d.querySelectorAll('.textpoint').length, overlaps: overlaps,
          width: r.width, right: r.right};
}))"""

PAGE_SIZE = """JSON.stringify({width: window.innerWidth, height: document.documentElement.scrollHeight,
  scroll_width: document.documentElement.scrollWidth})"""

WIDTH = 1400  # the width the report is checked (and the docs' screenshots taken) at


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless browser; ``open(url)`` loads a page and records errors and requests."""

    def __init__(self, binary: str | None = None, timeout: float = 60.0):
        binary = binary or find_chromium()
        if not binary:
            raise FileNotFoundError("no chromium on PATH")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="clearsim-chromium-")
        cmd_r, cmd_w = os.pipe()  # we write commands, Chromium reads fd 3
        out_r, out_w = os.pipe()  # Chromium writes fd 4, we read

        def child_fds():
            a, b = os.dup(cmd_r), os.dup(out_w)  # out of the way of 3 and 4 first
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=child_fds,
                                     close_fds=False)
        os.close(cmd_r)
        os.close(out_w)
        self.w, self.r = cmd_w, out_r
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    # -- protocol -----------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the protocol pipe")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, session: str, timeout: float | None = None) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method and e.get("sessionId") == session:
                return self.events.pop(i)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            m = self._read_message(deadline)
            if m.get("method") == method and m.get("sessionId") == session:
                return m
            self.events.append(m)

    def drain(self, seconds: float) -> None:
        """Collect events for a while (late console errors, renders finishing)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_message(deadline))
        except TimeoutError:
            pass

    # -- pages --------------------------------------------------------------------------------
    def open(self, url: str, width: int = 1280, height: int = 900) -> str:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable", session=s)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1, "mobile": False},
                  session=s)
        self.send("Page.navigate", {"url": url}, session=s)
        self.wait_event("Page.loadEventFired", s)
        return s

    def evaluate(self, expression: str, session: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}, session=session)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def errors(self, session: str) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        out = []
        for e in self.events:
            if e.get("sessionId") != session:
                continue
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                   for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def requests(self, session: str) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("sessionId") == session and e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, session: str, path: str | os.PathLike, max_height: int | None = None,
                   scale: float = 1.0) -> None:
        """A PNG of the page from the top, all of it or its first ``max_height`` pixels, as wide
        as the window; ``scale`` < 1 shrinks it (a smaller file for the docs)."""
        size = json.loads(self.evaluate(PAGE_SIZE, session))
        params = {"format": "png", "captureBeyondViewport": True,
                  "clip": {"x": 0, "y": 0, "width": size["width"],
                           "height": min(size["height"], max_height or size["height"]),
                           "scale": scale}}
        data = self.send("Page.captureScreenshot", params, session=session)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.w, self.r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_page(path: str | os.PathLike, screenshot: str | os.PathLike | None = None,
               max_height: int | None = None, width: int = WIDTH, scale: float = 1.0) -> dict:
    """Load a local HTML file in a ``width``-pixel window; return its figures (traces, points,
    axes with their titles and types, legend entries, overlapping text), the page size, console
    errors and any non-local requests."""
    url = Path(path).resolve().as_uri()
    with Chromium() as browser:
        s = browser.open(url, width=width)
        browser.drain(1.0)
        # Plotly finishes some drawing (legends, auto-margins) after load: read the figures
        # until two readings half a second apart agree, so a slow machine sees the final page.
        figures, deadline = None, time.monotonic() + 20
        while time.monotonic() < deadline:
            now = json.loads(browser.evaluate(CHECK_FIGURES, s))
            if now == figures:
                break
            figures = now
            browser.drain(0.5)
        page = json.loads(browser.evaluate(PAGE_SIZE, s))
        browser.drain(0.3)
        if screenshot:
            browser.screenshot(s, screenshot, max_height, scale)
        remote = [u for u in browser.requests(s) if not u.startswith(("file:", "data:", "about:"))]
        return {"figures": figures, "page": page, "errors": browser.errors(s),
                "remote_requests": remote}


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help") or len(args) > 4:
        print("usage: python tests/chromium.py REPORT.html [SHOT.png [MAX_HEIGHT_PX [SCALE]]]")
        sys.exit(0 if args and args[0] in ("-h", "--help") else 2)
    result = check_page(args[0], args[1] if len(args) > 1 else None,
                        int(args[2]) if len(args) > 2 else None,
                        scale=float(args[3]) if len(args) > 3 else 1.0)
    print(json.dumps(result, indent=2))
