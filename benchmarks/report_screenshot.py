"""Open the built-in job's report.html in headless Chromium: check the page, and take its screenshot (dev-only).

    apt-get install -y chromium-headless-shell        # or chromium; Debian/Ubuntu packages
    python benchmarks/report_screenshot.py --output-dir outputs/report-screenshot \
        --screenshot model_cards/reference-speech-llm-merged/report_html.png

Runs `hf-token-merge run` (the reference speech-LLM: analysis, merge, before/after evaluation) into --output-dir,
unless --report names an existing page, then loads the page in Chromium and prints what the browser saw: tables,
figures decoded, captions, page size. With --screenshot it writes a PNG of the page (palette-quantised to stay
small). Exits 1 when the browser finds no table, an image that does not decode, or a page wider than the window.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "headless_shell")
WIDTH = 1100

# Appended to a copy of the page: once everything has loaded, the page writes what the browser rendered into an
# attribute that `--dump-dom` prints.
CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.setAttribute("data-check", JSON.stringify({
    tables: document.querySelectorAll("table").length,
    headings: [...document.querySelectorAll("h1, h2")].map((h) => h.textContent),
    images: images.length,
    decoded: images.filter((i) => i.complete && i.naturalWidth > 0).length,
    captions: [...document.querySelectorAll("figcaption")].map((f) => f.textContent),
    pre: document.querySelectorAll("pre").length,
    width: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight,
  }));
});
</script>"""


def find_browser() -> str | None:
    """The path of a Chromium-family browser on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(browser: str, *arguments: str) -> str:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def browser_check(page: str | Path, browser: str, width: int = WIDTH) -> dict:
    """What Chromium renders of `page`: tables, headings, images (and how many decoded), captions, size.

    Args:
        page: The HTML file.
        browser: The browser executable (see `find_browser`).
        width: The window width in CSS pixels.

    Returns:
        The numbers `CHECK_SCRIPT` collects.
    """
    text = Path(page).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="report_check_") as folder:
        copy = Path(folder) / "page.html"
        copy.write_text(text.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
        dom = _run(browser, f"--window-size={width},900", "--virtual-time-budget=10000", "--dump-dom", copy.as_uri())
    found = re.search(r'data-check="([^"]*)"', dom)
    if found is None:
        raise RuntimeError("The page did not finish loading in the browser (no data-check attribute in its DOM).")
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: str | Path, target: str | Path, browser: str, height: int, width: int = WIDTH) -> int:
    """Write a PNG of the top `height` pixels of `page`, palette-quantised; returns its size in bytes."""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="report_shot_") as folder:
        raw = Path(folder) / "raw.png"
        _run(browser, f"--window-size={width},{height}", f"--screenshot={raw}", Path(page).resolve().as_uri())
        with Image.open(raw) as image:
            image.convert("RGB").quantize(colors=128).save(target, optimize=True)
    return Path(target).stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/report-screenshot", help="where the job writes its report")
    parser.add_argument("--report", help="an existing report.html to check instead of running the job")
    parser.add_argument("--limit", type=int, help="evaluate only the first N test utterances (default: all)")
    parser.add_argument("--screenshot", help="write the page's screenshot here (PNG)")
    parser.add_argument("--max-height", type=int, default=5200, help="crop the screenshot to this height")
    args = parser.parse_args()
    browser = find_browser()
    if browser is None:
        raise SystemExit(f"No Chromium on PATH (looked for {', '.join(BROWSERS)}). Fix: apt-get install chromium.")
    page = Path(args.report) if args.report else None
    if page is None:
        from hf_token_merge.job import run_reference_job

        run_reference_job(args.output_dir, limit=args.limit, overwrite=True)
        page = Path(args.output_dir) / "report.html"
    seen = browser_check(page, browser)
    print(json.dumps(seen, indent=2))
    problems = []
    if seen["tables"] == 0:
        problems.append("no table")
    if seen["decoded"] != seen["images"]:
        problems.append(f"{seen['images'] - seen['decoded']} of {seen['images']} images did not decode")
    if seen["width"] > WIDTH:
        problems.append(f"the page is {seen['width']} px wide in a {WIDTH} px window")
    if args.screenshot:
        size = screenshot(page, args.screenshot, browser, min(seen["height"], args.max_height))
        print(f"screenshot: {args.screenshot} ({size:,} bytes)")
    if problems:
        print("problems: " + "; ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
