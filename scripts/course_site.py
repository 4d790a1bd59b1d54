"""The course site: offline HTML of every lecture and student assignment, an index page, and a
check of the result in a real browser.

Used by ``scripts/build_course.py`` (``./course.sh build``) and by ``tests/test_site.py``.
(Named ``course_site`` because ``site`` is a module of Python's standard library.)

Layout of ``build/html/``::

    index.html                      for students: the lessons in order (Lesson N, Lecture N, Assignment N),
                                    how to work on them; no solutions, build table or failures
    index.png                       screenshot of the index in headless Chromium (when installed)
    NN_name.html                    executed lecture (figures embedded as data URIs)
    assignments/aNN_name.html       the blank student version, rendered
    assignments/aNN_name/...        the student version itself (.ipynb and any data files)
    mathjax/                        a local MathJax 2 (from the jupyter-server-mathjax package)

The instructors' page, ``build/instructor/index.html`` (beside the executed solutions, outside the
student site): the build table with every failure (the site's own row among them: its broken links
and figures are printed by the build), every table cell cut off with "..." on a lecture's page, the
executed solutions and the instructors' commands.

Every page's ``<title>`` names its lesson ("Lecture 2 · SISA: ...", "Assignment 2 · ..."), and numbers
are written one way everywhere: "Lesson 1", "Lecture 1b", "Assignment 1" (never "01" beside "0").

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
    lecture_titles: dict = field(default_factory=dict)  # stem -> "Lecture 1b · Verification: ..."

    @property
    def label(self) -> str:
        """The lesson's number as the site writes it: "0", "1", not "00", "01"."""
        return number_label(self.number)

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


def number_label(number: str) -> str:
    """"01" -> "1", "01b" -> "1b", "00" -> "0": the one way the site writes a lesson's number."""
    m = re.fullmatch(r"0*(\d+)([a-z]?)", number)
    return (str(int(m.group(1))) + m.group(2)) if m else number


def page_title(heading: str, stem: str) -> str:
    """A page's title from its notebook's first heading, numbers written one way:
    "01b · Verification: ..." -> "Lecture 1b · Verification: ...",
    "Assignment 01 · Definitions ..." -> "Assignment 1 · Definitions ...". A heading without a number
    gets one from the file name (``aNN_name``: "Assignment N · heading"; ``NN_name``: "Lecture N · heading")."""
    heading = heading.strip()
    m = re.match(r"(?i)^assignment\s+0*(\d+)\b\s*(.*)$", heading)
    if m:
        return f"Assignment {int(m.group(1))} {m.group(2)}".strip()
    m = re.match(r"^0*(\d+)([a-z]?)\s*[·.:-]\s*(.*)$", heading)
    if m:
        return f"Lecture {int(m.group(1))}{m.group(2)} · {m.group(3)}".strip(" ·")
    sm = re.match(r"^(a?)0*(\d+)([a-z]?)_", stem)
    if sm and heading:
        kind = "Assignment" if sm.group(1) else "Lecture"
        return f"{kind} {int(sm.group(2))}{sm.group(3)} · {heading}"
    return heading or stem


def lessons(root: Path) -> list[Lesson]:
    """The lessons in order, discovered from ``notebooks/*.ipynb`` and ``solutions/*/*.ipynb``.

    The one-line summary is the lecture's title after its number (``# 02 · SISA: sharded, ...``):
    the part before the first colon is the lesson's name, the rest its summary."""
    root = Path(root)
    by_number: dict[str, Lesson] = {}
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        head, first = _first_heading(nb)
        head = re.sub(r"^\s*\d+[a-z]?\s*[·.:-]\s*", "", head) or nb.stem
        title, _, summary = head.partition(":")
        num = _number(nb.stem)
        by_number.setdefault(num, Lesson(num, title.strip(), (summary.strip() or first)))
        by_number[num].lectures.append(nb.stem)
        label = number_label(re.match(r"\d+[a-z]?", nb.stem).group(0)) if re.match(r"\d", nb.stem) else nb.stem
        by_number[num].lecture_titles[nb.stem] = f"Lecture {label} · {title.strip()}"
    for folder in sorted(p for p in (root / "solutions").iterdir() if p.is_dir()) if (root / "solutions").exists() else []:
        nbs = sorted(folder.glob("*.ipynb"))
        if not nbs:
            continue
        head, _ = _first_heading(nbs[0])
        num = _number(folder.name)
        lesson = by_number.setdefault(num, Lesson(num, folder.name, ""))
        lesson.assignments.append((folder.name, page_title(head, folder.name) if head else folder.name))
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


