"""docs/bitstream.md must carry the normative format text verbatim."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bitstream_doc_mirrors_the_module():
    doc = (ROOT / "docs" / "bitstream.md").read_text()
    for module in (
        "shared/bitstream.py",
        "shared/codecs/tables.py",
        "shared/codecs/huffman.py",
        "shared/codecs/rans.py",
    ):
        spec = (ROOT / module).read_text().split('"""')[1].strip("\n")
        assert spec in doc, (
            f"docs/bitstream.md is out of date with {module}: regenerate the section"
        )


def test_configuration_page_is_generated_from_the_settings():
    """docs/configuration.md is what scripts/settings_doc.py writes from the settings classes."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_doc.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == out, "docs/configuration.md is stale: python scripts/settings_doc.py > it"


def test_relative_links_in_the_docs_resolve():
    """Every relative link of the README, CHANGELOG and docs/ (research log aside: it quotes
    history) names a file or folder that exists, so moving a page cannot strand its readers."""
    import re

    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "\n".join(broken)
