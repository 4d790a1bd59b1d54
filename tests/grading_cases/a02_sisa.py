"""Synthetic submissions of a02_sisa (14 points: A 1 + 1, B 3, C 4, D 3, E 2)."""
from . import Case, solution_of, stub

A = "a02_sisa"
SOL = {g: solution_of(A, g) for g in ("assign_rows", "slice_share", "retrain_shard", "unlearn", "batch_cost",
                                      "answer_e")}
STUB = {g: stub(A, g) for g in ("assign_rows", "retrain_shard", "unlearn", "batch_cost")}

# What copying lecture 02 gives: its code calls the library (`place` of section 5 for the shards; SISA's own
# unlearn), which raises in the sandbox, and its one from-scratch cost (section 3: one row, the model's actual
# shard and slice sizes) ignores K. Parts B and C have no lecture cell to copy (the lecture calls m.unlearn).
LECTURE_ASSIGN = """from course_lib.exact.sharding import place

def assign_rows(ids, seed, n_shards, n_slices):
    return place(ids, seed, n_shards, n_slices)
"""
LECTURE_COST = """def expected_batch_cost(sizes, e, K):
    sz = torch.as_tensor(np.asarray(sizes), dtype=torch.float64)   # [S, R] rows per shard and slice
    tail = sz.cumsum(1).flip(1).cumsum(1).flip(1)       # sum over j >= r of the rows trained at slice j
    return float((sz * e * tail).sum() / sz.sum())
"""

