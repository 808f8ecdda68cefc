"""The browser the web tests and the page bench drive: Debian's `chromium`, as Playwright
launches it, at a phone's or a desktop's size."""

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("LAKU_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
