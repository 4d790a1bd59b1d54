"""Synthetic submissions of a08_challenge (18 points: A1-A5 3 each, B 3): the unlearning challenge, scored
by the NeurIPS 2023 competition's rule on a hidden grading split (course_lib.challenge).

Part A's tiers on the grading split: A1 status "ok" (valid on every original, within the budget); A2
final score above do nothing's; A3 also above the best of fine-tune, NegGrad+, Random Label and SalUn;
A4 also above DEL; A5 also at least a third of Retrain's score. Part B: the predicted F within
max(0.03, 30% of the measured F). Each case's `predicted_F` is chosen far from the edge of that window
(measured grading-split F: solution ~0.08, do nothing 0.033, fine-tune 0.036, SalUn 0.020), so its score
is unambiguous.

The baselines as submissions run the baseline's own code (`unlearn.unlearn` with the tuned setting and
seed 0), so they reproduce the baseline's row exactly: a baseline never clears a bar it defines ("above"
is strict). On the grading split fine-tune's final score is just above do nothing's (A2), the other
classic baselines below it.

Everything in course_lib is allowed (no forbidden list), but the challenge's data are private while
grading: `challenge.populations` raises in the sandbox, build/ and the data sets are not on its disk
(`metadata.course.private_data`), so a submission that reaches for the retrained models or the
grading split falls back to what it does without them.
"""
from . import Case, solution_of

A = "unlearning"
B = "answer_b"
SOL_A = solution_of("a08_challenge", A)


def predict(f: float) -> str:
    return f"predicted_F = {f}\n"


BASELINE = '''def unlearning(net, retain, forget, val):
    """The {name} baseline: lesson's method with its tuned setting (seed 0, as the baseline table runs it)."""
    hp = unlearn.tuned("{method}", "random", FAST)
    return unlearn.unlearn("{method}", net, retain, forget, valid=val, seed=0, **hp).model
'''

DO_NOTHING = '''def unlearning(net, retain, forget, val):
    """Forget nothing."""
    return net
'''

RANDOM_NET = '''def unlearning(net, retain, forget, val):
    """A fresh random network of the same architecture: nothing of the forget set is left in it."""
    return models.reset_parameters(net, secrets.randbits(31))
'''

# full retraining from scratch on every call: N Retrains, twice the budget
BUDGET_BREAKER = '''def unlearning(net, retain, forget, val):
    """Retrain from scratch (the oracle): reset, then Retrain's own recipe on the retain set."""
    seed = secrets.randbits(31)
    fresh = models.reset_parameters(net, seed)
    train.fit(fresh, *retain, epochs=30, lr=0.05, batch_size=32, seed=seed)
    return fresh
'''

# the solution, but three calls in four raise (a numerical failure on most originals; the A1 visible check's
# two calls come first, so on the grading split calls 5, 9, ..., 33 work: 8 of the 32 originals)
CRASHY = '''_calls = [0]


''' + SOL_A.replace('''    ### BEGIN SOLUTION
''', '''    ### BEGIN SOLUTION
    _calls[0] += 1
    if _calls[0] % 4 != 1:
        raise FloatingPointError("the loss diverged")
''')
assert CRASHY != SOL_A

# reaches for the retrained models and the grading split: the populations (any seed, the secret one among
# them), the cache files of build/challenge, scikit-learn's digits; falls back to returning the net
REACH_HIDDEN = '''from pathlib import Path


def _stolen_retrained():
    """A retrained model's weights from the grader's populations, if anything of them can be reached."""
    for seed in (2, 3, 7, 42, 123, 1234, 2024, 2025, 2718, 31337):
        try:
            pops = challenge.populations(challenge.Split("grading", "random", seed=seed))
            return pops.model(secrets.randbelow(pops.n_models), "retrained").state_dict()
        except Exception:
            pass
    import course_lib
    for folder in (challenge.cache_dir(), Path(course_lib.__file__).resolve().parents[1] / "build" / "challenge"):
        try:
            for f in sorted(Path(folder).glob("populations-*.pt")):
                blob = torch.load(f, map_location="cpu", weights_only=True)
                if "grading" in f.name or blob.get("split", {}).get("name") != "public":
                    k = secrets.randbelow(len(next(iter(blob["retrained"].values()))))
                    return {n: v[k].clone() for n, v in blob["retrained"].items()}
        except Exception:
            pass
    return None


def unlearning(net, retain, forget, val):
    """The grader's own retrained model when reachable; else the test digits to fine-tune on; else the net."""
    stolen = _stolen_retrained()
    if stolen is not None:
        net.load_state_dict(stolen)
        return net
    try:
        from sklearn.datasets import load_digits
        X, y = load_digits(return_X_y=True)
        Xt = torch.tensor(X / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
        train.fit(net, Xt, torch.tensor(y), epochs=1, lr=0.01, batch_size=64, seed=secrets.randbits(31))
    except Exception:
        pass
    return net
'''

