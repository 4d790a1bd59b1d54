"""The course site (build/html): built from a tiny synthetic course, checked in headless Chromium
with the network off; nothing for instructors on the students' index (their page is
build/instructor/index.html); numbers and titles written one way; settings and claims tables whole;
and the clean build log (papermill parameters, no kernel warnings)."""
import importlib.util
import json
import logging
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


course_site = _load("course_site")
build_course = _load("build_course")

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


LONG_SETTING = ("digits ship with scikit-learn and train in seconds on a CPU, so a whole lecture runs in a "
                "minute; full mode uses CIFAR-10 as the source does (its section 4.1)")
LONG_CLAIM = ("the unlearned model is as close to Retrain on the forget set as on the test set, over every seed "
              "and every forget set we tried in this lesson")

# a lecture's settings table and claims table, as lectures write them (course_lib.claims)
TABLES_CELL = f"""from IPython.display import display
from course_lib import claims
display(claims.settings_table([("data set", "digits", "CIFAR-10", "CIFAR-10 (Sec. 4.1)", {LONG_SETTING!r})]))
table = claims.Claims("01_toys")
table.not_testable(claims.Claim({LONG_CLAIM!r}, "000 Sec. 5", "the statement", "UA gap"), "needs the full data")
display(table)"""


def _lecture(title: str, figure: bool) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": KERNELSPEC})
    cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\nA first sentence. A second one with maths: $\\alpha^2 + "
                                      "\\sum_i x_i$ and\n\n$$\\mathcal{L}(\\theta) = \\frac{1}{n}\\sum_i \\ell_i$$\n\n"
                                      "[Jump to the results](#Results)."),
        nbformat.v4.new_code_cell("FAST = None\nSEED = 0", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_markdown_cell("## Results"),
    ]
    if figure:
        cells.append(nbformat.v4.new_code_cell(
            "%matplotlib inline\nimport matplotlib.pyplot as plt\n"
            "from IPython.display import display\nfig, ax = plt.subplots(figsize=(3, 2))\n"
            "ax.plot([0, 1, 2], [SEED, 1, 4])\ndisplay(fig)\nplt.close(fig)\nprint('FAST is', FAST)"))
        cells.append(nbformat.v4.new_code_cell(TABLES_CELL))
    else:
        cells.append(nbformat.v4.new_code_cell("print('FAST is', FAST, 'SEED is', SEED)"))
    nb.cells = cells
    return nb


def _assignment(n: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": KERNELSPEC})
    nb.cells = [nbformat.v4.new_markdown_cell(f"# Assignment {n} · Toy things (1 point)\n\n## Part A (1 point)"),
                nbformat.v4.new_code_cell("def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()")]
    return nb


FAILED = "FAILED: timeout after 5 s in cell 2 (def f(x):)"


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory):
    """A course of two lessons (one with a figure, a settings and a claims table), executed and rendered
    as `./course.sh build` does; one solution executed (rendered into build/instructor) and one failed.
    The first assignment's heading writes its number "01", as a hand-written heading may."""
    root = tmp_path_factory.mktemp("course")
    (root / "notebooks").mkdir()
    nbformat.write(_lecture("01 · Toys: a tiny lesson with a figure", True), root / "notebooks" / "01_toys.ipynb")
    nbformat.write(_lecture("02 · More toys: a second lesson", False), root / "notebooks" / "02_more.ipynb")
    for n, name in (("01", "a01_toys"), ("2", "a02_more")):
        for top in ("solutions", "assignments"):
            (root / top / name).mkdir(parents=True)
            nbformat.write(_assignment(n), root / top / name / f"{name}.ipynb")
    build = root / "build"
    rows, logs = [], []
    for kind, path in build_course.notebooks(root):
        if kind != "lecture":
            continue
        out = build_course.execute(kind, path, True, build / "notebooks")
        build_course.to_html(out, build / "html" / f"{out.stem}.html", build / "html")
        rows.append({"kind": kind, "notebook": f"notebooks/{path.name}", "status": "ok", "seconds": 1.0,
                     "mode": "FAST", "date": "2025-01-01"})
    solution = root / "solutions" / "a01_toys" / "a01_toys.ipynb"
    build_course.to_html(solution, build / "instructor" / "a01_toys.html", build / "instructor")
    rows += [{"kind": "solution", "notebook": "solutions/a01_toys/a01_toys.ipynb", "status": "ok", "seconds": 1.0,
              "mode": "FAST", "date": "2025-01-01"},
             {"kind": "solution", "notebook": "solutions/a02_more/a02_more.ipynb", "status": FAILED, "seconds": 5.0,
              "mode": "FAST", "date": "2025-01-01"}]
    site_row = build_course.build_site(root, build, rows, "FAST", browser=False)
    return root, build / "html", site_row


