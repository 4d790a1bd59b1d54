"""Run notebooks in full mode as a smoke run (COURSE_SMOKE=1) on a miniature CIFAR-10, printing the
slowest cells: the by-hand twin of ``tests/test_full_path.py`` (``-m fullpath``).

    python scripts/smoke_run.py notebooks/04_boundary.ipynb [more notebooks] [--keep DIR]

The miniature CIFAR-10 and random "ImageNet" weights are written to a scratch folder (or DIR).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


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
            "COURSE_SMOKE": "1", "COURSE_QUIET": "1", "OMP_NUM_THREADS": "1"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--keep", type=Path, default=None, help="folder for the data, weights and executed notebooks")
    args = ap.parse_args()
    import papermill as pm

    where = args.keep or Path(tempfile.mkdtemp(prefix="course-smoke-"))
    where.mkdir(parents=True, exist_ok=True)
    os.environ.update(prepare(where))
    failed = 0
    for nb in args.notebooks:
        nb = nb.resolve()
        out = where / nb.name
        params = {"FAST": False} if nb.parent.name == "notebooks" else {}
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(nb.parent), progress_bar=False,
                                kernel_name="python3")
            status = "ok"
        except Exception as exc:  # noqa: BLE001
            status, failed = f"FAILED: {str(exc)[-1500:]}", failed + 1
        print(f"== {nb.name}: {status} ({time.perf_counter() - t0:.1f} s); executed notebook: {out}")
        if out.exists():
            cells = json.loads(out.read_text())["cells"]
            timed = sorted(((c.get("metadata", {}).get("papermill", {}).get("duration") or 0, i)
                            for i, c in enumerate(cells) if c["cell_type"] == "code"), reverse=True)[:8]
            print("   slowest cells: " + ", ".join(f"#{i} {d:.1f}s" for d, i in timed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
