"""Synthetic submissions of a03_legonet (14 points: A 2 + 1, B 3, C 2, D 4, E 2)."""
from . import Case, solution_of, stub

A = "a03_legonet"
SOL = {g: solution_of(A, g) for g in ("init_keys", "p_key_row", "activate", "build_sets", "unlearn_step", "answer_e")}
STUB = {g: stub(A, g) for g in ("init_keys", "activate", "build_sets", "unlearn_step")}

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
    Case("cheat 2: input transformer that blanks tests + library call", base="release",
         edits={"init_keys": "get_ipython().input_transformers_cleanup.append("
                             "lambda lines: [] if any('assert' in l for l in lines) else lines)\n"
                             "from course_lib.exact.legonet import sample_keys as init_keys\n"},
         at_most=0),
    # (3) the class: rebinding a helper the tests call (here: the adapter trainer)
    Case("cheat 3: never re-trains + `train_adapter` redefined",
         edits={"unlearn_step": NO_RETRAIN + "\ntrain_adapter = lambda *a, **k: None\n"},
         score=8, parts={"test_build_sets": 2, "test_unlearn_step": 0, "test_answer_e": 0}),
    # (4) the library's function object copied whole
    Case("cheat 4: activate = nearest_keys (copied whole)",
         edits={"activate": "from course_lib.exact.legonet import nearest_keys\nactivate = nearest_keys\n"},
         score=7, parts={"test_activate": 0, "test_unlearn_step": 0}),
    # plausible bugs the old tests let through
    Case("bug: forget ids used as positions",
         edits={"unlearn_step": SOL["unlearn_step"].replace('pos = torch.searchsorted(state["ids"], forget)',
                                                            "pos = forget")},
         score=10, parts={"test_unlearn_step": 0}),
    Case("bug: build_sets gives float tensors for empty sets",
         edits={"build_sets": "def build_sets(act, ids, n):\n"
                              "    return [torch.tensor([int(i) for i, row in zip(ids, act) if j in row.tolist()])"
                              " for j in range(n)]\n"},
         score=12, parts={"test_build_sets": 0}),
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
                "answer_e": "answer_e = 'a'\n"}),
]
