"""The course site: offline HTML of every lecture and student assignment, an index page, and a
check of the result in a real browser.

Used by ``scripts/build_course.py`` (``./course.sh build``) and by ``tests/test_site.py``.
(Named ``course_site`` because ``site`` is a module of Python's standard library.)

Layout of ``build/html/``::

    index.html                      the lessons in order, the build table, how to run the course
    index.png                       screenshot of the index in headless Chromium (when installed)
    NN_name.html                    executed lecture (figures embedded as data URIs)
    assignments/aNN_name.html       the blank student version, rendered
    assignments/aNN_name/...        the student version itself (.ipynb and any data files)
    mathjax/                        a local MathJax 2 (from the jupyter-server-mathjax package)

Nothing on the site loads from the network: nbconvert's template is changed to drop require.js,
the widget renderer and mermaid (loaded from CDNs by default) and to load MathJax from
``mathjax/``. Widgets are not rendered: every explorer also draws a static view.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import os
import re
import shutil
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"  # the configuration jupyter-server-mathjax ships
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--disable-component-update", "--disable-sync"]

# nbconvert's lab template without anything that loads from a CDN, plus a link back to the index.
_TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
{{ super() }}
<script type="text/x-mathjax-config">
  // the local MathJax (jupyter-server-mathjax) ships the STIX-Web fonts only; the fast preview
  // and the hidden MathML copy (assistive MathML) would ask for TeX fonts it does not ship
  MathJax.Hub.Config({"HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web",
                                   webFont: "STIX-Web", imageFont: null},
                      MMLorHTML: {prefer: "HTML"},
                      "fast-preview": {disabled: true}, menuSettings: {CHTMLpreview: false, assistiveMML: false}});
</script>
{%- endblock html_head_js_mathjax -%}
{%- block body_header -%}
{{ super() }}
<nav class="course-nav" style="padding: 8px 16px; font-family: sans-serif;">
  <a href="{{ resources.course_index_href }}">&larr; course index</a>
</nav>
{%- endblock body_header -%}
"""


# ------------------------------------------------------------------------------ lessons

@dataclass
class Lesson:
    """One lesson: a number, its lectures (notebook stems: one, or two for a lesson that needs two
    classes, ``NN_name`` and ``NNb_name``) and its graded assignments."""

    number: str
    title: str
    summary: str
    lectures: list = field(default_factory=list)
    assignments: list = field(default_factory=list)  # [(name, title)]

    @property
    def lecture(self) -> str | None:
        """The lesson's first lecture (``None`` if it has none)."""
        return self.lectures[0] if self.lectures else None


def _first_heading(nb_path: Path) -> tuple[str, str]:
    """(first '# ' heading of the first markdown cell, first sentence of the paragraph after it)."""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        text = "".join(cell.get("source", ""))
        lines = text.splitlines()
        head = next((ln[2:].strip() for ln in lines if ln.startswith("# ")), "")
        rest = " ".join(ln.strip() for ln in lines if not ln.startswith("#")).strip()
        first = re.split(r"(?<=[.!?])\s", rest, maxsplit=1)[0] if rest else ""
        return head, first
    return "", ""


def _number(stem: str) -> str:
    m = re.match(r"a?(\d+)", stem)
    return m.group(1) if m else stem


def lessons(root: Path) -> list[Lesson]:
    """The lessons in order, discovered from ``notebooks/*.ipynb`` and ``solutions/*/*.ipynb``.

    The one-line summary is the lecture's title after its number (``# 02 · SISA: sharded, ...``):
    the part before the first colon is the lesson's name, the rest its summary."""
    root = Path(root)
    by_number: dict[str, Lesson] = {}
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        head, first = _first_heading(nb)
        head = re.sub(r"^\s*\d+\s*[·.:-]\s*", "", head) or nb.stem
        title, _, summary = head.partition(":")
        num = _number(nb.stem)
        by_number.setdefault(num, Lesson(num, title.strip(), (summary.strip() or first)))
        by_number[num].lectures.append(nb.stem)
    for folder in sorted(p for p in (root / "solutions").iterdir() if p.is_dir()) if (root / "solutions").exists() else []:
        nbs = sorted(folder.glob("*.ipynb"))
        if not nbs:
            continue
        head, _ = _first_heading(nbs[0])
        num = _number(folder.name)
        lesson = by_number.setdefault(num, Lesson(num, folder.name, ""))
        lesson.assignments.append((folder.name, head or folder.name))
    return [by_number[k] for k in sorted(by_number, key=lambda s: (len(s), s))]