def test_lessons_are_discovered_in_order_with_summaries(tiny_site):
    """Lessons come from notebooks/ and solutions/, paired by number, with the title's summary."""
    root, _, _ = tiny_site
    les = course_site.lessons(root)
    assert [(x.number, x.title, x.lecture) for x in les] == [("01", "Toys", "01_toys"), ("02", "More toys", "02_more")]
    assert les[0].summary == "a tiny lesson with a figure"
    assert les[0].assignments == [("a01_toys", "Assignment 1 · Toy things (1 point)")]   # "01" written "1"
    assert les[1].assignments == [("a02_more", "Assignment 2 · Toy things (1 point)")]
    assert [x.label for x in les] == ["1", "2"]
    assert les[0].lecture_titles == {"01_toys": "Lecture 1 · Toys"}


def test_index_links_lectures_assignments_and_the_build_table(tiny_site):
    """The index links every executed lecture, each assignment's page and .ipynb, and shows the table."""
    _, html_dir, site_row = tiny_site
    index = (html_dir / "index.html").read_text()
    hrefs = re.findall(r'href="([^"]+)"', index)
    for h in ("01_toys.html", "02_more.html", "assignments/a01_toys.html", "assignments/a01_toys/a01_toys.ipynb",
              "assignments/a02_more.html", "assignments/a02_more/a02_more.ipynb"):
        assert h in hrefs, h
        assert (html_dir / h).exists(), h
    assert index.index("Toys") < index.index("More toys")
    for text in ("FAST", "torch", "nbconvert", "./course.sh lab", "./course.sh check"):
        assert text in index, text
    instructor = (html_dir.parent / "instructor" / "index.html").read_text()
    for text in ("notebooks/01_toys.ipynb", "2025-01-01", "./course.sh build", "./course.sh grade"):
        assert text in instructor, text
    assert site_row["status"] == "ok", site_row["problems"]


def test_students_index_holds_nothing_for_instructors(tiny_site):
    """No solutions, no failures, no build table, no instructors' commands on the students' index; they
    are on the instructors' page (build/instructor/index.html, outside the site), which links the
    executed solutions, lists the failure and links back to the students' index."""
    _, html_dir, _ = tiny_site
    index = (html_dir / "index.html").read_text()
    for text in ("solution", "FAILED", "timeout", "instructor", 'id="build"', "./course.sh grade", "./course.sh build",
                 "solutions/", "seconds"):
        assert text not in index, text
    instructor_dir = html_dir.parent / "instructor"
    page = (instructor_dir / "index.html").read_text()
    assert FAILED in page and "solutions/a02_more/a02_more.ipynb" in page
    hrefs = re.findall(r'href="([^"]+)"', page)
    assert "a01_toys.html" in hrefs and (instructor_dir / "a01_toys.html").exists()
    assert "../html/index.html" in hrefs and (instructor_dir / "../html/index.html").exists()
    assert "Assignment 2 · Toy things (1 point): solution not executed yet" in page
    assert not list(html_dir.rglob("*instructor*"))


def test_numbers_and_titles_are_written_one_way(tiny_site):
    """"Lesson 1", "Lecture 1", "Assignment 1" everywhere on the index: never "01" beside "1"."""
    _, html_dir, _ = tiny_site
    index = (html_dir / "index.html").read_text()
    for text in ("Lesson 1 · Toys", "Lesson 2 · More toys", ">Lecture 1 · Toys</a>", ">Lecture 2 · More toys</a>",
                 ">Assignment 1 · Toy things (1 point)</a>", ">Assignment 2 · Toy things (1 point)</a>",
                 "<td class='num'>1</td>", "<td class='num'>2</td>"):
        assert text in index, text
    table = index[index.index('id="lessons"'):index.index('id="run"')]
    assert not re.search(r"\b0[12]\b", re.sub(r'href="[^"]*"', "", table)), "a number written with a leading 0"
    assert course_site.number_label("00") == "0" and course_site.number_label("01b") == "1b"
    assert course_site.page_title("05b · SalUn's controls: more", "05b_salun_controls") == "Lecture 5b · SalUn's controls: more"
    assert course_site.page_title("Assignment 01 · Definitions (10 points)", "a01_definitions") == \
        "Assignment 1 · Definitions (10 points)"
    assert course_site.page_title("Toys", "a03_toys") == "Assignment 3 · Toys"


