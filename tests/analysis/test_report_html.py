"""report.html is real HTML rendered from the report's Markdown: tables, headings, captioned embedded figures."""

from __future__ import annotations

import base64
import importlib.util
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hf_token_merge import TokenMergeConfig
from hf_token_merge.analysis import analyze_redundancy
from hf_token_merge.analysis.report_html import FIGURE_CAPTIONS, figure_caption, render_html
from tests.models import build_llama, sample_ids

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]


class Page(HTMLParser):
    """The tags of a page, the text of its headings, cells and captions, and its image sources."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[str] = []
        self.text: dict[str, list[str]] = {}
        self.images: list[dict[str, str]] = []
        self._open: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag in ("h1", "h2", "h3", "th", "td", "figcaption"):
            self._open.append(tag)
            self.text.setdefault(tag, []).append("")

    def handle_endtag(self, tag):
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data):
        for tag in self._open:
            self.text[tag][-1] += data


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    bundle = build_llama(n_speech=48, n_centers=8, layers=2)
    folder = tmp_path_factory.mktemp("analysis")
    report = analyze_redundancy(
        bundle.model,
        TokenMergeConfig(preset="llasa", n_clusters=8),
        str(folder),
        tokenizer=bundle.tokenizer,
        inputs=list(sample_ids(bundle, shape=(2, 16))),
        maps=("tsne",),
        map_rows=48,
        show_progress=False,
    )
    return report, folder


def test_the_analysis_page_has_tables_headings_and_captioned_figures(analysis):
    report, folder = analysis
    text = (folder / "report.html").read_text()
    page = Page(text)
    assert "pre" not in page.tags and "|---" not in text  # no Markdown left raw
    assert page.tags.count("table") == 3  # measures, threshold curve, layers
    assert page.text["h1"] == ["Redundancy report"]
    assert page.text["h2"] == [
        "How much could merge (48 rows)",
        "Adjacent speech-token similarity by layer",
        "Figures",
    ]
    assert page.text["th"][:2] == ["measure", "value"] and "effective rank" in page.text["td"]
    names = list(report.figures)
    assert names == ["pairwise", "nearest_neighbour", "threshold_curve", "pca_spectrum", "tsne",
                     "layer_adjacent_cosine", "layer_cka"]  # fmt: skip
    assert page.tags.count("figure") == page.tags.count("figcaption") == len(names)
    expected = [f"Figure {n}. {figure_caption(name, 'cosine')}" for n, name in enumerate(names, 1)]
    assert page.text["figcaption"] == expected
    assert (
        expected[1]
        == "Figure 2. How close each row's nearest other row is: the cosine similarity to its nearest neighbour."
    )
    assert not any("_" in caption for caption in page.text["figcaption"])  # words, not snake_case names
    for image, name in zip(page.images, names, strict=True):
        assert image["alt"] == figure_caption(name)
        assert image["src"].startswith("data:image/png;base64,")  # embedded: the page survives being copied alone
        data = base64.b64decode(image["src"].split(",", 1)[1])
        assert data[:8] == PNG_MAGIC and data == Path(report.figures[name]).read_bytes()
    # the Markdown carries the same captions under the images
    markdown = (folder / "report.md").read_text()
    assert f"![{figure_caption('pairwise')}](pairwise.png)\n*Figure 1. {figure_caption('pairwise')}*" in markdown


def test_render_html_escapes_text_and_keeps_missing_images_relative(tmp_path):
    markdown = (
        "# Title <script>alert(1)</script>\n\n| metric | before |\n|---|---:|\n| wer | 0.1 |\n\n"
        "![A sentence.](missing.png)\n*Figure 1. A sentence.*\n\nText with `code`.\n"
    )
    page = Page(render_html(markdown, "t & t", base_dir=tmp_path))
    assert "script" not in page.tags and page.text["h1"] == ["Title <script>alert(1)</script>"]
    assert page.text["th"] == ["metric", "before"] and page.text["td"] == ["wer", "0.1"]
    assert page.images == [{"src": "missing.png", "alt": "A sentence."}]
    assert page.text["figcaption"] == ["Figure 1. A sentence."] and "code" in page.tags
    assert figure_caption("sweep_wer") == "Sweep wer." and set(FIGURE_CAPTIONS) >= {"pairwise", "umap", "layer_cka"}


def test_chromium_renders_the_page(analysis):
    spec = importlib.util.spec_from_file_location("report_screenshot", REPO / "benchmarks" / "report_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    browser = module.find_browser()
    if browser is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium-headless-shell); the HTML is checked without it")
    report, folder = analysis
    seen = module.browser_check(folder / "report.html", browser)
    assert seen["tables"] == 3 and seen["pre"] == 0 and seen["headings"][0] == "Redundancy report"
    assert seen["images"] == seen["decoded"] == len(report.figures)  # every embedded PNG decodes in the browser
    assert seen["captions"][0] == f"Figure 1. {figure_caption('pairwise')}"
    assert seen["width"] <= module.WIDTH  # no table or figure wider than the window
    assert seen["height"] > 2000  # the figures are laid out, not collapsed
