"""SalUn (lesson 5): Random Label fine-tuning of the salient weights only (source 001, 003).

(Filled in by its lesson.)
"""
from __future__ import annotations
