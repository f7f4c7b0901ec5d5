"""`make lint`: no module of the four packages over 400 lines (issue 12: small rooms)."""

from __future__ import annotations

import sys
from pathlib import Path

LIMIT = 400
ROOT = Path(__file__).resolve().parent.parent


def oversized(root: Path = ROOT, limit: int = LIMIT) -> list[tuple[str, int]]:
    found = []
    for package in ("actors", "events", "projections", "definitions"):
        for path in sorted((root / package).rglob("*.py")):
            lines = len(path.read_text().splitlines())
            if lines > limit:
                found.append((str(path.relative_to(root)), lines))
    return found


if __name__ == "__main__":
    big = oversized()
    for name, lines in big:
        print(f"{name}: {lines} lines, over {LIMIT}: split it by job", file=sys.stderr)
    sys.exit(1 if big else 0)
