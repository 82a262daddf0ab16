"""The XSS corpus (tests/data/xss/vectors.html), with its placeholders filled in.

Used by tests/core/test_xss_corpus.py on the sanitiser's output and by browser tests that
render the sanitised vectors in Chromium and count requests to ``/leak/<n>``."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "xss" / "vectors.html"


def load_vectors(port: int) -> list[str]:
    """Every vector of the corpus in file order, ``{PORT}`` replaced by ``port`` and ``{N}`` by
    the vector's number (1-based), so a hit on ``http://127.0.0.1:<port>/leak/<n>`` names it."""
    vectors: list[str] = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        n = len(vectors) + 1
        vectors.append(line.replace("{PORT}", str(port)).replace("{N}", str(n)))
    return vectors
