"""The executable handbook. A lab answers one handbook question by experiment: it prints our
answer, measures the phenomenon, asserts the claim, saves its figures, and can write its
handbook page. Each lab is a module `lab_<id with underscores>.py` defining `LAB`.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.markup import escape

from goodfit.errors import UserError


@dataclass
class Lab:
    id: str
    title: str
    question: str
    answer: str                      # our written answer (markdown; formulas where they exist)
    run: Callable[["LabContext"], None]
    uses: str = ""


@dataclass
class LabContext:
    """What a lab records: measurements, checked claims, tables, figures."""

    lab: Lab
    quick: bool
    out: Path
    console: Any = None
    measurements: list[tuple[str, Any]] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def log(self, text: str) -> None:
        self.notes.append(text)
        if self.console is not None:
            self.console.print(f"  {text}", highlight=False, markup=False)

    def measure(self, name: str, value: Any) -> Any:
        self.measurements.append((name, value))
        if self.console is not None:
            shown = f"{value:.6g}" if isinstance(value, float) else value
            self.console.print(f"  [cyan]{escape(name)}[/] = {escape(str(shown))}", highlight=False)
        return value

    def check(self, condition: bool, claim: str, detail: str = "") -> bool:
        ok = bool(condition)
        self.checks.append((claim, ok, detail))
        if self.console is not None:
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            self.console.print(f"  {mark} {escape(claim)}" + (f"  ({escape(detail)})" if detail else ""), highlight=False)
        return ok

    def table(self, title: str, headers: list[str], rows: list[list[Any]]) -> None:
        self.tables.append((title, headers, rows))
        if self.console is not None:
            from rich.table import Table

            t = Table(title=escape(title))
            for h in headers:
                t.add_column(escape(str(h)))
            for r in rows:
                t.add_row(*[escape(f"{c:.4g}" if isinstance(c, float) else str(c)) for c in r])
            self.console.print(t)

    def figure(self, fig, name: str) -> Path:
        import matplotlib.pyplot as plt

        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(path)
        if self.console is not None:
            self.console.print(f"  figure: {path}", highlight=False)
        return path


@dataclass
class LabResult:
    lab: Lab
    ctx: LabContext
    seconds: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.ctx.checks) and all(ok for _, ok, _ in self.ctx.checks)


def best_val_loss(recipe, overrides: dict, out: Path, at: str = "best") -> float:
    """Train a recipe with goodfit.run; its lowest (`at="best"`) or last (`at="final"`) validation loss,
    inf if it diverged. Grid sweeps over LRs should compare final losses: the lowest of many noisy
    epochs favours whichever LR has the noisiest curve."""
    import math

    from goodfit.errors import TrainingFailed
    from goodfit.runner import run

    try:
        history = run(recipe, overrides, out=out, progress=False).history
    except TrainingFailed:
        return math.inf
    if at == "final":
        last = history[-1]["val_loss"] if history else math.inf
        return last if math.isfinite(last) else math.inf
    return min((h["val_loss"] for h in history if math.isfinite(h["val_loss"])), default=math.inf)


def all_labs() -> list[Lab]:
    labs = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("lab_"):
            labs.append(importlib.import_module(f"{__name__}.{info.name}").LAB)
    return sorted(labs, key=lambda lab: [int(p) if p.isdigit() else p for p in lab.id.split(".")])


def select(ids: list[str], everything: bool) -> list[Lab]:
    labs = all_labs()
    if everything:
        return labs
    if not ids:
        raise UserError("name the labs to run, or pass --all", "see `goodfit lab list`")
    by_id = {lab.id: lab for lab in labs}
    chosen = []
    for i in ids:
        if i not in by_id:
            close = difflib.get_close_matches(i, list(by_id), n=1)
            raise UserError(f"no lab '{i}'", f"did you mean '{close[0]}'?" if close else "see `goodfit lab list`")
        chosen.append(by_id[i])
    return chosen


def run_lab(lab: Lab, *, quick: bool = False, out: str | Path = "lab_out", console=None) -> LabResult:
    """Run one lab; an exception inside it is a failed lab, reported with its traceback."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    ctx = LabContext(lab=lab, quick=quick, out=Path(out) / lab.id, console=console)
    start = time.perf_counter()
    error = None
    threads = torch.get_num_threads()  # labs may pin threads for tiny models; the process gets its own back
    try:
        lab.run(ctx)
    except Exception:  # noqa: BLE001 - a crashing lab is reported as failed, not hidden
        error = traceback.format_exc()
        if console is not None:
            console.print(error, highlight=False, markup=False, style="red")
    finally:
        torch.set_num_threads(threads)
    return LabResult(lab, ctx, time.perf_counter() - start, error)


def run_labs(labs: list[Lab], *, quick: bool = False, out: str | Path = "lab_out", docs: str | Path | None = None,
             console=None) -> list[LabResult]:
    results = []
    for lab in labs:
        if console is not None:
            console.rule(f"[bold]{lab.id}[/] {lab.title}")
            console.print(lab.answer.strip(), highlight=False, markup=False)
        result = run_lab(lab, quick=quick, out=out, console=console)
        if console is not None:
            verdict = "[green]claim holds[/]" if result.passed else "[red]claim failed[/]"
            console.print(f"  {verdict} ({result.seconds:.1f}s)")
        if docs is not None:
            write_page(result, Path(docs))
        results.append(result)
    return results


def _md_cell(v: Any) -> str:
    """A markdown table cell: numbers to 4 significant digits, pipes escaped."""
    return (f"{v:.4g}" if isinstance(v, float) else str(v)).replace("|", "\\|")


def write_page(result: LabResult, docs: Path) -> Path:
    """The handbook page docs/<id>.md: question, answer, measured numbers, claims, figures."""
    import shutil

    lab, ctx = result.lab, result.ctx
    docs.mkdir(parents=True, exist_ok=True)
    fig_dir = docs / "figures"
    lines = [f"# {lab.id} {lab.title}", "", f"> {lab.question}", "", lab.answer.strip(), "",
             f"## Measured ({'quick' if ctx.quick else 'full'} mode, {result.seconds:.1f}s)", "",
             f"Reproduce: `goodfit lab run {lab.id}{' --quick' if ctx.quick else ''}`", ""]
    if ctx.measurements:
        lines += ["| quantity | value |", "|---|---|"] + [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in ctx.measurements] + [""]
    for title, headers, rows in ctx.tables:
        lines += [f"**{title}**", "", "| " + " | ".join(map(_md_cell, headers)) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows] + [""]
    if ctx.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in ctx.notes] + [""]
    lines += ["## Claims", ""] + [f"- {'✓' if ok else '✗'} {claim}" + (f" ({d})" if d else "") for claim, ok, d in ctx.checks]
    if result.error:
        lines += ["", "The lab crashed:", "", "```", result.error.strip(), "```"]
    for fig in ctx.figures:
        fig_dir.mkdir(parents=True, exist_ok=True)
        target = fig_dir / f"{lab.id}-{fig.name}"
        shutil.copyfile(fig, target)
        lines += ["", f"![{fig.stem}](figures/{target.name})"]
    page = docs / f"{lab.id}.md"
    page.write_text("\n".join(lines) + "\n")
    return page
