"""Shared output of the benchmark scripts: one Markdown table, printed and saved."""

from __future__ import annotations

from pathlib import Path


def publish(path: Path, title: str, notes: str, header: list[str], rows: list[list[str]]) -> str:
    """Print a titled Markdown table and write it to ``path``; returns the text."""
    lines = [f"# {title}", "", notes, "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
