"""The documents in the demo's mail (docs/demo.md): the applicants' résumés, as PDFs.

Pure functions and data, no I/O; :mod:`postroom.demo_scenario` attaches them to its messages.

>>> resume_pdf("Ada", ("Engineer",))[:8]
b'%PDF-1.4'
"""

from __future__ import annotations


def resume_pdf(name: str, lines: tuple[str, ...]) -> bytes:
    """A one-page PDF that any viewer opens: ``name`` as the title, then ``lines``."""
    text = [f"BT /F1 22 Tf 72 770 Td ({_pdf_text(name)}) Tj ET"]
    for i, line in enumerate(lines):
        text.append(f"BT /F1 11 Tf 72 {730 - 18 * i} Td ({_pdf_text(line)}) Tj ET")
    stream = "\n".join(text).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _pdf_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


MAYA_CV = resume_pdf(
    "Maya Okafor",
    (
        "Backend engineer - Leiden, the Netherlands - maya.okafor@example.com",
        "",
        "2023-now   MSc Computer Science, Universiteit Leiden (distributed systems)",
        "2020-2023  Backend engineer, Parcelly: Python, PostgreSQL, Kafka; 40k orders a day",
        "2018-2020  Software engineer intern, Rijkswaterstaat open data team",
        "",
        "Open source: maintainer of a PostgreSQL logical replication client for Python",
    ),
)

MAYA_CV_2025 = resume_pdf(
    "Maya Okafor",
    (
        "Backend engineer - Leiden, the Netherlands - maya.okafor@example.com",
        "",
        "2025       MSc Computer Science, Universiteit Leiden: thesis on exactly-once delivery",
        "2020-2023  Backend engineer, Parcelly: Python, PostgreSQL, Kafka; 40k orders a day",
        "2018-2020  Software engineer intern, Rijkswaterstaat open data team",
        "",
        "Open source: maintainer of a PostgreSQL logical replication client for Python",
    ),
)
