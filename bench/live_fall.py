"""/live in Chromium while a whole fleet goes silent: how far the page is behind the server.

    .venv/bin/python bench/live_fall.py [--hosts 1000]

Starts the real ``twistd -n heartbeat`` (``grace`` 3 s), brings ``--hosts`` hosts UP
(announcing a 12 s interval), opens /live in headless Chromium (``/usr/bin/chromium``,
as tests/test_ui.py) and waits for its summary to count them, then sends nothing more.
When ``/api/0/status`` counts every host DOWN it times how long the page takes to say
so ("N down"), and prints the feed's state and the server's ``websocket`` section
(events sent, clients dropped). Everything is on loopback, bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fleet import bring_in, heartbeats  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from tests.support import ServerProcess  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def says(page: Page, text: str, seconds: float) -> bool:
    """Whether the page's main text holds ``text`` within ``seconds`` (the pages' CSP
    allows no evaluated strings: the text is read, not waited for in the page)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if text in page.inner_text("main"):
            return True
        time.sleep(0.1)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    args = parser.parse_args()
    if args.hosts < 1:
        parser.error("--hosts must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), source_rate=1e9, max_hosts=10**7,
                               max_unconfigured_hosts=10**7, grace=3.0,
                               monitor_interval=1.0).start()
        try:
            bring_in(server, heartbeats(args.hosts, 12),
                     lambda status: status["hosts"]["total"] == args.hosts)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                     args=["--disable-gpu"])
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{server.http_port}/live")
                if not says(page, f"{args.hosts} host", 60):
                    print("the page never counted the fleet")
                    return 1
                while server.get("/api/0/status")["hosts"]["DOWN"] < args.hosts:
                    time.sleep(0.2)
                down = time.monotonic()
                behind = (round(time.monotonic() - down, 2)
                          if says(page, f"{args.hosts} down", 120) else None)
                print(json.dumps({
                    "hosts": args.hosts, "page_behind_server_s": behind,
                    "feed": page.get_attribute("#feed-state", "data-state"),
                    "websocket": server.get("/api/0/status")["websocket"]}, indent=1))
                browser.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
