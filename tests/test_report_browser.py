"""The demo run's report opened in headless Chromium: every image decodes, no console
errors, a screenshot of the first screen saved next to the report.

Chromium is driven over the DevTools protocol through a pipe (``--remote-debugging-pipe``:
NUL-terminated JSON on file descriptors 3 and 4), so the standard library suffices. The
browser is installed with apt-get where missing (the test setup, so CI runs it); the test
skips only when it cannot be installed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
APT_TIMEOUT = 900  # seconds, for `apt-get install chromium` on a fresh machine


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_browser() -> tuple[str | None, str]:
    """The browser's path, installing Debian's ``chromium`` with apt-get when none is found.
    Returns ``(path or None, why not)``; never raises."""
    path = find_browser()
    if path:
        return path, ""
    if not shutil.which("apt-get"):
        return None, "no chromium and no apt-get to install it"
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        return None, "no chromium, and not root (no sudo) to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for cmd in (["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
                ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]):
        try:
            done = subprocess.run(prefix + cmd, capture_output=True, text=True, timeout=APT_TIMEOUT, env=env)
            log.append(f"{' '.join(cmd)}: exit {done.returncode} {done.stderr.strip()[-300:]}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.append(f"{' '.join(cmd)}: {exc}")
            break
        path = find_browser()
        if path:
            return path, ""
    return None, "could not install chromium: " + " | ".join(log)


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe (stdlib only)."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
             "--remote-debugging-pipe"]

    def __init__(self, binary: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="dynconn-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the child's ends above 9, so that putting them on 3 and 4 cannot clobber one another
        for name in ("to_browser_r", "from_browser_w"):
            fd = locals()[name]
            high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
            os.close(fd)
            if name == "to_browser_r":
                to_browser_r = high
            else:
                from_browser_w = high

        # the browser reads commands on fd 3 and writes answers on fd 4. The pipe ends are
        # put there in the child; close_fds=False because Popen would close them after a
        # preexec_fn, and every other descriptor is close-on-exec anyway (PEP 446)
        def child_fds():
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [binary, *self.FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=child_fds)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session = None

    # -- protocol
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium")
            import select

            ready, _, _ = select.select([self._from_browser], [], [], 0.5)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, *, browser: bool = False) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not browser:
            msg["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + self.timeout
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    # -- high level
    def open(self, url: str, width: int = 1366, height: int = 900) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 browser=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = False) -> None:
        params = {"format": "png"}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update({"captureBeyondViewport": True,
                           "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}})
        data = self.send("Page.captureScreenshot", params)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def console_errors(self) -> list[str]:
        errors = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                errors.append(json.dumps(p.get("exceptionDetails", {}))[:300])
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                errors.append(f"{p['entry'].get('source')}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return errors

    def close(self) -> None:
        try:
            self.send("Browser.close", browser=True)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


IMAGE_CHECK = """(async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.decode().then(() => null, () => null)));
  return imgs.map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}));
})()"""


@pytest.fixture(scope="session")
def browser() -> str:
    path, why = install_browser()
    if path is None:
        pytest.skip(why)
    return path


def test_report_opens_in_chromium(browser, standard_run):
    report = standard_run / "report.html"
    with Chromium(browser) as chrome:
        chrome.open(report.resolve().as_uri())
        images = chrome.evaluate(IMAGE_CHECK)
        chrome.screenshot(standard_run / "report-screenshot.png")
        anchors = chrome.evaluate("Array.from(document.querySelectorAll('a[href^=\"#\"]'))"
                                  ".filter(a => !document.getElementById(a.getAttribute('href').slice(1)))"
                                  ".map(a => a.getAttribute('href'))")
        scripts = chrome.evaluate("Array.from(document.scripts).map(s => [s.type, s.src])")
        errors = chrome.console_errors()
    assert len(images) >= 5, images
    broken = [i for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert not broken, broken
    assert not errors, errors
    assert not anchors, f"links to missing sections: {anchors}"
    # the neuron search only: its index (JSON data) and its inline code, nothing loaded from elsewhere
    assert scripts == [["application/json", ""], ["", ""]]
    shot = (standard_run / "report-screenshot.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000


def test_broken_image_is_caught(browser, tmp_path):
    """The check above can fail: a page with an undecodable image and a script error."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><img alt='x' src='data:image/png;base64,AAAA'>"
                    "<script>console.error('boom')</script></body></html>")
    with Chromium(browser) as chrome:
        chrome.open(page.as_uri())
        images = chrome.evaluate(IMAGE_CHECK)
        errors = chrome.console_errors()
    assert images and images[0]["width"] == 0
    assert any("boom" in e for e in errors)
