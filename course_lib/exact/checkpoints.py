"""A checkpoint store for SISA: the state of a shard model after every slice, in memory or as
``.pt`` files in a folder (for models too large to keep ``S * R`` copies in RAM)."""
from __future__ import annotations

import uuid
from pathlib import Path

import torch

from ..params import Params, snapshot

State = dict[str, Params]            # {"params": ..., "buffers": ..., "momentum": ...}


class CheckpointStore:
    """``save(shard, slice, state) -> handle``, ``load(handle) -> state`` (a copy), ``delete(handles)``.

    ``folder=None`` keeps copies in memory; otherwise every checkpoint is one file, named by shard,
    slice and a random suffix (a re-trained slice never overwrites a file still referenced).
    """

    def __init__(self, folder: str | Path | None = None, device: torch.device | str = "cpu"):
        self.folder = None if folder is None else Path(folder)
        self.device = torch.device(device)

    def save(self, shard: int, slc: int, state: State):
        if self.folder is None:
            return state
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"sisa_shard{shard:03d}_slice{slc:03d}_{uuid.uuid4().hex[:8]}.pt"
        torch.save(state, path)
        return path

    def load(self, handle) -> State:
        if isinstance(handle, Path):
            return torch.load(handle, map_location=self.device, weights_only=True)
        return {k: {n: t.clone() for n, t in v.items()} for k, v in handle.items()}

    @staticmethod
    def delete(handles) -> None:
        for h in handles:
            if isinstance(h, Path):
                h.unlink(missing_ok=True)


def state_of(model: torch.nn.Module, momentum: Params) -> State:
    """A detached copy of a module's parameters and buffers plus its SGD momentum."""
    return {"params": snapshot(model),
            "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
            "momentum": {n: b.clone() for n, b in momentum.items()}}
