"""The `goodfit` command line (typer + rich). Heavy imports (torch) happen inside commands,
so `goodfit --help` answers fast.

Exit codes: 0 success; 2 user error (one message + hint, no traceback); 3 the run failed
for a training reason; 1 a bug or a lab whose claim did not hold.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from goodfit import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="goodfit: train PyTorch models to a good fit, and see why.")
lab_app = typer.Typer(no_args_is_help=True, help="The executable handbook: one lab per question.")
app.add_typer(lab_app, name="lab")
out = Console()
err = Console(stderr=True)


def _fail(e: Exception) -> None:
    from goodfit.errors import GoodfitError

    if isinstance(e, GoodfitError):
        err.print(f"[bold red]error:[/] {getattr(e, 'message', str(e))}", highlight=False, soft_wrap=True)
        hint = getattr(e, "hint", None)
        if hint:
            err.print(f"[yellow]hint:[/] {hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code)
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        # the disk filled up or became read-only mid-run: the user's environment, not a bug
        err.print(f"[bold red]error:[/] cannot write {e.filename or 'a file'}: {e.strerror}", highlight=False, soft_wrap=True)
        err.print("[yellow]hint:[/] free space or fix permissions, then `goodfit resume RUN_DIR`: the checkpoints on "
                  "disk are intact", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    raise e


def _version(value: bool) -> None:
    if value:
        out.print(f"goodfit {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")) -> None:
    """goodfit: train PyTorch models to a good fit, and see why."""


def _print_summary(run) -> None:
    from rich.table import Table

    out.print("[bold]test split[/] (evaluated once, locked):")
    table = Table(show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in (run.test or {}).items():
        table.add_row(k, f"{v:.4f}")
    out.print(table)
    st = run.state
    reason = {"early_stopping": "early stopping"}.get(st.stop_reason or "", "all epochs done")
    out.print(f"epochs run: {st.epoch} ({reason}); best epoch: {run.best_epoch}; "
              f"training time: {sum(h['train_time'] for h in st.history):.1f}s", highlight=False)
    out.print(f"run directory: {run.dir}", highlight=False)
    if run.diagnosis is not None:
        _print_diagnosis(run.diagnosis)


_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def _print_diagnosis(diagnosis, show_info: bool = True) -> None:
    """The doctor's verdict, then each finding: severity, id, where, message, evidence and the first fix."""
    style = {"good_fit": "bold green", "failed": "bold red"}.get(diagnosis.verdict, "bold yellow")
    out.print(f"[bold]doctor:[/] verdict [{style}]{diagnosis.verdict}[/]", highlight=False)
    for f in diagnosis.findings:
        if f.severity == "info" and (not show_info or f.id == "good_fit"):
            continue
        where = ", ".join(x for x in (f"epoch {f.epoch}" if f.epoch is not None else "",
                                      f"step {f.step}" if f.step is not None else "",
                                      f"layer {f.layer}" if f.layer else "") if x)
        sev = _SEVERITY_STYLE[f.severity]
        out.print(f"  [{sev}]{f.severity:<7}[/] [bold]{f.id}[/]" + (f" ({where})" if where else ""), highlight=False)
        out.print(f"           {f.message}", highlight=False, markup=False)
        shown = {k: v for k, v in f.evidence.items() if not isinstance(v, (list, dict))}
        if shown and f.severity != "info":
            ev = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
            out.print(f"           evidence: {ev}", highlight=False, markup=False, style="dim")
        patch = next((p.get("recipe_patch") for p in f.prescription if p.get("recipe_patch")), None)
        if patch and f.severity != "info":
            sets = " ".join(f"--set {k}={v}" for k, v in patch.items())
            out.print(f"           fix: {sets}", highlight=False, markup=False, style="cyan")
    for r in getattr(diagnosis, "repairs", []) or []:
        out.print(f"  [cyan]repaired[/] {r['id']} at step {r['step']}: {r['action']}", highlight=False)


@app.command()
def doctor(run_dir: Path = typer.Argument(..., help="A run directory written by `goodfit train`."),
           as_json: bool = typer.Option(False, "--json", help="Print diagnosis JSON (DESIGN §1.6) instead."),
           fix: bool = typer.Option(False, "--fix", help="Write the recipe with the prescriptions applied."),
           output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                 help="With --fix: where to write (default RUN_DIR/recipe.fixed.yaml).")) -> None:
    """The diagnosis of a run, re-derived from its files; --fix writes the repaired recipe."""
    try:
        import json

        from goodfit.doctor.rederive import diagnose_run

        diagnosis = diagnose_run(run_dir)
        if as_json:
            print(json.dumps(diagnosis.to_json(), indent=2))
        else:
            _print_diagnosis(diagnosis)
        if fix:
            from goodfit.doctor.fix import write_fixed_recipe

            target, patch = write_fixed_recipe(run_dir, diagnosis, output)
            if patch:
                out.print(f"wrote {target} with " + " ".join(f"--set {k}={v}" for k, v in patch.items()), highlight=False)
            else:
                out.print("nothing to fix in the recipe (no warning with a recipe patch)", highlight=False)
    except Exception as e:  # noqa: BLE001
        _fail(e)


