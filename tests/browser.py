"""A headless Chromium driven over the DevTools protocol, for tests that look at a rendered page.

Chromium's `--remote-debugging-pipe` speaks the protocol on file descriptors 3 (commands in) and 4
(replies and events out), each message JSON ended by a NUL byte: no WebSocket client, no driver
binary. The page's own scripts run (a React app renders its DOM); `evaluate` runs JavaScript in the
page or in one of its frames (an iframe of a data: URL included: an isolated world of that frame),
`screenshot` returns the PNG the compositor draws.

    with Chromium() as browser:
        browser.open(Path("report.html"))
        browser.wait_for("document.querySelector('nav') !== null")
        browser.evaluate("1 + 1")            # 2
        png = browser.screenshot()
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    def __init__(self, binary: str | None = None, width: int = 1400, height: int = 900, timeout: float = 120.0):
        self.binary = binary or chromium_binary()
        if self.binary is None:
            raise BrowserError("no chromium binary on PATH")
        self.width, self.height, self.timeout = width, height, timeout
        self._id = 0
        self._buf = b""
        self.events: list[dict] = []

    # ---- process and transport
    def __enter__(self) -> "Chromium":
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        cmd_r, self._cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        self._res_r, res_w = os.pipe()  # Chromium writes on fd 4, we read

        def child_fds():  # in the child, before exec: the pipe ends become fds 3 and 4 (inheritable)
            import fcntl

            a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 10)  # above 4 first: cmd_r or res_w may be 3 or 4
            b = fcntl.fcntl(res_w, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [self.binary, "--headless", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
             "--mute-audio", f"--user-data-dir={self._profile}", f"--window-size={self.width},{self.height}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            # close_fds=False: every other descriptor of this process is close-on-exec (PEP 446)
            preexec_fn=child_fds, close_fds=False)
        os.close(cmd_r)
        os.close(res_w)
        try:
            pages = [t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page"]
            target = pages[0]["targetId"] if pages else self.send("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime"):
                self.send(f"{domain}.enable", session=True)
            self.send("Emulation.setDeviceMetricsOverride", session=True, width=self.width, height=self.height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close")
                except BrowserError:
                    pass
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for fd in (self._cmd_w, self._res_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self._profile, ignore_errors=True)

    def _read_message(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("no reply from chromium in time")
            ready, _, _ = select.select([self._res_r], [], [], min(left, 1.0))
            if not ready:
                if self.proc.poll() is not None:
                    raise BrowserError(f"chromium exited ({self.proc.returncode}): "
                                       f"{self.proc.stderr.read().decode(errors='replace')[-2000:]}")
                continue
            chunk = os.read(self._res_r, 1 << 20)
            if not chunk:
                raise BrowserError("chromium closed its DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, session: bool = False, **params):
        """One DevTools command; its result (events that arrive meanwhile are kept in `events`)."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    # ---- page
    def open(self, path: Path) -> None:
        """Load a local file and wait for its load event."""
        self.events.clear()
        self.send("Page.navigate", session=True, url=Path(path).resolve().as_uri())
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read_message(deadline))

    def evaluate(self, expression: str, frame_url_prefix: str | None = None):
        """The JSON value of `expression` in the page, or in the first child frame whose URL starts with
        `frame_url_prefix` (an isolated world of that frame: its DOM, not its scripts' globals)."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        if frame_url_prefix is not None:
            frame = self.frame(frame_url_prefix)
            world = self.send("Page.createIsolatedWorld", session=True, frameId=frame["id"], worldName="test")
            params["contextId"] = world["executionContextId"]
        result = self.send("Runtime.evaluate", session=True, **params)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def frame(self, url_prefix: str) -> dict:
        def walk(node):
            yield node["frame"]
            for child in node.get("childFrames", []):
                yield from walk(child)

        tree = self.send("Page.getFrameTree", session=True)["frameTree"]
        frames = [f for f in list(walk(tree))[1:] if f.get("url", "").startswith(url_prefix)]
        if not frames:
            raise BrowserError(f"no child frame with a URL starting {url_prefix!r}")
        return frames[0]

    def wait_for(self, expression: str, frame_url_prefix: str | None = None, timeout: float | None = None):
        """Poll `expression` until it is truthy; its value. Raises with the last value on timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression, frame_url_prefix)
            except BrowserError as exc:  # e.g. the frame is not there yet
                value = str(exc)
            else:
                if value:
                    return value
            time.sleep(0.2)
        raise BrowserError(f"timed out waiting for {expression!r} (last: {value!r})")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", session=True, format="png")["data"])