def export_html(nb_path: Path, out: Path, html_root: Path, title: str | None = None) -> Path:
    """Render one notebook to ``out`` (inside ``html_root``) with no external URLs. The page's
    ``<title>`` is ``title``, by default :func:`page_title` of the notebook's first heading."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    out, html_root = Path(out), Path(html_root)
    if title is None:
        title = page_title(_first_heading(Path(nb_path))[0], Path(nb_path).stem)
    up = os.path.relpath(html_root, out.parent).replace(os.sep, "/")
    prefix = "" if up == "." else up + "/"
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"course_offline.html.j2": _TEMPLATE})])
    exporter.template_file = "course_offline.html.j2"
    exporter.mathjax_url = f"{prefix}mathjax/MathJax.js?config={MATHJAX_CONFIG}"
    exporter.require_js_url = ""
    exporter.mermaid_js_url = ""
    exporter.embed_images = True

    def _title(nb, resources):  # nbconvert's lab template takes <title> from the notebook's metadata
        nb.metadata["title"] = title
        return nb, resources

    exporter.register_preprocessor(_title, enabled=True)
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


_TRUNCATED = re.compile(r"<t([dh])\b[^>]*>([^<]{0,2000}?)\.\.\.</t\1>")


def truncated_cells(page_html: str) -> list[str]:
    """Table cells cut off with "..." (pandas' ``display.max_colwidth`` in a notebook's HTML output):
    the start of each such cell's text. A settings or claims table must show every cell whole
    (``claims.settings_table`` and ``claims.Claims`` do)."""
    return [html.unescape(m.group(2)).strip()[-60:] + "..." for m in _TRUNCATED.finditer(page_html)]


def _lecture_cell(html_dir: Path, les: Lesson) -> str:
    parts = []
    for stem in les.lectures:
        name = les.lecture_titles.get(stem, stem)
        if (html_dir / f"{stem}.html").exists():
            parts.append(_a(f"{stem}.html", name))
        else:
            parts.append(f'<span class="missing">{html.escape(name)}: not available yet</span>')
    return "<br>".join(parts) or '<span class="missing">no lecture</span>'


def _assignment_cell(html_dir: Path, les: Lesson) -> str:
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
            graded.append(f'<span class="missing">{html.escape(atitle)}: not available yet</span>')
    return "<br>".join(graded) or '<span class="missing">none</span>'


def _page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
{body}
</body></html>
"""


def write_index(html_dir: Path, lesson_list: list[Lesson], rows: list[dict], *, mode: str,
                versions: dict[str, str] | None = None, title: str = "Machine unlearning: a course",
                instructor_dir: Path | None = None) -> Path:
    """Write the students' ``html_dir/index.html`` and the instructors' page
    (``instructor_dir/index.html``, by default ``html_dir/../instructor``: see
    :func:`write_instructor_index`). ``rows``: the build table (dicts with kind, notebook, status,
    seconds, mode, date), shown on the instructors' page only. The students' index links only files
    that exist (a lecture or assignment not built says "not available yet") and holds nothing for
    instructors: no solutions, no build table, no failures."""
    html_dir = Path(html_dir)
    versions = package_versions() if versions is None else versions
    esc = html.escape
    lesson_rows = [
        f"<tr><td class='num'>{esc(les.label)}</td><td><b>Lesson {esc(les.label)} · {esc(les.title)}</b><br>"
        f"<span class='summary'>{esc(les.summary)}</span></td><td>{_lecture_cell(html_dir, les)}</td>"
        f"<td>{_assignment_cell(html_dir, les)}</td></tr>" for les in lesson_list]
    vers = ", ".join(f"{k} {v}" for k, v in versions.items())
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = f"""<h1>{esc(title)}</h1>
<p class="sub">How to remove the influence of chosen training examples from a trained model.
Built {now} in <b>{esc(mode)}</b> mode. This site works offline: figures are embedded in the pages.</p>

<h2 id="lessons">Lessons</h2>
<table><thead><tr><th>#</th><th>lesson</th><th>lecture (executed)</th><th>assignment (student version)</th></tr></thead>
<tbody>
{chr(10).join(lesson_rows)}
</tbody></table>

<h2 id="run">How to work on it</h2>
<pre><code>./course.sh lab              # JupyterLab on the course: lectures in notebooks/, your work in assignments/
./course.sh check a02_sisa   # run your assignment as the grader does: which parts pass, fail, are not done</code></pre>
<p>Fill in <code>assignments/&lt;name&gt;/&lt;name&gt;.ipynb</code> (or the downloaded <code>.ipynb</code>):
every cell that says <code>YOUR CODE HERE</code>. The visible tests are part of the grading; hidden tests
try other inputs. Lectures run in FAST mode (small models on scikit-learn's digits, on a CPU); full mode
runs the sources' experiments (CIFAR-10, ResNet-18) on a GPU.</p>
<p class="summary">Packages: {esc(vers) or "not recorded"}.</p>
"""
    out = html_dir / "index.html"
    out.write_text(_page(title, body), encoding="utf-8")
    write_instructor_index(Path(instructor_dir) if instructor_dir else html_dir.parent / "instructor",
                           html_dir, lesson_list, rows, mode=mode, versions=versions, title=title)
    return out