@app.command()
def train(recipe: Optional[str] = typer.Argument(None, help="YAML path or built-in recipe name (default: digits-cnn)."),
          set_: List[str] = typer.Option([], "--set", help="Override a key: --set optimizer.lr=0.001 (repeatable)."),
          out_dir: Path = typer.Option(Path("runs"), "--out", help="Root folder of run directories."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output.")) -> None:
    """Train, validate, early-stop, checkpoint, then evaluate the test split once."""
    try:
        from goodfit.runner import run

        result = run(recipe, set_, out=out_dir, progress=not quiet, console=err)
    except Exception as e:  # noqa: BLE001 - mapped to exit codes, bugs re-raised
        _fail(e)
    _print_summary(result)


@app.command()
def resume(run_dir: Path = typer.Argument(..., help="A run directory written by `goodfit train`."),
           quiet: bool = typer.Option(False, "--quiet", "-q")) -> None:
    """Continue an interrupted run exactly where its last checkpoint left it."""
    try:
        from goodfit.runner import resume as do_resume

        result = do_resume(run_dir, progress=not quiet, console=err)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    _print_summary(result)


@app.command()
def evaluate(run_dir: Path = typer.Argument(..., help="A run directory."),
             split: str = typer.Option("val", "--split", help="val or test (test is locked after one evaluation)."),
             checkpoint: str = typer.Option("best", "--checkpoint", help="best or last."),
             force: bool = typer.Option(False, "--force", help="Evaluate the locked test split again (recorded).")) -> None:
    """Metrics of a saved model."""
    try:
        from goodfit.runner import evaluate_run

        metrics = evaluate_run(run_dir, split, checkpoint, force)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    for k, v in metrics.items():
        out.print(f"{split}_{k}: {v:.6g}", highlight=False)


@app.command("lr-find")
def lr_find(recipe: Optional[str] = typer.Argument(None, help="YAML path or built-in recipe name (default: digits-cnn)."),
            set_: List[str] = typer.Option([], "--set", help="Override a key: --set train.batch_size=32 (repeatable)."),
            start_lr: float = typer.Option(1e-6, "--start-lr", help="First LR of the exponential sweep."),
            end_lr: float = typer.Option(1.0, "--end-lr", help="Last LR of the sweep (it stops earlier on divergence)."),
            steps: Optional[int] = typer.Option(None, "--steps", help="Sweep length in steps (default: one epoch)."),
            rule: str = typer.Option("minimum_capped", "--rule", help="Suggestion rule: minimum_capped (minimum, "
                                     "capped where doubling the step stops lowering the val loss), minimum (the "
                                     "smoothed loss's minimum / 10), steepest, valley or doubling."),
            plot: Path = typer.Option(Path("lr_find.png"), "--plot", help="Where to save the curve (PNG)."),
            apply: bool = typer.Option(False, "--apply", help="Write the recipe with optimizer.lr = the suggestion."),
            output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                  help="With --apply: where to write (default: the recipe file "
                                                       "itself, or ./NAME.yaml for a built-in).")) -> None:
    """LR range test: sweep the LR over at most one epoch, plot the loss, suggest an LR."""
    try:
        from goodfit.find_lr import apply_lr, lr_find as find
        from goodfit.recipe import builtin_recipes

        result = find(recipe, set_, start_lr=start_lr, end_lr=end_lr, steps=steps, rule=rule, plot=plot)
        out.print(f"swept {result.steps} steps ({result.steps / result.steps_per_epoch:.2f} epoch) from "
                  f"{result.lrs[0]:.2g} to {result.lrs[-1]:.2g}"
                  + (" (stopped: the loss diverged)" if result.stopped_early else ""), highlight=False)
        others = ", ".join(f"{k} {v:.3g}" for k, v in result.suggestions.items() if k != rule)
        out.print(f"[bold]suggested optimizer.lr: {result.suggestion:.3g}[/] (rule: {rule}; {others})", highlight=False)
        out.print(f"plot: {plot}", highlight=False)
        if apply:
            name = recipe or "digits-cnn"
            target = output or (Path(name) if name not in builtin_recipes() else Path(f"{name}.yaml"))
            written = apply_lr(recipe, set_, result.suggestion, target)
            out.print(f"wrote {written} with optimizer.lr = {result.suggestion:.3g}", highlight=False)
    except Exception as e:  # noqa: BLE001
        _fail(e)


@app.command()
def recipes() -> None:
    """List the built-in recipes."""
    from goodfit.recipe import DEFAULT_RECIPE, describe_builtins

    for name, line in describe_builtins():
        mark = " (default)" if name == DEFAULT_RECIPE else ""
        out.print(f"[bold]{name:<20}[/]{line}{mark}", highlight=False)


@app.command("batch-size")
def batch_size(recipe: str = typer.Argument(..., help="YAML path or built-in recipe name."),
               set_: List[str] = typer.Option([], "--set", help="Override a key: --set train.batch_size=32 (repeatable)."),
               budget_mb: Optional[float] = typer.Option(None, "--budget-mb", help="Memory budget in MB (default: "
                                                         "free GPU memory, or 25% of the available RAM)."),
               warmup_steps: int = typer.Option(200, "--warmup-steps", help="Also measure the noise scale after this "
                                                "many training steps (on a copy); 0: at initialization only."),
               draws: int = typer.Option(64, "--draws", help="Mini-batches drawn per batch size."),
               apply: bool = typer.Option(False, "--apply", help="Write the recipe with the recommended batch size "
                                          "and LR."),
               output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                     help="With --apply: where to write (default: the recipe file "
                                                          "itself, or ./NAME.yaml for a built-in).")) -> None:
    """Gradient noise scale, largest batch that fits, suggested batch size and scaled LR."""
    from rich.table import Table

    try:
        from goodfit.optim.batch_size import MIN_STEPS_PER_EPOCH, apply_recommendation, recommend
        from goodfit.recipe import builtin_recipes

        r = recommend(recipe, set_, budget_mb=budget_mb, draws=draws, warmup_steps=warmup_steps)
        written = None
        if apply:
            target = output or (Path(recipe) if recipe not in builtin_recipes() else Path(f"{recipe}.yaml"))
            written = apply_recommendation(recipe, set_, r, target)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    n0, f = r.noise, r.fit
    table = Table(title=f"batch size for {recipe}: {r.train_size} training examples; noise from |G_B|² at "
                        f"B = {n0.b_small} and {n0.b_big}, {n0.draws} draws each")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for label, n in [("at init", r.noise), (f"after {r.warmup_steps} steps", r.noise_warm)]:
        if n is not None:
            table.add_row(f"noise scale B_simple = tr Σ/|G|², {label}",
                          f"{n.b_simple:.4g}  ({n.trace_cov:.3g}/{n.grad_sq:.3g})")
    table.add_row("critical batch B_crit ≈ B_simple", f"{r.critical_batch:.4g}")
    table.add_row(f"largest batch in {f.budget_bytes / 2**20:.4g} MB ({f.method})",
                  f"{f.batch_size}" + (" (all of train)" if f.capped else ""))
    if f.bytes_per_sample == f.bytes_per_sample:  # not nan: the saved-tensor estimate
        table.add_row("  memory: fixed + per example",
                      f"{f.fixed_bytes / 2**20:.3g} MB + {f.bytes_per_sample / 2**10:.3g} KB")
    table.add_row(f"largest batch with ≥ {MIN_STEPS_PER_EPOCH} steps/epoch", f"{r.max_by_steps}")
    table.add_row(f"recipe batch, LR ({r.optimizer})", f"{r.base_batch}, {r.base_lr:.4g}")
    table.add_row("recommended batch", f"{r.batch_size}")
    table.add_row(f"recommended LR ({r.rule} rule)", f"{r.lr:.4g}")
    out.print(table)
    out.print(f"rule: {r.rule_reason}.", highlight=False, soft_wrap=True)
    patch = " ".join(f"--set {k}={v:g}" for k, v in r.recipe_patch.items())
    out.print(f"[bold]recommendation:[/] {patch}  ({r.reason})", highlight=False, soft_wrap=True)
    if written is not None:
        out.print(f"wrote {written} with train.batch_size = {r.batch_size}, optimizer.lr = "
                  f"{r.recipe_patch['optimizer.lr']:g}", highlight=False)


@lab_app.command("list")
def lab_list() -> None:
    """The labs: handbook id and question."""
    from goodfit.labs import all_labs

    for lab in all_labs():
        out.print(f"[bold]{lab.id:<8}[/]{lab.title}", highlight=False)


@lab_app.command("run")
def lab_run(ids: List[str] = typer.Argument(None, help="Lab ids, e.g. 1.1.3"),
            all_: bool = typer.Option(False, "--all", help="Run every lab."),
            quick: bool = typer.Option(False, "--quick", help="Small, fast versions (what the tests run)."),
            out_dir: Path = typer.Option(Path("lab_out"), "--out", help="Where figures and lab runs go."),
            docs: Optional[Path] = typer.Option(None, "--docs", help="Write the handbook page DIR/<id>.md.")) -> None:
    """Run labs: each prints its answer, measures, asserts its claim and saves its figures."""
    try:
        from goodfit.labs import run_labs, select

        labs = select(ids or [], all_)
        results = run_labs(labs, quick=quick, out=out_dir, docs=docs, console=out)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    failed = [r.lab.id for r in results if not r.passed]
    if failed:
        err.print(f"[bold red]claims that did not hold:[/] {', '.join(failed)}")
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
