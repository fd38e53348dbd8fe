"""Write docs/configuration.md from the settings classes themselves.

    python scripts/settings_doc.py > docs/configuration.md

Each row is a field of ``cloud_service.settings.Settings`` or ``edge_client.settings.EdgeSettings``:
its environment variable, its default as written in the source, and the comment written beside
or above it (the why). Read from the source with ``ast``, so the page says what the code says;
``tests/test_docs.py`` fails when the committed page drifts from this output.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (
    ("cloud_service/settings.py", "Settings", "SPIC_CLOUD_", "The cloud (`spic-cloud serve`)"),
    (
        "cloud_service/refine_settings.py",
        "RefineSettings",
        "SPIC_CLOUD_REFINE_",
        "Refinement on demand (`spic-cloud serve`; docs/refinement.md)",
    ),
    ("edge_client/settings.py", "EdgeSettings", "SPIC_EDGE_", "The edge (`spic-edge`)"),
)
HEAD = """# Configuration

Every setting of the two programs, generated from their settings classes by
`python scripts/settings_doc.py > docs/configuration.md` (a test keeps it current). A setting comes
from its environment variable (or `.env` in compose); on the command line the matching flag wins
(`spic-edge --qf 8` over `SPIC_EDGE_QF`). Values are validated once at start: a bad one is one
line on stderr and exit status 2. Lists are comma-separated.
"""


def _comment(lines: list[str], node: ast.AnnAssign) -> str:
    """The comment lines right above the field and the one at its end, joined."""
    above: list[str] = []
    i = node.lineno - 2
    while i >= 0 and lines[i].strip().startswith("#"):
        above.insert(0, lines[i].strip().lstrip("#").strip())
        i -= 1
    end = lines[(node.end_lineno or node.lineno) - 1]
    inline = end.split("  # ", 1)[1].strip() if "  # " in end else ""
    return " ".join(part for part in (*above, inline) if part)


def _default(source: str, node: ast.AnnAssign) -> str:
    if node.value is None:
        return "(required)"
    text = ast.get_source_segment(source, node.value) or ""
    if isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "Field":
        first = node.value.args[0] if node.value.args else None
        factory = next((k for k in node.value.keywords if k.arg == "default_factory"), None)
        if first is not None:
            text = ast.get_source_segment(source, first) or ""
        elif factory is not None:
            made = ast.get_source_segment(source, factory.value) or ""
            text = "(empty)" if made in ("list", "dict") else "computed: " + made
    return re.sub(r"\s+", " ", text)


def rows(path: str, cls: str, prefix: str) -> list[tuple[str, str, str]]:
    source = (ROOT / path).read_text()
    lines = source.splitlines()
    klass = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == cls)
    out = []
    for node in klass.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
            if name == "model_config":
                continue
            out.append((prefix + name.upper(), _default(source, node), _comment(lines, node)))
    return out


def page() -> str:
    parts = [HEAD]
    for path, cls, prefix, title in SOURCES:
        parts.append(f"\n## {title}\n\nFrom [`{path}`](../{path}).\n\n")
        parts.append("| variable | default | why |\n|---|---|---|\n")
        for var, default, why in rows(path, cls, prefix):
            default, why = (text.replace("|", "\\|") for text in (default, why))
            parts.append(f"| `{var}` | `{default}` | {why} |\n")
    return "".join(parts)


if __name__ == "__main__":
    print(page(), end="")
