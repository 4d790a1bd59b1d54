"""Tune every approximate unlearning method once per scenario (FAST mode) and write the one table of
hyper-parameters the course uses: ``course_lib/unlearn/tuned.json``, read by ``unlearn.tuned``.

    python benchmarks/tune_methods.py [--scenarios random class ...] [--dry-run]

Protocol (write it down, keep it fixed):

* data, forget set, original and Retrain from ``course_lib.scenarios`` with the **tuning seed**
  :data:`TUNING_SEED` (100), disjoint from the seeds the lectures report (0-4), so the table is not fitted
  to the numbers the lectures judge;
* each method runs over the documented grid :data:`GRIDS` (the sources tuned learning rate and epochs
  in the same way: 002 App. C.2 "searched", 003 App. A.2 per-method grids);
* selection rule: the smallest disparity average to Retrain (mean |gap| over UA, MIA-Efficacy, RA and
  TA, 002 Sec. 5.1) among settings that do not **collapse** (RA no more than :data:`COLLAPSE_RA`
  points below Retrain's); if every setting collapses the least-bad one is kept and flagged;
* Boundary Shrink / Expanding are tuned on class-wise forgetting only (the methods are defined for it).

Full mode is not tuned here (no GPU): its rows are the sources' settings, copied from the lectures'
tables, and marked so.

**Recipe variants** (``"scenario:recipe"``, e.g. ``mislabeled:deep``, :data:`VARIANTS`): the same protocol
on ``scenarios.make(scenario, TUNING_SEED, fast=True, recipe=recipe)``, plus the localised methods of
lesson 7 (:data:`LOCALISED_GRIDS`):

* ``rft`` (Reset + Finetune on a localiser's mask): one setting shared by every localiser and budget,
  chosen by the smallest disparity average over the masks lesson 7 compares (Deepest and Shallowest with
  1 and 2 whole layers, SalLoc and DEL at those layers' opened shares), so that no localiser is favoured;
  003 App. A.2 instead tunes per strategy and budget (its grids: lr 5e-3 to 1e-2, DEL 0.015);
* ``del``: epochs, lr and the budget, by the usual rule (003 Sec. 6 reports each method at its best budget);
* ``ssd``: the selection threshold alpha (Foster et al.'s default 10 is in the grid; lambda kept at 1).

    python benchmarks/tune_methods.py --variants-only     # tune only the variants, keep every other entry

A variants-only run rewrites just the variants' rows of ``fast`` and ``fast_tuning`` (and
``about["variants"]``) in the existing table.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from course_lib import metrics, scenarios, unlearn  # noqa: E402

TUNING_SEED = 100
COLLAPSE_RA = 20.0
OUT = ROOT / "course_lib" / "unlearn" / "tuned.json"
B = {"batch_size": [32]}
#: The grid per method (every combination is tried). Keys are registry hyper-parameters.
GRIDS = {   # widened twice (2026-12-05) where the best setting sat on an edge; what still does is listed per
            # method under "on_grid_edge" in the table. Epochs stay at most a third of Retrain's 30.
    "finetune": {**B, "epochs": [5, 10], "lr": [0.01, 0.03, 0.1, 0.3, 1.0]},
    "neggrad": {**B, "epochs": [1, 3, 5], "lr": [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3]},
    "neggrad+": {**B, "epochs": [5], "lr": [0.01, 0.03, 0.1, 0.3], "alpha": [0.9, 0.95, 0.99]},
    "random_label": {**B, "epochs": [3, 5, 10], "lr": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]},
    "l1_sparse": {**B, "epochs": [5, 10], "lr": [0.03, 0.1, 0.3, 1.0], "gamma": [1e-4, 5e-4, 2e-3, 8e-3]},
    "salun": {**B, "epochs": [3, 5, 10], "lr": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3], "fraction": [0.3, 0.5]},
    "fisher": {"alpha": [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3]},
    "influence": {"alpha": [0.1, 0.3, 1.0, 3.0, 10.0, 30.0]},
    "boundary_shrink": {**B, "epochs": [5, 10], "lr": [3e-4, 1e-3, 3e-3, 1e-2], "bound": [0.1]},
    "boundary_expand": {**B, "epochs": [5, 10], "lr": [1e-3, 3e-3, 1e-2, 3e-2]},
}
CLASS_ONLY = {"boundary_shrink", "boundary_expand"}
#: Recipe variants tuned as their own rows ("scenario:recipe", see ``scenarios.RECIPE_VARIANTS``).
VARIANTS = ["mislabeled:deep"]
#: Lesson 7's localised methods, tuned on the variants only.
LOCALISED_GRIDS = {
    "rft": {**B, "epochs": [5, 10], "lr": [0.01, 0.03, 0.1, 0.3]},
    "del": {**B, "epochs": [5, 10], "lr": [0.01, 0.03, 0.1, 0.3], "budget": [0.1, 0.2, 0.3, 0.5]},
    "ssd": {"alpha": [1.0, 3.0, 10.0, 30.0, 100.0], "lam": [1.0]},
}

#: Full mode: the sources' settings (ResNet-18, CIFAR-10), as the lectures' settings tables give them
#: (002 App. C.2; 003 App. A.2; the SalUn and Boundary papers via 001). Not tuned here.
FULL = {
    "finetune": {"epochs": 10, "lr": 0.02, "batch_size": 256, "augment": "random_crop_flip"},
    "neggrad": {"epochs": 5, "lr": 1e-4, "batch_size": 256},
    "neggrad+": {"epochs": 5, "lr": 0.02, "batch_size": 256, "alpha": 0.95},
    "random_label": {"epochs": 10, "lr": 0.02, "batch_size": 256, "augment": "random_crop_flip"},
    "l1_sparse": {"epochs": 10, "lr": 0.02, "batch_size": 256, "gamma": 5e-4},
    "salun": {"epochs": 10, "lr": 0.02, "batch_size": 256, "fraction": 0.5},
    "fisher": {"alpha": 1e-7},
    "influence": {"alpha": 1.0},
    "boundary_shrink": {"epochs": 10, "lr": 1e-5, "batch_size": 128, "bound": 0.1,   # bound in [0, 1] pixels
                        "pixel_std": [0.2470, 0.2435, 0.2616]},                       # CIFAR-10's channel std
    "boundary_expand": {"epochs": 10, "lr": 1e-5, "batch_size": 128},
}

#: Full mode, lesson 7's localised methods (003 App. A.2; added beside FULL, which is unchanged):
#: RFT / DEL lr 0.015 (A.2's table), 30 epochs and weight decay 0 (A.2 as issue 22 reads it; the epochs
#: and decay are not in our copy's text), DEL at 003's main budget of 30% (Sec. 6); SSD with Foster et
#: al.'s defaults (alpha 10, lambda 1): our copy of 003 does not give the values it used.
FULL_LOCALISED = {
    "rft": {"epochs": 30, "lr": 0.015, "weight_decay": 0.0, "batch_size": 128},
    "del": {"epochs": 30, "lr": 0.015, "weight_decay": 0.0, "batch_size": 128, "budget": 0.3},
    "ssd": {"alpha": 10.0, "lam": 1.0, "batch_size": 128},
}


def grid(method: str, scenario: str = ""):
    """Every setting of ``method``'s grid; class-wise Fisher forgetting also zeroes the class's output
    rows, as 002's public code does (``forget_classes``)."""
    extra = {"forget_classes": [scenarios.FORGET_CLASS]} if (method, scenario) == ("fisher", "class") else {}
    keys = list(GRIDS[method])
    for values in itertools.product(*(GRIDS[method][k] for k in keys)):
        yield {**dict(zip(keys, values)), **extra}


