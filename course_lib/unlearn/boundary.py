"""Boundary unlearning (lesson 4): Boundary Shrink and Boundary Expanding (source 001).

(Filled in by its lesson.)
"""
from __future__ import annotations
