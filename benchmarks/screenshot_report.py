"""Write a run folder's ``report.html`` and save a full-page screenshot of it in headless Chromium, to look at
a report without a desktop (or attach one to a benchmark).

    python benchmarks/screenshot_report.py FOLDER OUT.png [--width 1200]

Needs ``selenium`` and Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``; other paths with --chromium / --chromedriver). The driver is always given by path,
so Selenium Manager never downloads one. The report is written into FOLDER: point it at a copy of a run
folder to leave the run as it was.
"""

import argparse
import sys
from pathlib import Path

from latentdistill.errors import LatentDistillError
from latentdistill.reports import write_html_report


def chromium(binary: str, driver: str, width: int, height: int = 900, timeout: int = 60):
    """A headless Chromium driven by the given chromedriver, with its console log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(timeout)
    browser.set_script_timeout(timeout)
    return browser


def screenshot(html: Path, out: Path, width: int, binary: str, driver: str) -> tuple[int, int]:
    """Open the page and save all of it (the viewport set to the document's height); returns (width, height)."""
    browser = chromium(binary, driver, width)
    try:
        browser.get(html.resolve().as_uri())
        height = int(browser.execute_script("return document.documentElement.scrollHeight"))
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        out.parent.mkdir(parents=True, exist_ok=True)
        if not browser.save_screenshot(str(out)):
            raise RuntimeError(f"Chromium could not save {out}")
        for entry in browser.get_log("browser"):
            if entry["level"] == "SEVERE":
                print(f"console: {entry['message']}", file=sys.stderr)
        return width, height
    finally:
        browser.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    try:
        html = write_html_report(args.folder)
    except LatentDistillError as error:
        sys.exit(f"error: {error}")
    width, height = screenshot(html, args.out, args.width, args.chromium, args.chromedriver)
    print(f"{html} -> {args.out} ({width} x {height})")


if __name__ == "__main__":
    main()