def localised_masks(original, forget) -> list:
    """The masks lesson 7 compares: Deepest / Shallowest with 1 and 2 whole layers, SalLoc and DEL at
    those layers' opened shares (``(strategy, budget, mask)``)."""
    from course_lib import masks
    from course_lib.masks import localization as loc

    deep, shallow = loc.layer_shares(original, True)[:2], loc.layer_shares(original, False)[:2]
    plan = [("deepest", b) for b in deep] + [("shallowest", b) for b in shallow]
    plan += [(s, b) for s in ("salloc", "del") for b in sorted(deep + shallow)]
    return [(s, b, masks.localize(original, forget, s, b)) for s, b in plan]


def _select(name: str, method: str, grids: dict, tried: list, t0: float, log) -> dict:
    ok = [t for t in tried if not t[1]]
    best = min(ok or tried, key=lambda t: t[0])
    edge = sorted(k for k, vals in grids[method].items() if len(vals) > 1 and k != "epochs"
                  and best[2][k] in (min(vals), max(vals)))
    log(f"  {name:10s} {method:16s} {best[2]} disparity {best[0]:.2f}"
        f"{' (every setting collapses)' if best[1] else ''} ({len(tried)} settings, {time.perf_counter() - t0:.0f} s)")
    return {"hp": best[2], "disparity": round(best[0], 2), "collapsed": bool(best[1]),
            "grid_size": len(tried), "on_grid_edge": edge}