NO_RETRAIN = '''def unlearn(model, ids):
    ids = torch.as_tensor(ids).long().flatten()
    if len(ids) == 0 or len(torch.unique(ids)) != len(ids):
        raise ValueError("bad request")
    pos = model.positions(ids)
    start = {}
    for s, r in zip(model.shard[pos].tolist(), model.slice[pos].tolist()):
        start[s] = min(r, start.get(s, r))
    model.drop(pos)
    shards = sorted(start)
    samples = sum(EPOCHS * len(model.union(s, r)) for s in shards for r in range(start[s], model.R))
    return {"shards": shards, "from_slices": [start[s] for s in shards], "samples": samples}
'''

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    Case("cheat 1: interactivity 'all' + stubs", base="release",
         edits={"assign_rows": SOL["assign_rows"],
                "retrain_shard": STUB["retrain_shard"] + '\nget_ipython().ast_node_interactivity = "all"'},
         score=1, parts={"test_assign_rows": 1}),
    # patching the (removed) grader hook, with the library behind Part A1: the library raises in the sandbox
    Case("cheat 2: no-op assert_own_code + library call", base="release",
         edits={"assign_rows": "import course_lib.grading as g\ng.assert_own_code = lambda *a, **k: None\n"
                               "from course_lib.exact.sisa import assign\n\n"
                               "def assign_rows(ids, seed, n_shards, n_slices):\n"
                               "    return assign(ids, seed, n_shards, n_slices)\n"},
         score=0),
    # (3) the example: a never-training unlearn made green by redefining same_model; the tests keep
    # the given same_model, so Part C scores 0 and the other parts keep their points
    Case("cheat 3: never re-trains + `same_model = lambda *a: True`",
         edits={"unlearn": NO_RETRAIN + "\nsame_model = lambda *a, **k: True\n"},
         score=10, parts={"test_retrain_shard": 3, "test_unlearn": 0, "test_batch_cost": 3, "test_answer_e": 2}),
    # (4) a function object of the library copied whole: it raises in the sandbox, and MiniSISA.fit needs
    # Part A1, so Parts B and C cannot run either (A2, D and E keep their points)
    Case("cheat 4: assign_rows = sisa.assign (copied whole)",
         edits={"assign_rows": "from course_lib.exact import sisa\nassign_rows = sisa.assign\n"},
         score=6, parts={"test_assign_rows": 0, "test_slice_share": 1, "test_retrain_shard": 0, "test_unlearn": 0,
                         "test_batch_cost": 3, "test_answer_e": 2}),
    # the lecture's cells, adapted to the stubs' signatures, and nothing else: 0 of 14
    Case("lecture-copy", base="release", edits={"assign_rows": LECTURE_ASSIGN, "batch_cost": LECTURE_COST},
         score=0),
    # plausible bugs the old tests let through
    Case("bug: slice of the last id in the shard, not the earliest",
         edits={"unlearn": SOL["unlearn"].replace("start[s] = min(r, start.get(s, r))", "start[s] = r")},
         score=10, parts={"test_unlearn": 0}),
    Case("bug: ids used as positions",
         edits={"unlearn": SOL["unlearn"].replace("pos = model.positions(ids)", "pos = ids")},
         score=10, parts={"test_unlearn": 0}),
    # K rows drawn with replacement: (1 - u/N)^K instead of the product over distinct rows (right for K = 1)
    Case("bug: Part D draws the K rows with replacement",
         edits={"batch_cost": SOL["batch_cost"].replace(
             "    for t in range(int(K)):\n        p_none *= np.clip(N - union - t, 0, None) / (N - t)\n",
             "    p_none = (1.0 - union / N) ** K\n")},
         score=11, parts={"test_batch_cost": 0}),
    # E1 off by one: counts the deleted row's position as moving too
    Case("bug: Part E counts the rows from position 100 on",
         edits={"answer_e": "MOVED_ROWS = 900\nSHARDS_RETRAINED = 4\n"},
         score=12, parts={"test_answer_e": 0}),
    # resuming from the checkpoint itself, not a copy: the final weights are right, but the checkpoint the
    # shard resumed from is trained over (caught by Part B's hidden test through the model copied back)
    Case("bug: resumes from the checkpoint itself (no copy)",
         edits={"retrain_shard": SOL["retrain_shard"].replace("copy_state(model.ckpt[(s, from_slice - 1)])",
                                                              "model.ckpt[(s, from_slice - 1)]")},
         score=11, parts={"test_retrain_shard": 0, "test_unlearn": 4}),
    Case("different: Python-int arithmetic, loops",
         edits={"assign_rows": "def assign_rows(ids, seed, n_shards, n_slices):\n"
                               "    for v in (n_shards, n_slices):\n"
                               "        if type(v) is not int or v < 1:\n"
                               "            raise ValueError('n_shards and n_slices must be integers >= 1')\n"
                               "    hs = [int(v) for v in id_hash(ids, seed)]\n"
                               "    shard = torch.tensor([v % n_shards for v in hs], dtype=torch.int64)\n"
                               "    slc = torch.tensor([(v // n_shards) % n_slices for v in hs], dtype=torch.int64)\n"
                               "    return shard, slc\n",
                "slice_share": "SLICE0_SHARE = 1",
                "retrain_shard": "def retrain_shard(model, s, from_slice):\n"
                                 "    if from_slice > 0:\n        state = copy.deepcopy(model.ckpt[(s, from_slice - 1)])\n"
                                 "    else:\n        state = model.init_state(s)\n    total = 0\n    r = from_slice\n"
                                 "    while r < model.R:\n        total = total + model.train_slice(state, s, r)\n"
                                 "        model.ckpt[(s, r)] = copy_state(state)\n        r += 1\n    return total\n",
                "unlearn": "def unlearn(model, ids):\n    req = [int(i) for i in torch.as_tensor(ids).reshape(-1)]\n"
                           "    if not req or len(set(req)) < len(req):\n        raise ValueError('empty or repeated ids')\n"
                           "    pos = model.positions(torch.tensor(req))\n    first = {}\n"
                           "    for p in pos.tolist():\n        s, r = int(model.shard[p]), int(model.slice[p])\n"
                           "        if s not in first or r < first[s]:\n            first[s] = r\n"
                           "    model.drop(pos)\n    shards = sorted(first)\n"
                           "    cost = [retrain_shard(model, s, first[s]) for s in shards]\n"
                           "    return {'shards': shards, 'from_slices': [first[s] for s in shards], 'samples': sum(cost)}\n",
                # Part D by the earliest hit slice: P(earliest = r) = P(none before r) - P(none up to r), math.comb
                "batch_cost": "import math\n\ndef expected_batch_cost(sizes, e, K):\n"
                              "    rows = [[int(v) for v in shard] for shard in np.asarray(sizes).tolist()]\n"
                              "    N = sum(sum(shard) for shard in rows)\n"
                              "    none = lambda a: math.comb(N - a, K) / math.comb(N, K)\n"
                              "    total = 0.0\n    for shard in rows:\n        R = len(shard)\n"
                              "        for r in range(R):\n            before, upto = sum(shard[:r]), sum(shard[:r + 1])\n"
                              "            p = none(before) - none(upto)\n"
                              "            total += p * e * sum(sum(shard[:j + 1]) for j in range(r, R))\n"
                              "    return total\n",
                "answer_e": "MOVED_ROWS = 1000 - 100 - 1\nSHARDS_RETRAINED = int(4)\n"}),
    # correct, in other conventions: rows dropped by hand with setattr, `max` as a variable name, NumPy
    # scalars, torch float64 for Part D, a reproducibility flag
    Case("different: setattr drop, `max` as a name, numpy scalars, torch Part D",
         edits={"slice_share": "SLICE0_SHARE = np.float64(1.0)\n",
                "unlearn": "def unlearn(model, ids):\n"
                           "    req = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1))\n"
                           "    if req.numel() == 0 or torch.unique(req).numel() != req.numel():\n"
                           "        raise ValueError('empty request or repeated id')\n"
                           "    pos = model.positions(req)\n"
                           "    max = {}   # the earliest affected slice of every shard\n"
                           "    for s, r in zip(model.shard[pos].tolist(), model.slice[pos].tolist()):\n"
                           "        max[s] = r if s not in max else (r if r < max[s] else max[s])\n"
                           "    keep = torch.ones(len(model.ids), dtype=torch.bool)\n    keep[pos] = False\n"
                           "    for name in ('ids', 'X', 'y', 'shard', 'slice'):\n"
                           "        setattr(model, name, getattr(model, name)[keep])\n"
                           "    total = np.int64(0)\n"
                           "    for s in sorted(max):\n        total += retrain_shard(model, s, max[s])\n"
                           "    return {'shards': sorted(max), 'from_slices': [max[s] for s in sorted(max)],"
                           " 'samples': int(total)}\n",
                # Part D in torch float64, by complement counting over the rows outside slices 0..j; E in numpy ints
                "batch_cost": "torch.backends.cudnn.deterministic = True\n\n"
                              "def expected_batch_cost(sizes, e, K):\n"
                              "    n = torch.as_tensor(np.asarray(sizes), dtype=torch.float64)\n"
                              "    union = torch.cumsum(n, 1)\n    N = n.sum()\n"
                              "    t = torch.arange(K, dtype=torch.float64)\n"
                              "    miss = ((N - union[..., None] - t).clamp(min=0) / (N - t)).prod(-1)\n"
                              "    return (e * union * (1 - miss)).sum().item()\n",
                "answer_e": "MOVED_ROWS = np.int64(899)\nSHARDS_RETRAINED = np.int64(4)\n"}),
]