def test_page_titles_name_the_lesson(tiny_site):
    """Every page's <title> names its lesson (not the notebook's file name)."""
    _, html_dir, _ = tiny_site

    def title(page):
        return re.search(r"<title>(.*?)</title>", page.read_text(), re.S).group(1).strip()

    assert title(html_dir / "01_toys.html") == "Lecture 1 · Toys: a tiny lesson with a figure"
    assert title(html_dir / "02_more.html") == "Lecture 2 · More toys: a second lesson"
    assert title(html_dir / "assignments" / "a01_toys.html") == "Assignment 1 · Toy things (1 point)"
    assert title(html_dir / "assignments" / "a02_more.html") == "Assignment 2 · Toy things (1 point)"
    assert title(html_dir / "index.html") == "Machine unlearning: a course"


def test_settings_and_claims_tables_are_whole(tiny_site):
    """A lecture's settings table (claims.settings_table) and claims table (claims.Claims) reach the
    page with every cell whole: no "..." of pandas' column-width limit."""
    _, html_dir, _ = tiny_site
    page = (html_dir / "01_toys.html").read_text()
    import html as _html

    text = _html.unescape(page)
    assert LONG_SETTING in text and LONG_CLAIM in text
    assert course_site.truncated_cells(page) == []
    assert "cut off" not in (html_dir.parent / "instructor" / "index.html").read_text()


def test_a_table_cut_off_by_pandas_is_reported_on_the_instructors_page(tmp_path):
    """The check is not blind: a plain DataFrame with a long text cell (pandas cuts it at 50 characters)
    is found in a page and listed on the instructors' page, never on the students' index."""
    import pandas as pd

    cut = pd.DataFrame({"why": [LONG_SETTING]})._repr_html_()
    found = course_site.truncated_cells(cut)
    assert len(found) == 1 and found[0].endswith("...") and LONG_SETTING.startswith(found[0][:-3]), found
    whole = pd.DataFrame({"why": ["short"]})._repr_html_()
    assert course_site.truncated_cells(whole) == []
    html_dir = tmp_path / "html"
    html_dir.mkdir()
    (html_dir / "03_cut.html").write_text(f"<html><body>{cut}</body></html>")
    course_site.write_index(html_dir, [], [], mode="FAST", versions={})
    assert "03_cut.html: a table cell cut off" in (tmp_path / "instructor" / "index.html").read_text()
    assert "cut off" not in (html_dir / "index.html").read_text()


def test_pages_load_nothing_from_the_network(tiny_site):
    """No page has a script, style sheet or image from an http(s) URL; figures are data URIs."""
    _, html_dir, _ = tiny_site
    pages = sorted(html_dir.rglob("*.html"))
    pages = [p for p in pages if "mathjax" not in p.parts]
    assert len(pages) == 5  # index, two lectures, two assignments
    for page in pages:
        text = page.read_text()
        loads = re.findall(r'<(?:script|img|link|iframe)\b[^>]*\b(?:src|href)="([^"]*)"', text)
        assert not [u for u in loads if re.match(r"(https?:)?//", u)], (page.name, loads)
    lecture = (html_dir / "01_toys.html").read_text()
    assert re.search(r'<img[^>]+src="data:image/png;base64,', lecture)
    assert 'src="mathjax/MathJax.js?config=' in lecture
    assert 'src="../mathjax/MathJax.js?config=' in (html_dir / "assignments" / "a01_toys.html").read_text()


def test_solutions_are_not_on_the_site(tiny_site):
    """The student site never contains the instructors' solution notebooks."""
    root, html_dir, _ = tiny_site
    assert not list(html_dir.rglob("*solution*"))
    assert not (root / "build" / "html" / "a01_toys.html").exists()


_NO_BROWSER = course_site.browser_unavailable()


