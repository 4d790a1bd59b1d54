"""Synthetic submissions of a03_legonet (15 points: A 2 + 1, B 3, C 2, D 4, E 2 + 1)."""
from . import Case, solution_of, stub

A = "a03_legonet"
SOL = {g: solution_of(A, g) for g in ("init_keys", "p_key_row", "activate", "build_sets", "unlearn_step",
                                      "request_rows", "answer_e")}
STUB = {g: stub(A, g) for g in ("init_keys", "activate", "build_sets", "unlearn_step", "request_rows")}

# What copying lecture 03 gives: its code builds keys, activation and requests with the library (LegoNet,
# legonet.sample_keys, nearest_keys, costs.legonet_request_cost), which raises in the sandbox; its one cost
# formula, k^2 N / n rows per request, assumes equal adapter sizes. Nothing else has a lecture cell to copy.
LECTURE = {
    "init_keys": "from course_lib.exact import legonet\n\n"
                 "def init_keys(E, n, noise_std, generator):\n"
                 "    return legonet.sample_keys(E, n, noise_std, generator)\n",
    "activate": "from course_lib.exact.legonet import nearest_keys\n\n"
                "def activate(E, keys, k):\n    return nearest_keys(E, keys, k)\n",
    "unlearn_step": "from course_lib.exact import costs\n\n"
                    "def unlearn_step(state, forget_ids):\n"
                    "    return costs.legonet_request_cost([len(m) for m in state['members']])\n",
    "request_rows": "def expected_request_rows(sizes, N):\n"
                    "    sizes = np.asarray(sizes, dtype=np.float64)\n"
                    "    n, k = len(sizes), sizes.sum() / N\n"
                    "    return float(k ** 2 * N / n)\n",
}

NO_RETRAIN = '''def unlearn_step(state, forget_ids):
    forget = torch.as_tensor(forget_ids, dtype=torch.long).flatten()
    if forget.numel() == 0 or torch.unique(forget).numel() != forget.numel() or not torch.isin(forget, state["ids"]).all():
        raise ValueError("bad request")
    pos = torch.searchsorted(state["ids"], forget)
    affected = sorted(set(activate(state["E"][pos], state["keys"], state["k"]).flatten().tolist()))
    keep = ~torch.isin(state["ids"], forget)
    state["E"], state["y"], state["ids"] = state["E"][keep], state["y"][keep], state["ids"][keep]
    for j in affected:
        state["members"][j] = state["members"][j][~torch.isin(state["members"][j], forget)]
    return {"adapters": affected, "samples": sum(len(state["members"][j]) for j in affected)}
'''

