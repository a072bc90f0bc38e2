"""The executable handbook: every registered lab holds its claim in quick mode, and the `goodfit lab` commands work.

Labs are found through `goodfit.labs.all_labs()`, so a lab added later is tested here without editing this file.
"""
from __future__ import annotations

import re

import pytest

from goodfit.labs import all_labs, run_lab

LABS = all_labs()


def _report(result) -> str:
    """What went wrong in a lab: its traceback, or the claims that did not hold, with the measured numbers."""
    lines = [f"lab {result.lab.id} ({result.lab.title}) failed after {result.seconds:.1f}s"]
    if result.error:
        lines += ["it crashed:", result.error]
    if not result.ctx.checks:
        lines.append("it checked no claim at all")
    lines += [f"  claim failed: {claim}" + (f" ({detail})" if detail else "")
              for claim, ok, detail in result.ctx.checks if not ok]
    lines += [f"  measured {name} = {value}" for name, value in result.ctx.measurements]
    return "\n".join(lines)


def test_labs_are_registered_with_their_question_and_answer():
    ids = [lab.id for lab in LABS]
    assert len(ids) == len(set(ids)), f"duplicate lab ids: {ids}"
    assert {"1.1.1", "1.1.2", "1.1.3", "1.1.5"} <= set(ids)
    for lab in LABS:
        assert re.fullmatch(r"\d+(\.\d+)*", lab.id), lab.id
        assert lab.title and lab.answer.strip() and callable(lab.run)
        # the handbook keeps the original Chinese question next to the English rendering
        assert re.search(r"[\u4e00-\u9fff]", lab.question) and re.search(r"[A-Za-z]", lab.question), lab.id


@pytest.mark.parametrize("lab", LABS, ids=[lab.id for lab in LABS])
def test_lab_claim_holds_in_quick_mode(lab, tmp_path):
    result = run_lab(lab, quick=True, out=tmp_path)
    assert result.passed, _report(result)
    assert result.ctx.figures, f"lab {lab.id} saved no figure"
    for fig in result.ctx.figures:
        assert fig.is_file() and fig.suffix == ".png" and fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig


def test_lab_list_shows_every_lab(cli):
    code, output = cli("lab", "list")
    assert code == 0, output
    for lab in LABS:
        assert lab.id in output, output


def test_lab_run_writes_the_handbook_page_with_its_figure(cli, tmp_path):
    docs = tmp_path / "docs"
    code, output = cli("lab", "run", "1.1.3", "--quick", "--out", tmp_path / "out", "--docs", docs)
    assert code == 0, output
    assert "claim holds" in output
    page = docs / "1.1.3.md"
    assert page.is_file()
    text = page.read_text()
    assert text.startswith("# 1.1.3 ") and "## Claims" in text and "✗" not in text
    figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", text)
    assert figures, text
    for fig in figures:
        assert (docs / fig).is_file(), fig


def test_unknown_lab_exits_2_with_a_suggestion(cli, tmp_path):
    code, output = cli("lab", "run", "1.1.33", "--quick", "--out", tmp_path)
    assert code == 2, output
    assert "Traceback" not in output
    assert "no lab '1.1.33'" in output and "did you mean '1.1.3'" in output, output
