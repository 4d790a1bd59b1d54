"""Localised unlearning (lesson 7): Reset + Finetune, DEL and SSD (source 003).

(Filled in by its lesson.)
"""
from __future__ import annotations