# ------------------------------------------------------------------------------ HTML pages

def _mathjax_source() -> Path:
    import jupyter_server_mathjax

    return Path(jupyter_server_mathjax.__file__).parent / "static"


def copy_mathjax(html_dir: Path) -> Path:
    """Copy MathJax 2 into ``html_dir/mathjax`` (once; the SVG output, never used, is left out)."""
    dest = Path(html_dir) / "mathjax"
    src = _mathjax_source()
    if not (dest / "MathJax.js").exists():
        shutil.copytree(src, dest, dirs_exist_ok=True, ignore=lambda d, names: ["SVG"] if Path(d).name == "output" else [])
    return dest


def export_html(nb_path: Path, out: Path, html_root: Path) -> Path:
    """Render one notebook to ``out`` (inside ``html_root``) with no external URLs."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    out, html_root = Path(out), Path(html_root)
    up = os.path.relpath(html_root, out.parent).replace(os.sep, "/")
    prefix = "" if up == "." else up + "/"
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"course_offline.html.j2": _TEMPLATE})])
    exporter.template_file = "course_offline.html.j2"
    exporter.mathjax_url = f"{prefix}mathjax/MathJax.js?config={MATHJAX_CONFIG}"
    exporter.require_js_url = ""
    exporter.mermaid_js_url = ""
    exporter.embed_images = True
    body, _ = exporter.from_filename(str(nb_path), resources={"course_index_href": f"{prefix}index.html"})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    return out


def export_release(release_dir: Path, html_root: Path) -> Path:
    """Copy a student release (``assignments/<name>/``) into the site and render its notebook."""
    release_dir, html_root = Path(release_dir), Path(html_root)
    name = release_dir.name
    dest = html_root / "assignments" / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(release_dir, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    nb = next(dest.glob("*.ipynb"))
    return export_html(nb, html_root / "assignments" / f"{name}.html", html_root)


# ------------------------------------------------------------------------------ the index

def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "numpy", "scikit-learn", "matplotlib", "ipywidgets", "papermill", "nbconvert", "nbgrader"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } .sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0 1.5em; font-size: 0.95em; }
th, td { border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1a7f37; font-weight: 600; } .failed { color: #cf222e; font-weight: 600; }
.missing { color: #888; font-style: italic; } code, pre { background: #f6f8fa; border-radius: 4px; }
pre { padding: 10px; overflow-x: auto; } code { padding: 1px 4px; } .summary { color: #444; }
"""


def _a(href: str, text: str) -> str:
    return f'<a href="{html.escape(href, quote=True)}">{html.escape(text)}</a>'


