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