CASES = [
    Case("solution"),
    Case("blank", base="release", score=0),
    Case("cheat 1: interactivity 'all' + stubs", base="release",
         edits={"init_keys": SOL["init_keys"],
                "activate": STUB["activate"] + '\nget_ipython().ast_node_interactivity = "all"'},
         score=2, parts={"test_init_keys": 2}),
    # an input transformer only changes the sandbox's shell (the tests run elsewhere); the library raises there
    Case("cheat 2: input transformer that blanks tests + library call", base="release",
         edits={"init_keys": "get_ipython().input_transformers_cleanup.append("
                             "lambda lines: [] if any('assert' in l for l in lines) else lines)\n"
                             "from course_lib.exact.legonet import sample_keys as init_keys\n"},
         score=0),
    # (3) the class: rebinding a helper the tests call (here: the adapter trainer); the tests keep
    # the given train_adapter, so Part D scores 0 and the other parts keep their points
    Case("cheat 3: never re-trains + `train_adapter` redefined",
         edits={"unlearn_step": NO_RETRAIN + "\ntrain_adapter = lambda *a, **k: None\n"},
         score=11, parts={"test_build_sets": 2, "test_unlearn_step": 0, "test_request_rows": 2, "test_answer_e": 1}),
    # (4) the library's function object copied whole: it raises in the sandbox; fit_state needs activate,
    # so Part D cannot run either
    Case("cheat 4: activate = nearest_keys (copied whole)",
         edits={"activate": "from course_lib.exact.legonet import nearest_keys\nactivate = nearest_keys\n"},
         score=8, parts={"test_activate": 0, "test_unlearn_step": 0, "test_request_rows": 2}),
    # the lecture's cells, adapted to the stubs' signatures, and nothing else: 0 of 15
    Case("lecture-copy", base="release", edits=LECTURE, score=0),
    # plausible bugs the old tests let through
    Case("bug: forget ids used as positions",
         edits={"unlearn_step": SOL["unlearn_step"].replace('pos = torch.searchsorted(state["ids"], forget)',
                                                            "pos = forget")},
         score=11, parts={"test_unlearn_step": 0}),
    Case("bug: build_sets gives float tensors for empty sets",
         edits={"build_sets": "def build_sets(act, ids, n):\n"
                              "    return [torch.tensor([int(i) for i, row in zip(ids, act) if j in row.tolist()])"
                              " for j in range(n)]\n"},
         score=13, parts={"test_build_sets": 0}),
    # E1 without the removal: sum |D_aj|^2 / N (the lecture's exercise 3), not Part D's samples after it
    Case("bug: Part E1 counts the adapters' sizes before the removal",
         edits={"request_rows": "def expected_request_rows(sizes, N):\n"
                                "    s = np.asarray(sizes, dtype=np.float64)\n    return float((s * s).sum() / N)\n"},
         score=13, parts={"test_request_rows": 0}),
    # E2 read off the lecture's rule of thumb: two rows, 2k adapters
    Case("bug: Part E2 says 2k (no overlap)", edits={"answer_e": "EXPECTED_ADAPTERS = 6.0\n"},
         score=14, parts={"test_answer_e": 0}),
    Case("different: multinomial keys, lexsorted activation, loops",
         edits={"init_keys": "def init_keys(E, n, noise_std, generator):\n    N, d = E.shape\n"
                             "    if type(n) is not int or n < 1 or n > N:\n        raise ValueError('n out of range')\n"
                             "    if noise_std < 0:\n        raise ValueError('noise_std must be >= 0')\n"
                             "    rows = torch.multinomial(torch.ones(N), n, replacement=False, generator=generator)\n"
                             "    noise = torch.randn(n, d, generator=generator) * noise_std\n"
                             "    return E[rows] + noise, rows\n",
                "p_key_row": "P_KEY_ROW = 0.03\n",
                "activate": "def activate(E, keys, k):\n    if not 1 <= k <= len(keys):\n"
                            "        raise ValueError('k must be between 1 and the number of keys')\n"
                            "    e, c = E.double().numpy(), keys.double().numpy()\n"
                            "    d2 = ((e[:, None, :] - c[None]) ** 2).sum(-1)\n"
                            "    idx = np.argsort(d2, axis=1, kind='stable')[:, :k]\n"
                            "    return torch.from_numpy(idx.astype(np.int64))\n",
                "build_sets": "def build_sets(act, ids, n):\n    out = []\n    for j in range(n):\n"
                              "        hit = (act == j).any(dim=1)\n        out.append(ids[hit].to(torch.int64))\n"
                              "    return out\n",
                "unlearn_step": "def unlearn_step(state, forget_ids):\n"
                                "    req = [int(i) for i in torch.as_tensor(forget_ids).reshape(-1)]\n"
                                "    have = set(state['ids'].tolist())\n"
                                "    if not req or len(set(req)) != len(req) or any(i not in have for i in req):\n"
                                "        raise ValueError('bad request')\n"
                                "    gone = torch.tensor(req)\n"
                                "    E_f, _ = rows_of(state, torch.sort(gone).values)\n"
                                "    hit = sorted({int(j) for j in activate(E_f, state['keys'], state['k']).reshape(-1)})\n"
                                "    keep = ~torch.isin(state['ids'], gone)\n"
                                "    for key in ('E', 'y', 'ids'):\n        state[key] = state[key][keep]\n"
                                "    total = 0\n    for j in hit:\n"
                                "        state['members'][j] = state['members'][j][~torch.isin(state['members'][j], gone)]\n"
                                "        state['adapters'][j] = train_adapter(*rows_of(state, state['members'][j]), j, state['seed'])\n"
                                "        total += int(state['members'][j].numel())\n"
                                "    return {'adapters': hit, 'samples': total}\n",
                "request_rows": "def expected_request_rows(sizes, N):\n    total = 0.0\n"
                                "    for s in [int(v) for v in torch.as_tensor(np.asarray(sizes)).reshape(-1)]:\n"
                                "        total += (s / N) * (s - 1)\n    return total\n",
                "answer_e": "EXPECTED_ADAPTERS = 2 * 3 - 3 * 3 / 30   # |A| + |B| - E|A & B|\n"}),
    # correct, in other conventions: keys from an argsort of uniforms and in-place noise, activation by a
    # Python sort per row, sets via setattr on a namespace, Part D in NumPy with new lists (not in place)
    # and `max` as a variable name
    Case("different: argsort draw, Python sort, setattr, NumPy Part D building new lists",
         edits={"init_keys": "def init_keys(E, n, noise_std, generator):\n    N = E.shape[0]\n"
                             "    if not 1 <= n <= N or noise_std < 0:\n        raise ValueError('bad n or noise_std')\n"
                             "    rows = torch.rand(N, generator=generator).argsort()[:n]\n"
                             "    keys = E[rows].clone()\n"
                             "    keys += torch.normal(0.0, float(noise_std), size=tuple(keys.shape), generator=generator)\n"
                             "    return keys, rows\n",
                "p_key_row": "P_KEY_ROW = 3 / 100\n",
                "activate": "def activate(E, keys, k):\n    n = len(keys)\n"
                            "    if not 1 <= k <= n:\n        raise ValueError('k out of range')\n"
                            "    out = []\n    for e in E.double():\n"
                            "        d2 = ((keys.double() - e) ** 2).sum(1).tolist()\n"
                            "        out.append(sorted(range(n), key=lambda j: (d2[j], j))[:k])\n"
                            "    return torch.tensor(out, dtype=torch.int64).reshape(len(E), k)\n",
                "build_sets": "import types\nopts = types.SimpleNamespace()\nsetattr(opts, 'dtype', torch.int64)\n\n"
                              "def build_sets(act, ids, n):\n"
                              "    return [ids[(act == j).any(dim=1)].to(getattr(opts, 'dtype')) for j in range(n)]\n",
                "unlearn_step": "def unlearn_step(state, forget_ids):\n"
                                "    f = np.asarray(forget_ids, dtype=np.int64).reshape(-1)\n"
                                "    have = state['ids'].numpy()\n"
                                "    if f.size == 0 or np.unique(f).size != f.size or not np.isin(f, have).all():\n"
                                "        raise ValueError('bad request')\n"
                                "    forget = torch.from_numpy(f)\n"
                                "    pos = torch.from_numpy(np.searchsorted(have, f))\n"
                                "    hit = sorted(set(activate(state['E'][pos], state['keys'], state['k']).reshape(-1).tolist()))\n"
                                "    keep = torch.from_numpy(~np.isin(have, f))\n"
                                "    state.update(E=state['E'][keep], y=state['y'][keep], ids=state['ids'][keep])\n"
                                "    members = [m[~torch.isin(m, forget)] if j in hit else m\n"
                                "               for j, m in enumerate(state['members'])]\n"
                                "    adapters = [train_adapter(*rows_of(state, members[j]), j, state['seed']) if j in hit else a\n"
                                "                for j, a in enumerate(state['adapters'])]\n"
                                "    state['members'], state['adapters'] = members, adapters\n"
                                "    max = 0\n    for j in hit:\n        max += len(members[j])\n"
                                "    return {'adapters': hit, 'samples': max}\n",
                "request_rows": "def expected_request_rows(sizes, N):\n"
                                "    s = torch.as_tensor(np.asarray(sizes), dtype=torch.float64)\n"
                                "    return (s.pow(2).sum() - s.sum()).div(N).item()\n",
                "answer_e": "from fractions import Fraction\n"
                            "EXPECTED_ADAPTERS = float(Fraction(57, 10))\n"}),
]
