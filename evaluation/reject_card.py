"""The model card's "## Unknown" section, written by spic-card and by ``evaluation.unknown``."""

from __future__ import annotations

from shared.manifest import Manifest


def unknown_markdown(manifest: Manifest) -> str:
    """The card's "## Unknown" section: the head's reject rule and what it did on foreign photos."""
    rule = manifest.head.reject if manifest.head else None
    lines = ["", "## Unknown", ""]
    if rule is None:
        return "\n".join(
            [
                *lines,
                "No reject rule: every frame gets a label (`python -m evaluation.unknown`).",
                "",
            ]
        )
    lines.append(
        f"Reject rule `{rule.score}`"
        + (f" (k = {rule.k}, bank `{manifest.files[rule.bank].path}`" if rule.bank else "")
        + (f", detector `{manifest.files[rule.detector].path}`" if rule.detector else "")
        + (")" if rule.bank else "")
        + f": a frame scoring below **{rule.threshold:.4f}** is answered `unknown`; the threshold"
        f" accepts {rule.accept:.0%} of the validation frames."
    )
    if rule.detector:
        lines += [
            "",
            "The detector is a logistic regression on eight scores of the head (knn similarities,"
            " softmax, energy, how strongly the trunk fires), trained with outlier exposure:"
            " training frames against photos of other things, from sources apart from the foreign"
            " photos below (docs/research/unknown.md). The labels are the head's, unchanged.",
        ]
    m = rule.measured
    if m is not None:
        lines += [
            "",
            f"On {m.n_foreign} foreign photos ({m.foreign}) against {m.n_in} validation frames:"
            f" AUROC **{m.auroc:.3f}**, **{m.foreign_accepted:.1%}** of the foreign photos accepted.",
            "",
            f"`{m.command}`",
        ]
    return "\n".join([*lines, ""])