def tune_localised(name: str, sc, original, ev, ref, log=print) -> dict:
    """Lesson 7's localised methods on one scenario (see the module docstring)."""
    chosen = {}
    t0, tried = time.perf_counter(), []
    plan = localised_masks(original, sc.forget)
    for hp in (dict(zip(LOCALISED_GRIDS["rft"], v)) for v in itertools.product(*LOCALISED_GRIDS["rft"].values())):
        rows = [ev(unlearn.unlearn("rft", original, sc.retain, sc.forget, mask=m, seed=TUNING_SEED, **hp).model)
                for _, _, m in plan]
        ra = sum(r["RA"] for r in rows) / len(rows)
        tried.append((sum(metrics.disparity_average(r, ref) for r in rows) / len(rows),
                      ra < ref["RA"] - COLLAPSE_RA, hp, ""))
    chosen["rft"] = _select(name, "rft", LOCALISED_GRIDS, tried, t0, log)
    chosen["rft"]["masks"] = [f"{s}@{b:.4f}" for s, b, _ in plan]
    for method in ("del", "ssd"):
        t0, tried = time.perf_counter(), []
        for v in itertools.product(*LOCALISED_GRIDS[method].values()):
            hp = dict(zip(LOCALISED_GRIDS[method], v))
            row = ev(unlearn.unlearn(method, original, sc.retain, sc.forget, seed=TUNING_SEED, **hp).model)
            tried.append((metrics.disparity_average(row, ref), row["RA"] < ref["RA"] - COLLAPSE_RA, hp, ""))
        chosen[method] = _select(name, method, LOCALISED_GRIDS, tried, t0, log)
    return chosen


def tune_scenario(name: str, log=print) -> dict:
    base, _, recipe = name.partition(":")
    if recipe:
        sc = scenarios.make(base, seed=TUNING_SEED, fast=True, recipe=recipe)
    else:
        sc = scenarios.make(name, seed=TUNING_SEED, fast=True)
    original, retrained = sc.train_original(), sc.train_retrain()
    ev = lambda m: metrics.evaluate(m, sc.data, sc.forget_idx, exclude_classes=sc.exclude_classes,  # noqa: E731
                                    seed=TUNING_SEED)
    ref = ev(retrained)
    chosen = {}
    for method in GRIDS:
        if method in CLASS_ONLY and base != "class":
            continue
        t0, tried = time.perf_counter(), []
        for hp in grid(method, name):
            try:
                res = unlearn.unlearn(method, original, sc.retain, sc.forget, seed=TUNING_SEED, **hp)
                row = ev(res.model)
            except ValueError as exc:            # a diverged setting is a setting that failed
                tried.append((float("inf"), True, hp, str(exc)[:80]))
                continue
            collapsed = row["RA"] < ref["RA"] - COLLAPSE_RA
            tried.append((metrics.disparity_average(row, ref), collapsed, hp, ""))
        ok = [t for t in tried if not t[1]]
        best = min(ok or tried, key=lambda t: t[0])
        edge = sorted(k for k, vals in GRIDS[method].items() if len(vals) > 1 and k != "epochs"
                      and best[2][k] in (min(vals), max(vals)))
        chosen[method] = {"hp": best[2], "disparity": round(best[0], 2), "collapsed": bool(best[1]),
                          "grid_size": len(tried), "on_grid_edge": edge}
        log(f"  {name:10s} {method:16s} {best[2]} disparity {best[0]:.2f}"
            f"{' (every setting collapses)' if best[1] else ''} ({len(tried)} settings, {time.perf_counter() - t0:.0f} s)")
    if recipe:
        chosen.update(tune_localised(name, sc, original, ev, ref, log))
    return {"retrain": {k: round(v, 2) for k, v in ref.items() if k != "RTE (s)"}, "methods": chosen}


