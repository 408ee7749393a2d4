"""Opens the web UI in a real headless browser, uploads a bundled example, generates, and saves a
screenshot of the page with the video.

    python scripts/app_screenshot.py --out=outputs/app.png [--config=demo] [--browser=/usr/bin/chromium]

Needs the `app` extra, Debian's `chromium` (`apt-get install -y chromium`) and `playwright` (its Python
package only: the system browser is used). The app binds to 127.0.0.1 on a free port and is stopped
at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "stepvideo_jax", "demo", "examples")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the app exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"error: the app did not listen on port {port} within {timeout:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="outputs/app_screenshot.png")
    p.add_argument("--config", default="demo")
    p.add_argument("--example", default="white_square", help="bundled example name (stepvideo_jax/demo/examples)")
    p.add_argument("--browser", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--timeout", type=float, default=1200, help="seconds for start-up and for the generation")
    a = p.parse_args()
    if not os.path.isfile(a.browser):
        raise SystemExit(f"error: no browser at {a.browser!r}; install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    image = os.path.join(EXAMPLES, f"{a.example}.png")
    with open(os.path.join(EXAMPLES, f"{a.example}.txt"), encoding="utf-8") as f:
        prompt = f.read().strip().splitlines()[0]
    port = _free_port()
    out_dir = os.path.join(os.path.dirname(os.path.abspath(a.out)), "app_videos")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stepvideo_jax.app",
            f"--config={a.config}",
            f"--port={port}",
            f"--config.output_dir={out_dir}",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    try:
        _wait_for_port(port, proc, a.timeout)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=a.browser, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
            page.locator("button[aria-label='Clear']").first.click(timeout=5000) if page.locator(
                "button[aria-label='Clear']"
            ).count() else None
            page.locator("input[type=file]").first.set_input_files(image)
            page.get_by_label("Prompt").fill(prompt)
            page.get_by_role("button", name="Generate").click()
            t0 = time.time()
            page.wait_for_selector("video[src]", timeout=a.timeout * 1000)
            page.wait_for_timeout(1500)  # let the player show its first frame
            os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
            page.screenshot(path=a.out, full_page=True)
            browser.close()
        print(f"generated in {time.time() - t0:.1f}s; wrote {a.out}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