def write_index(html_dir: Path, lesson_list: list[Lesson], rows: list[dict], *, mode: str,
                versions: dict[str, str] | None = None, title: str = "Machine unlearning: a course") -> Path:
    """Write ``html_dir/index.html``. ``rows``: the build table (dicts with kind, notebook, status,
    seconds, mode, date). Links point only at files that exist; a lesson not built says so."""
    html_dir = Path(html_dir)
    versions = versions or package_versions()
    esc = html.escape
    lesson_rows = []
    for les in lesson_list:
        parts = []
        for stem in les.lectures:
            if (html_dir / f"{stem}.html").exists():
                parts.append(_a(f"{stem}.html", f"{stem} (executed)"))
            else:
                parts.append(f'<span class="missing">{esc(stem)}: not built yet</span>')
        lecture = "<br>".join(parts) or '<span class="missing">no lecture</span>'
        graded = []
        for name, atitle in les.assignments:
            page = html_dir / "assignments" / f"{name}.html"
            nbs = sorted((html_dir / "assignments" / name).glob("*.ipynb"))
            if page.exists():
                links = _a(f"assignments/{name}.html", atitle)
                if nbs:
                    links += " · " + _a(f"assignments/{name}/{nbs[0].name}", "download .ipynb")
                graded.append(links)
            else:
                graded.append(f'<span class="missing">{esc(name)}: no student version built yet</span>')
        lesson_rows.append(
            f"<tr><td class='num'>{esc(les.number)}</td><td><b>{esc(les.title)}</b><br>"
            f"<span class='summary'>{esc(les.summary)}</span></td><td>{lecture}</td>"
            f"<td>{'<br>'.join(graded) or '<span class=missing>none</span>'}</td></tr>")
    build_rows = []
    for r in rows:
        cls = "ok" if r["status"].startswith("ok") else "failed"
        build_rows.append(
            f"<tr><td>{esc(r['kind'])}</td><td><code>{esc(r['notebook'])}</code></td>"
            f"<td class='{cls}'>{esc(r['status'])}</td><td class='num'>{r['seconds']:.1f}</td>"
            f"<td>{esc(r.get('mode', ''))}</td><td>{esc(r.get('date', ''))}</td></tr>")
    n_ok = sum(r["status"].startswith("ok") for r in rows)
    vers = ", ".join(f"{k} {v}" for k, v in versions.items())
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{esc(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
<p class="sub">How to remove the influence of chosen training examples from a trained model.
Built {now} in <b>{esc(mode)}</b> mode. This site works offline: figures are embedded in the pages.</p>

<h2 id="lessons">Lessons</h2>
<table><thead><tr><th>#</th><th>lesson</th><th>lecture</th><th>assignment (student version)</th></tr></thead>
<tbody>
{chr(10).join(lesson_rows)}
</tbody></table>

<h2 id="build">Build</h2>
<p>{n_ok} of {len(rows)} steps ok. FAST: small models on scikit-learn's digits, on a CPU;
full: the sources' experiments (CIFAR-10, ResNet-18) on a GPU.</p>
<table><thead><tr><th>kind</th><th>notebook</th><th>status</th><th>seconds</th><th>mode</th><th>date</th></tr></thead>
<tbody>
{chr(10).join(build_rows)}
</tbody></table>
<p class="summary">Packages: {esc(vers)}.</p>

<h2 id="run">How to run it</h2>
<pre><code>./course.sh build            # execute every notebook, write this site (build/html/index.html)
./course.sh lab              # JupyterLab on the course (lectures in notebooks/)
./course.sh check a02_sisa   # students: run your assignment, see which parts pass
./course.sh grade a02_sisa SUBMISSIONS   # TAs: grade a folder of notebooks or zips (table, CSV, feedback)
./course.sh test             # the test suite</code></pre>
<p>Lectures run in FAST mode on a laptop (set <code>FAST = False</code> in a lecture's first cell,
or build with <code>--full</code>, on a GPU). Students fill in <code>assignments/&lt;name&gt;/&lt;name&gt;.ipynb</code>;
the visible tests are part of the grading, hidden tests try other inputs.</p>
</body></html>
"""
    out = html_dir / "index.html"
    out.write_text(page, encoding="utf-8")
    return out


# ------------------------------------------------------------------------------ browser check

def find_chromium() -> str | None:
    """Path of a Chromium binary (``COURSE_CHROMIUM`` overrides), or None."""
    env = os.environ.get("COURSE_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_unavailable() -> str | None:
    """Why the browser check cannot run here (None when it can)."""
    if find_chromium() is None:
        return "Chromium is not installed (Debian: apt-get install chromium; or set COURSE_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e '.[dev]')"
    return None


def _benign(console_text: str) -> bool:
    """Console errors that are not problems of the site: MathJax's font-loading probe (a font at
    about:blank, refused by Chromium) and "Failed to load resource", already reported with its URL
    by the request-failed handler."""
    return "about:blank" in console_text or console_text.startswith("Failed to load resource")


@dataclass
class SiteReport:
    """What a browser saw: pages opened, links followed, images, and every problem."""

    pages: list = field(default_factory=list)
    links: int = 0
    images: int = 0
    formulas: int = 0
    external_links: list = field(default_factory=list)  # http(s) links in prose: listed, never loaded
    problems: list = field(default_factory=list)
    seconds: float = 0.0


def check_site(html_dir: Path, screenshot: Path | None = None, timeout_ms: int = 60_000) -> SiteReport:
    """Open ``html_dir/index.html`` in headless Chromium with the network off and follow every
    internal link to a page. Problems: a link to a missing file or anchor, an image that did not
    load, a request to anything but ``file:``/``data:``/``about:`` (blocked), a JavaScript error,
    a MathJax error. Optionally saves a screenshot of the index."""
    import time

    from playwright.sync_api import sync_playwright

    t0 = time.perf_counter()
    html_dir = Path(html_dir).resolve()
    report = SiteReport()
    start = (html_dir / "index.html").as_uri()
    todo, seen = [start], set()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), headless=True, args=CHROMIUM_FLAGS)
        context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})

        def route(r):
            report.problems.append(f"request left file://: {r.request.url}")
            r.abort()

        context.route(re.compile(r"^(https?|wss?|ftp)://"), route)
        while todo:
            url = todo.pop(0)
            if url in seen:
                continue
            seen.add(url)
            page = context.new_page()
            where = urllib.parse.unquote(url[len(html_dir.as_uri()) + 1:])
            page.on("pageerror", lambda e, w=where: report.problems.append(f"{w}: JavaScript error: {e}"))
            page.on("console", lambda m, w=where: m.type == "error" and not _benign(m.text)
                    and report.problems.append(f"{w}: console error: {m.text}"))
            page.on("requestfailed", lambda r, w=where: not r.url.startswith("about:") and report.problems.append(
                f"{w}: request failed: {r.url[:120]} ({r.failure})"))
            page.goto(url, wait_until="load", timeout=timeout_ms)
            page.wait_for_function(
                "() => !window.MathJax || !MathJax.Hub || (MathJax.Hub.queue.pending === 0 && MathJax.Hub.queue.running === 0)",
                timeout=timeout_ms)
            report.pages.append(where)
            report.formulas += page.locator(".MathJax, .MathJax_Display").count()
            if page.locator(".MathJax_Error, .mjx-error, merror").count():
                report.problems.append(f"{where}: MathJax could not typeset a formula")
            for src, ok in page.eval_on_selector_all(
                    "img", "els => els.map(e => [e.currentSrc || e.src, e.complete && e.naturalWidth > 0])"):
                report.images += 1
                if not ok:
                    report.problems.append(f"{where}: image did not load: {src[:120]}")
            ids = set(page.eval_on_selector_all("[id], a[name]", "els => els.map(e => e.id || e.name)"))
            for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
                report.links += 1
                parsed = urllib.parse.urlsplit(href)
                if parsed.scheme in ("http", "https", "mailto"):
                    report.external_links.append(href)
                    continue
                if parsed.scheme != "file":
                    report.problems.append(f"{where}: link of unknown kind: {href}")
                    continue
                target = Path(urllib.parse.unquote(parsed.path))
                here = urllib.parse.urlsplit(url)
                if parsed.path == here.path:
                    if parsed.fragment and not {parsed.fragment, urllib.parse.unquote(parsed.fragment)} & ids:
                        report.problems.append(f"{where}: link to a missing anchor #{parsed.fragment}")
                    continue
                if not target.exists():
                    report.problems.append(f"{where}: broken link {href}")
                elif html_dir not in target.resolve().parents:
                    report.problems.append(f"{where}: link outside the site: {href}")
                elif target.suffix == ".html":
                    todo.append(urllib.parse.urlunsplit(parsed._replace(fragment="")))
            if screenshot is not None and url == start:
                page.screenshot(path=str(screenshot), full_page=True)
            page.close()
        browser.close()
    report.seconds = time.perf_counter() - t0
    return report
