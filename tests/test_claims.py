"""The claims helper: verdicts from the per-seed effects by the stated rule (checked against hand-computed
means and standard errors), the JSON bundle an executed notebook carries, and the re-check of records."""
import json
import math

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from course_lib import claims
from course_lib.claims import Claim, Claims

C = Claim("sparsity helps FT", "002 Sec. 5.1, Fig. 4", "pruning first brings FT closer to Retrain",
          "gap(FT dense) - gap(FT 95% sparse), points", margin=1.0)


def test_effect_and_standard_error_are_the_mean_and_sem_of_the_seeds():
    """[1, 2, 3]: effect 2, se = 1 / sqrt(3); margin 1 -> reproduced (2 > 1 and 2 > 1.155)."""
    rec = Claims("06_sparsity").add(C, [1.0, 2.0, 3.0], seeds=[10, 11, 12])
    assert rec["effect"] == 2.0 and rec["se"] == pytest.approx(1 / math.sqrt(3))
    assert rec["seeds"] == 3 and rec["seed_ids"] == [10, 11, 12] and rec["verdict"] == "reproduced"


@pytest.mark.parametrize("effects, margin, verdict", [
    ([2.0, 2.1, 1.9], 2.5, "not reproduced"),      # steady, but under the margin
    ([6.0, -4.0, 5.0], 1.0, "not reproduced"),     # mean 2.33 over the margin, se 3.18: within the noise
    ([-3.0, -3.1, -2.9], 1.0, "opposite"),
    ([-0.5, 0.4, 0.1], 0.0, "not reproduced"),
    ([0.3, 0.31, 0.29, 0.3, 0.3], 0.0, "reproduced"),   # margin 0: only the noise decides
])
def test_verdicts_follow_the_default_rule(effects, margin, verdict):
    c = Claim("x", "000 Sec. 1", "s", "m", margin=margin)
    assert Claims("00").add(c, effects)["verdict"] == verdict


def test_fewer_than_three_seeds_or_bad_claims_are_refused():
    with pytest.raises(ValueError, match="at least 3 seeds"):
        Claims("01").add(C, [1.0, 2.0])
    with pytest.raises(ValueError, match="margin"):
        Claim("x", "s", "t", "m", margin=-1)
    with pytest.raises(ValueError, match="source"):
        Claim("x", "", "t", "m")
    t = Claims("01")
    t.add(C, [1, 2, 3])
    with pytest.raises(ValueError, match="already"):
        t.add(C, [1, 2, 3])


def test_a_claim_with_its_own_rule_names_it_and_the_recheck_accepts_it():
    c = Claim("at least as good", "003 Table 2", "DEL matches SalLoc", "gap difference", margin=0.5,
              rule="effect > -margin (non-inferiority)",
              decide=lambda e, se, m: "reproduced" if e - 2 * se > -m else "not reproduced")
    rec = Claims("07").add(c, [0.0, 0.1, -0.1])
    assert rec["verdict"] == "reproduced" and rec["rule"].startswith("effect > -margin")
    assert claims.check([rec]) == []


def test_not_testable_has_no_effect_and_a_reason():
    t = Claims("03_legonet")
    rec = t.not_testable(C, "needs ImageNet-scale data")
    assert rec["effect"] is None and rec["verdict"] == "not testable here"
    assert "not testable here: needs ImageNet" in t.synthesis()
    with pytest.raises(ValueError, match="why"):
        t.not_testable(Claim("y", "s", "t", "m"), " ")


def test_recheck_flags_a_verdict_that_disagrees_with_its_numbers():
    rec = Claims("05").add(C, [1.0, 2.0, 3.0])
    bad = dict(rec, verdict="opposite")
    assert claims.check([rec]) == []
    assert "disagrees" in claims.check([bad])[0]
    assert "missing fields" in claims.check([{"claim": "z"}])[0]
    assert "< 3" in claims.check([dict(rec, seeds=2)])[0]


def test_synthesis_counts_and_quotes_the_numbers():
    t = Claims("06")
    t.add(C, [1.0, 2.0, 3.0])
    t.add(Claim("b", "002 Table 3", "s", "m", margin=5.0), [1.0, 1.5, 2.0])
    text = t.synthesis()
    assert text.startswith("Of 2 claims, 1 reproduced, 1 did not, 0 came out the opposite way")
    assert "effect +1.50 ± 0.29 (se) over 3 seeds against a margin of 5: not reproduced" in text


def test_an_executed_notebook_carries_the_bundle_and_it_reads_back(tmp_path):
    """Displaying the table in a kernel writes HTML and the JSON bundle (mimetype
    application/vnd.unlearning-course.claims+json); claims.read returns the records, check finds nothing."""
    from course_lib import nbrun

    code = ("from course_lib.claims import Claim, Claims\n"
            "t = Claims('99_toy')\n"
            "t.add(Claim('a', '002 Sec. 5', 'st', 'm', margin=0.5), [1.0, 1.2, 0.8])\n"
            "t.not_testable(Claim('b', '001 Fig. 2', 'st', 'm'), 'needs a GPU')\n"
            "t")
    nb = new_notebook(cells=[new_code_cell(code)])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "toy.ipynb")
    res = nbrun.execute(tmp_path / "toy.ipynb", tmp_path / "out.ipynb", cell_timeout_s=120)
    assert res.ok, res.error
    out = json.loads((tmp_path / "out.ipynb").read_text())["cells"][0]["outputs"]
    data = next(o["data"] for o in out if claims.MIMETYPE in o.get("data", {}))
    assert "text/html" in data and "reproduced" in "".join(data["text/html"])
    recs = claims.read(tmp_path / "out.ipynb")
    assert [r["claim"] for r in recs] == ["a", "b"] and set(claims.FIELDS) <= set(recs[0])
    assert recs[0]["lecture"] == "99_toy" and recs[0]["verdict"] == "reproduced" and recs[1]["effect"] is None
    assert claims.check(recs) == []


def test_settings_table_shows_whole_cells_in_one_shape():
    sty = claims.settings_table([("epochs", "20", "182", "002 App. C.2", "a CPU budget")])
    html = sty.to_html()
    assert "182" in html and "why ours differs" in html and "..." not in html
    with pytest.raises(ValueError, match="5 entries"):
        claims.settings_table([("epochs", "20")])
