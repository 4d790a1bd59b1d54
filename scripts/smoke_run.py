"""Run notebooks in full mode as a smoke run (COURSE_SMOKE=1) on a miniature CIFAR-10, printing the
slowest cells: the by-hand twin of ``tests/test_full_path.py`` (``-m fullpath``).

    python scripts/smoke_run.py notebooks/04_boundary.ipynb [more notebooks] [--keep DIR]

The miniature CIFAR-10 and random "ImageNet" weights are written to a scratch folder (or DIR).
"""
import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


#: one thread for every pool a notebook can start: torch/OpenMP, OpenBLAS and MKL (numpy, scipy), numba
#: (UMAP). Two notebooks side by side on two cores otherwise oversubscribe them: an idle OpenBLAS or
#: OpenMP worker spins, and a smoke run of 04 took 277 s beside 05 against 76 s alone.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def prepare(where: Path) -> dict:
    import torch
    import torchvision

    import minicifar

    minicifar.write_cifar10(where / "data")
    hub = where / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)
    w = torchvision.models.ResNet34_Weights.DEFAULT
    if not (hub / Path(w.url).name).exists():
        torch.manual_seed(0)
        torch.save(torchvision.models.get_model("resnet34", weights=None).state_dict(), hub / Path(w.url).name)
    return {"COURSE_DATA": str(where / "data"), "TORCH_HOME": str(where / "torch"), "COURSE_FAST": "0",
            "COURSE_SMOKE": "1", "COURSE_QUIET": "1", **ONE_THREAD}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--keep", type=Path, default=None, help="folder for the data, weights and executed notebooks")
    args = ap.parse_args()
    from course_lib import nbrun

    where = args.keep or Path(tempfile.mkdtemp(prefix="course-smoke-"))
    where.mkdir(parents=True, exist_ok=True)
    env = prepare(where)
    failed = 0
    for nb in args.notebooks:
        nb = nb.resolve()
        out = where / nb.name
        params = {"FAST": False} if nb.parent.name == "notebooks" else {}
        res = nbrun.execute(nb, out, parameters=params, cwd=nb.parent, env=env, fast=False)
        failed += not res.ok
        print(f"== {nb.name}: {res.status} ({res.seconds:.1f} s); executed notebook: {out}")
        if not res.ok:
            print(res.error[-1500:])
        print("   slowest cells: " + ", ".join(f"#{c.cell} {c.seconds:.1f}s" for c in res.slowest(8)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
