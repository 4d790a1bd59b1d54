"""Second-order baselines (lessons 5, 6): Fisher forgetting and influence unlearning (source 002).

(Filled in by its lesson.)
"""
from __future__ import annotations