def write_instructor_index(instructor_dir: Path, html_dir: Path, lesson_list: list[Lesson], rows: list[dict], *,
                           mode: str, versions: dict[str, str], title: str = "Machine unlearning: a course") -> Path:
    """Write ``instructor_dir/index.html``, for instructors only (never copied to the students' site):
    the build table with every failure, the problems found on the site (table cells cut off with
    "..."), the executed solutions (``instructor_dir/aNN_name.html``), the worked answers to the
    lectures' exercises, and the instructors' commands."""
    instructor_dir, html_dir = Path(instructor_dir), Path(html_dir)
    instructor_dir.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    site = os.path.relpath(html_dir, instructor_dir).replace(os.sep, "/")
    build_rows = []
    for r in rows:
        cls = "ok" if r["status"].startswith("ok") else "failed"
        build_rows.append(
            f"<tr><td>{esc(r['kind'])}</td><td><code>{esc(r['notebook'])}</code></td>"
            f"<td class='{cls}'>{esc(r['status'])}</td><td class='num'>{r['seconds']:.1f}</td>"
            f"<td>{esc(r.get('mode', ''))}</td><td>{esc(r.get('date', ''))}</td></tr>")
    n_ok = sum(r["status"].startswith("ok") for r in rows)
    problems = [f"{r['notebook']}: {r['status']}" for r in rows if not r["status"].startswith("ok")]
    for page in sorted(html_dir.glob("*.html")):
        if page.name != "index.html":
            problems += [f"{page.name}: a table cell cut off: “{c}”" for c in truncated_cells(page.read_text(encoding="utf-8"))]
    solution_rows = []
    for les in lesson_list:
        for name, atitle in les.assignments:
            page = instructor_dir / f"{name}.html"
            link = _a(f"{name}.html", f"{atitle}: executed solution") if page.exists() else \
                f'<span class="missing">{esc(atitle)}: solution not executed yet</span>'
            solution_rows.append(f"<tr><td class='num'>{esc(les.label)}</td><td>{link}</td>"
                                 f"<td><code>solutions/{esc(name)}/</code></td></tr>")
    vers = ", ".join(f"{k} {v}" for k, v in versions.items())
    prob = ("<ul>" + "".join(f"<li class='failed'>{esc(p)}</li>" for p in problems) + "</ul>") if problems \
        else "<p class='ok'>None.</p>"
    body = f"""<h1>{esc(title)}: instructors' page</h1>
<p class="sub">Not for students: this page and the executed solutions beside it hold the answers and the
hidden tests. The students' site is {_a(f"{site}/index.html", "the course index")} (<code>build/html/</code>,
the folder to publish). Written in <b>{esc(mode)}</b> mode.</p>

<h2 id="problems">Problems</h2>
{prob}

<h2 id="solutions">Executed solutions</h2>
<table><thead><tr><th>#</th><th>assignment</th><th>source</th></tr></thead><tbody>
{chr(10).join(solution_rows)}
</tbody></table>
<p>Worked answers to the lectures' exercises: <code>solutions/lecture_answers/NN_name.md</code>.</p>

<h2 id="build">Build</h2>
<p>{n_ok} of {len(rows)} steps ok.</p>
<table><thead><tr><th>kind</th><th>notebook</th><th>status</th><th>seconds</th><th>mode</th><th>date</th></tr></thead>
<tbody>
{chr(10).join(build_rows)}
</tbody></table>
<p class="summary">Packages: {esc(vers) or "not recorded"}.</p>

<h2 id="run">Commands</h2>
<pre><code>./course.sh build                         # execute every notebook, write the site and this page
./course.sh build --only 02_sisa a02_sisa # rebuild a few notebooks (the table keeps the other rows)
./course.sh grade a02_sisa SUBMISSIONS    # grade a folder of notebooks or zips (table, CSV, feedback)
./course.sh test                          # the test suite
sudo ./course.sh hub                      # a local JupyterHub for a class (docs/admin.md)</code></pre>
"""
    out = instructor_dir / "index.html"
    out.write_text(_page(f"{title}: instructors' page", body), encoding="utf-8")
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