def tune_variants(variants: list[str]) -> dict:
    """``{name: (result, seconds)}`` for every recipe variant ``scenario:recipe``."""
    out = {}
    for name in variants:
        t0 = time.perf_counter()
        out[name] = (tune_scenario(name), round(time.perf_counter() - t0))
    return out


def merge_variants(table: dict, tuned_variants: dict) -> dict:
    """Put the variants' rows into ``table`` (every other entry unchanged); full mode gains the localised
    methods' source settings (:data:`FULL_LOCALISED`) where it has none."""
    for rows in table["full"].values():
        for m, hp in FULL_LOCALISED.items():
            rows.setdefault(m, dict(hp))
    for name, (res, seconds) in tuned_variants.items():
        table["fast"][name] = {m: v["hp"] for m, v in res["methods"].items()}
        table["fast_tuning"][name] = res
        table["about"].setdefault("variants", {})[name] = {
            "date": _dt.date.today().isoformat(), "recipe": name.partition(":")[2],
            "grids": {**GRIDS, **LOCALISED_GRIDS}, "classwise_only": sorted(CLASS_ONLY),
            "rft_rule": "one setting for every localiser and budget: the smallest mean disparity over the "
                        "masks in fast_tuning[...]['methods']['rft']['masks']",
            "seconds": seconds}
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=list(scenarios.available()))
    ap.add_argument("--dry-run", action="store_true", help="print, do not write the table")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS),
                    help="recipe variants 'scenario:recipe' to tune as their own rows")
    ap.add_argument("--variants-only", action="store_true",
                    help="tune only the variants and merge them into the existing table")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.variants_only:
        tuned_variants = tune_variants(args.variants)        # read the table only once tuning is done
        table = merge_variants(json.loads(OUT.read_text(encoding="utf-8")), tuned_variants)
        if not args.dry_run:
            OUT.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
            print(f"updated {', '.join(args.variants)} in {OUT.relative_to(ROOT)} in {time.perf_counter() - t0:.0f} s")
        return 0
    fast = {name: tune_scenario(name) for name in args.scenarios}
    table = {
        "about": {"script": "benchmarks/tune_methods.py", "date": _dt.date.today().isoformat(),
                  "tuning_seed": TUNING_SEED,
                  "rule": f"smallest disparity average to Retrain (UA, MIA-Efficacy, RA, TA) over the grid, "
                          f"among settings whose RA is within {COLLAPSE_RA:g} points of Retrain's",
                  "grids": GRIDS, "seconds": round(time.perf_counter() - t0)},
        "fast": {name: {m: v["hp"] for m, v in res["methods"].items()} for name, res in fast.items()},
        "fast_tuning": fast,
        "full": {"*": FULL, "class": {**FULL, "fisher": {**FULL["fisher"], "forget_classes": [scenarios.FORGET_CLASS]}}},
        "full_note": "the sources' settings (not tuned here: no GPU); the same for every scenario",
    }
    if args.variants:
        table = merge_variants(table, tune_variants(args.variants))
    if not args.dry_run:
        OUT.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {OUT.relative_to(ROOT)} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
