"""Data for the client tests: XOR's truth table, as points and as an uploadable CSV."""

from __future__ import annotations

from pathlib import Path

XOR_INPUTS = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
XOR_CLASSES = [0, 1, 1, 0]


def write_xor_csv(path: Path) -> Path:
    """XOR's truth table ten times over, with the class as a word (`class_names`)."""
    rows = [f"{a:g},{b:g},{'same' if a == b else 'different'}" for a, b in XOR_INPUTS] * 10
    path.write_text("a,b,label\n" + "\n".join(rows) + "\n")
    return path
