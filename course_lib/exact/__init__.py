"""Exact unlearning (lessons 1-3)."""
