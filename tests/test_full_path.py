"""Full mode, executed: every lecture and every graded solution runs with FAST off on a miniature
CIFAR-10 (160 + 80 images) written here in torchvision's on-disk format, in a *smoke run* (``COURSE_SMOKE=1``:
``config.SMOKE_*`` caps sizes and loop counts only). Every full-mode branch is taken: ResNet-18 with
the CIFAR stem, the augmentation, the full hyper-parameter tables, LegoNet's ImageNet encoder (from a
hub cache holding random ResNet-34 weights in torchvision's file, since nothing can be downloaded).

Select with ``-m fullpath``; CI runs them with the rest. Seconds are printed, never asserted."""
import json
from pathlib import Path

import pytest
import torch

import minicifar

ROOT = Path(__file__).resolve().parent.parent
LECTURES = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*/*.ipynb"))


def _id(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


@pytest.fixture(scope="session")
def full_mode_env(tmp_path_factory):
    """COURSE_DATA with the miniature CIFAR-10 and TORCH_HOME with cached (random) ImageNet weights."""
    import torchvision

    root = tmp_path_factory.mktemp("full-mode")
    minicifar.write_cifar10(root / "data")
    hub = root / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    for arch, weights in [("resnet34", torchvision.models.ResNet34_Weights.DEFAULT)]:
        torch.manual_seed(0)
        net = torchvision.models.get_model(arch, weights=None)
        torch.save(net.state_dict(), hub / Path(weights.url).name)
    # one thread per kernel for every pool (torch, OpenBLAS, MKL, numba): CI runs two notebooks at once
    # on two cores, and spinning idle workers of a second pool slowed a neighbour 3-4x
    return {"COURSE_DATA": str(root / "data"), "TORCH_HOME": str(root / "torch"), "COURSE_FAST": "0",
            "COURSE_SMOKE": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "NUMBA_NUM_THREADS": "1"}


def _outputs(nb: dict) -> str:
    text = []
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            text.append("".join(o.get("text", "")))
            text.extend("".join(v) for k, v in o.get("data", {}).items() if k in ("text/plain", "text/markdown", "text/html"))
    return "\n".join(text)


#: What each run must show to prove it took the full-mode branches (besides "full mode").
EXPECT = {
    "00_unlearning_basics": ["cifar10", "resnet18"],
    "01_definitions": ["cifar10", "small_cnn"],
    "01b_verification": ["cifar10", "small_cnn", "resnet18"],
    "02_sisa": ["cifar10", "SmallCNN"],
    "03_legonet": ["cifar10", "encoder: imagenet", "resnet18"],
    "04_boundary": ["cifar10", "resnet18"],
    "05_salun": ["cifar10", "resnet18"],
    "05b_salun_controls": ["cifar10", "resnet18"],
    "06_sparsity": ["cifar10", "resnet18"],
    "06b_l1_backdoor": ["cifar10", "resnet18"],
    "07_del": ["cifar10", "resnet18"],
    "08_challenge": ["cifar10", "resnet18"],
}


@pytest.mark.fullpath
@pytest.mark.parametrize("path", LECTURES + SOLUTIONS, ids=_id)
def test_full_mode_runs_on_miniature_cifar10(path, tmp_path, full_mode_env):
    """papermill runs the notebook with FAST off, top to bottom, and its outputs show the full setting."""
    from course_lib import nbrun

    params = {"FAST": False} if path in LECTURES else {}
    out = tmp_path / path.name
    res = nbrun.execute(path, out, parameters=params, cwd=path.parent, env=full_mode_env, fast=False)
    print(f"{_id(path)} (full mode, smoke run): {res.status} in {res.seconds:.1f} s; slowest cells: "
          + ", ".join(f"{c.cell}: {c.seconds:.1f} s" for c in res.slowest(3)))
    assert res.ok, f"{_id(path)}: {res.status}\n{res.error[-3000:]}"
    text = _outputs(json.loads(out.read_text(encoding="utf-8")))
    if path in LECTURES:
        assert "full mode" in text, "the banner should say full mode"
        missing = [w for w in EXPECT.get(path.stem, []) if w not in text]
        assert not missing, f"{_id(path)}: outputs never mention {missing}: a full-mode branch was not taken"
