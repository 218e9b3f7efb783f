"""Write the built-in price table (shelflife.model.cost.PRICE_TABLE) into docs/costs.md,
between its ``<!-- prices: begin -->`` and ``<!-- prices: end -->`` lines.

    .venv/bin/python scripts/cost_table.py
"""

from __future__ import annotations

from pathlib import Path

from shelflife.model.cost import price_table_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "costs.md"
BEGIN, END = "<!-- prices: begin -->\n", "<!-- prices: end -->"


def main() -> None:
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    DOC.write_text(head + BEGIN + price_table_markdown() + END + tail, encoding="utf-8")


if __name__ == "__main__":
    main()