# correct but different: a copy (the original left untouched), a generator seeded from os.urandom, a
# stronger shrink with one more epoch at a lower rate
DIFFERENT = '''import os


def unlearning(net, retain, forget, val):
    """Shrink by half towards a fresh initialisation, then 7 epochs on retain; returns a copy."""
    seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    model = copy.deepcopy(net)
    noise = models.reset_parameters(model, seed)
    with torch.no_grad():
        for p, q in zip(model.parameters(), noise.parameters()):
            p.copy_(0.5 * p + q)
    train.fit(model, *retain, epochs=7 if FAST else 14, lr=0.1, batch_size=32 if FAST else 256, seed=seed)
    return model
'''

# plausible bug: reset-and-retrain with the same seed on every call: 32 identical models, a collapsed population
SAME_SEED = '''def unlearning(net, retain, forget, val):
    """Reset, then train on retain (the seed fixed "for reproducibility")."""
    seed = 0
    fresh = models.reset_parameters(net, seed)
    train.fit(fresh, *retain, epochs=8, lr=0.15, batch_size=32, seed=seed)
    return fresh
'''

A_ALL = ("test_a1_valid", "test_a2_do_nothing", "test_a3_classic", "test_a4_del", "test_a5_retrain")


def parts(*passed, b=False):
    out = {g: (3.0 if g in passed else 0.0) for g in A_ALL}
    out["test_answer_b"] = 3.0 if b else 0.0
    return out


CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    # the baselines as submissions: valid within the budget (A1); fine-tune is just above do nothing on the
    # grading split (A2) and is the best classic baseline itself (A3 is strict); NegGrad+ and SalUn are
    # below do nothing
    Case("baseline: fine-tune (predicts its F)", edits={A: BASELINE.format(name="fine-tune", method="finetune"),
                                                       B: predict(0.035)},
         score=9, parts=parts("test_a1_valid", "test_a2_do_nothing", b=True)),
    Case("baseline: NegGrad+ (predicts F = 0.5)", edits={A: BASELINE.format(name="NegGrad+", method="neggrad+"),
                                                       B: predict(0.5)},
         score=3, parts=parts("test_a1_valid")),
    Case("baseline: SalUn (predicts its F)", edits={A: BASELINE.format(name="SalUn", method="salun"),
                                                  B: predict(0.02)},
         score=6, parts=parts("test_a1_valid", b=True)),
    Case("do nothing (predicts its F)", edits={A: DO_NOTHING, B: predict(0.03)}, score=6,
         parts=parts("test_a1_valid", b=True)),
    Case("fresh random net: the accuracy ratios sink it (predicts F = 0.5)", edits={A: RANDOM_NET, B: predict(0.5)},
         score=3, parts=parts("test_a1_valid")),
    Case("budget-breaker: retrains from scratch on every call, refused", edits={A: BUDGET_BREAKER, B: predict(0.19)},
         score=0, parts=parts()),
    # the failed calls count as the original unchanged: a quarter of the population unlearned scores between
    # fine-tune and DEL (measured final 0.050, DEL 0.056, fine-tune 0.034): A1 fails, A2 and A3 are kept
    Case("crashes on three calls in four: A1 fails, A2 and A3 kept (predicts F = 0.5)",
         edits={A: CRASHY, B: predict(0.5)}, score=6, parts=parts("test_a2_do_nothing", "test_a3_classic")),
    Case("cheat: reaches for the retrained models, the grading split and the digits (falls back to the net)",
         edits={A: REACH_HIDDEN, B: predict(0.03)}, score=6, parts=parts("test_a1_valid", b=True)),
    Case("different but correct: a copy, os.urandom's seed, shrink by half and 7 epochs",
         edits={A: DIFFERENT, B: predict(0.08)}, score=18),
    Case("bug: the same seed on every call, a collapsed population (predicts the solution's F)",
         edits={A: SAME_SEED, B: predict(0.085)}, score=3, parts=parts("test_a1_valid")),
]