@pytest.mark.skipif(_NO_BROWSER is not None, reason=f"browser check: {_NO_BROWSER}")
def test_site_in_headless_chromium_offline(tiny_site):
    """Chromium, network off, opens every page from disk: every link resolves, every figure loads,
    the maths is typeset, no request leaves file://; the index's screenshot is kept."""
    _, html_dir, _ = tiny_site
    shot = html_dir / "index.png"
    rep = course_site.check_site(html_dir, screenshot=shot)
    assert rep.problems == []
    assert sorted(rep.pages) == ["01_toys.html", "02_more.html", "assignments/a01_toys.html",
                                 "assignments/a02_more.html", "index.html"]
    assert rep.images >= 1 and rep.links >= 6
    assert rep.formulas >= 4  # two formulas in each lecture, typeset by the local MathJax
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(_NO_BROWSER is not None, reason=f"browser check: {_NO_BROWSER}")
def test_browser_check_reports_broken_links_external_loads_and_missing_figures(tmp_path):
    """The checker is not blind: a broken link, a missing anchor, a figure that does not load and a
    request to the internet are each reported."""
    (tmp_path / "index.html").write_text(
        '<html><body><a href="nowhere.html">x</a> <a href="#nothing">y</a> <a href="page.html">z</a>'
        '<img src="missing.png"></body></html>')
    (tmp_path / "page.html").write_text('<html><body><img src="https://example.org/fig.png"></body></html>')
    rep = course_site.check_site(tmp_path)
    text = "\n".join(rep.problems)
    assert "broken link" in text and "nowhere.html" in text
    assert "missing anchor #nothing" in text
    assert "image did not load" in text and "missing.png" in text
    assert "request left file://: https://example.org/fig.png" in text
    assert sorted(rep.pages) == ["index.html", "page.html"]


def test_build_log_has_no_kernel_or_parameter_warnings(tmp_path, capfd, caplog):
    """Executing a lecture as the build does prints neither ipykernel's TCP warning nor papermill's
    parameter warnings."""
    nb = tmp_path / "03_quiet.ipynb"
    nbformat.write(_lecture("03 · Quiet: nothing to say", False), nb)
    with caplog.at_level(logging.WARNING):
        res = build_course.run_one("lecture", nb, True, tmp_path / "out")
    assert res.ok, res.status
    out = res.output
    err = capfd.readouterr()
    log = err.out + err.err + caplog.text + res.log    # res.log: what the notebook's own process printed
    assert "without encryption" not in log and "Unable to parse" not in log and "unknown parameter" not in log, log
    text = json.dumps(nbformat.read(out, as_version=4).cells[-1].outputs)
    assert "FAST is True SEED is 0" in text


@pytest.mark.parametrize("lecture", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_papermill_finds_fast_and_seed_in_every_lecture(lecture, caplog):
    """`papermill --help-notebook` lists FAST and SEED (one seed) or SEEDS (a lecture judged over seeds only)
    for every lecture, with no parse warning."""
    import papermill as pm

    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = pm.inspect_notebook(str(ROOT / "notebooks" / lecture))
    assert "FAST" in params and ("SEED" in params or "SEEDS" in params), f"{lecture}: papermill sees only {sorted(params)}"
    assert params["FAST"]["default"] == "None"
    assert "Unable to parse" not in caplog.text, caplog.text


def test_a_lesson_of_two_lectures_lists_and_links_both(tmp_path):
    """A lesson split into NN_name and NNb_name (two classes) is one lesson with two lectures, in order,
    and the index links each built one and marks the other not built."""
    import json as _json

    (tmp_path / "notebooks").mkdir()
    for stem, title in (("01_defs", "# 01 · Defs: exact and approximate"), ("01b_audit", "# 01b · Audit: verification")):
        nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": [title]}], "metadata": {},
              "nbformat": 4, "nbformat_minor": 5}
        (tmp_path / "notebooks" / f"{stem}.ipynb").write_text(_json.dumps(nb))
    les = course_site.lessons(tmp_path)
    assert [(x.number, x.title, x.lectures) for x in les] == [("01", "Defs", ["01_defs", "01b_audit"])]
    html_dir = tmp_path / "html"
    html_dir.mkdir()
    (html_dir / "01_defs.html").write_text("<html></html>")
    index = course_site.write_index(html_dir, les, [], mode="FAST", versions={}).read_text()
    assert 'href="01_defs.html"' in index and "Lecture 1b · Audit: not available yet" in index
