"""How well does the training doctor diagnose? A public benchmark of faults caused on purpose.

Every fault class (the finding ids of DESIGN §1.6 and the code faults goodfit.Doctor finds in
hand-written loops) is caused on two datasets (digits, MNIST-1D) with three seeds, next to
healthy controls (benchmarks/doctor_suite/cases.py says how each is caused). Each case has one
expected label; the doctor detects it when it reports that id at warning/error severity, and
any other warning is a false positive unless the fault implies it (doctor_suite/scoring.py).

Seeds 0 and 1 are the calibration split (THRESHOLDS in goodfit/doctor/rules.py were tuned on
them); seed 2 is held out: its numbers are the ones to quote. Printed per split: per-class
precision and recall, macro F1, the false-alarm rate on healthy runs and the median detection
step as a fraction of the budget; then auto-repair success: the repairable classes rerun with
doctor.auto_repair=true and 1.5x the budget; success = the best validation accuracy reaches 95%
of the healthy twin's (the same run with its fault undone, e.g. the recipe's LR or an init matched
to the activation, same seed, 1x the budget), judged from run.history, not by the doctor. A repair
can fix the fault but not the model, so the twin is the yardstick; the dataset's base recipe (a
different model for some faults) is printed next to it, and the same rerun without repair is the
baseline. Last, the doctor's overhead: step time (and whole training loop) of the default recipes
with doctor.enabled true vs false, interleaved repeats, ratio of the medians.

    python benchmarks/doctor_eval.py [--quick] [--jobs N] [--out DIR] [--only KEY ...]
    python benchmarks/doctor_eval.py --rescore DIR/results.json   # current rules on the saved runs, no training

torch threads = 1 in every run.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doctor_suite import ACCEPTABLE, REPAIRABLE, healthy_reference, healthy_twin, score, suite  # noqa: E402
from doctor_suite.scoring import detection_fraction  # noqa: E402
from doctor_suite.execute import as_sets, best_accuracy, rederive, run_case  # noqa: E402

CALIBRATION, TEST = (0, 1), (2,)
REPAIR_BUDGET, REPAIR_TARGET = 1.5, 0.95


def _work(args):
    case, workdir, extra, tag = args
    torch.set_num_threads(1)
    return run_case(case, Path(workdir), extra, tag)


def run_all(jobs: list, n_jobs: int, log) -> list[dict]:
    results = []
    if n_jobs <= 1:
        for job in jobs:
            results.append(_work(job))
            log(results[-1])
        return results
    with ProcessPoolExecutor(n_jobs) as pool:
        for r in pool.map(_work, jobs):
            results.append(r)
            log(r)
    return results


def _line(r: dict) -> None:
    shown = " ".join(f"{f['id']}:{f['severity'][0]}" for f in r["findings"] if f["severity"] != "info") or "-"
    ok = "ok " if (r["label"] in shown) or (r["label"] == "healthy" and shown == "-") else "-- "
    if "+" in r["name"]:  # a repair rerun: judged by its accuracy below, not by its findings
        ok = "   "
    print(f"  {ok}{r['name']:<42} {r['seconds']:5.1f}s  {shown}", flush=True)


def print_scores(title: str, results: list[dict]) -> dict:
    s = score(results)
    print(f"\n## {title}: {sum(r['label'] != 'healthy' for r in results)} fault cases, {s['healthy']} healthy\n")
    print("| class | cases | detected | false positives | precision | recall | F1 | detected at (median, % of budget) |")
    print("|---|---|---|---|---|---|---|---|")
    for c, v in sorted(s["per_class"].items()):
        recall = f"{v['recall']:.2f}" if v["cases"] else "-"
        when = [d for r in results if r["label"] == c for d in [detection_fraction(r)] if d is not None]
        at = f"{statistics.median(when):.1%}" if when else "-"
        print(f"| {c} | {v['cases']} | {v['tp']} | {v['fp']} | {v['precision']:.2f} | {recall} | {v['f1']:.2f} | {at} |")
    print(f"\nmacro F1 {s['macro_f1']:.3f}; false alarms on healthy runs {s['false_alarms']}/{s['healthy']} "
          f"({s['false_alarm_rate']:.1%}); median detection step {s['median_detection']:.1%} of the budget")
    for name, ids in s["missed"]:
        print(f"  missed: {name} (reported {', '.join(ids) or 'nothing'})")
    for name, ids in s["confusions"]:
        print(f"  false positive on {name}: {', '.join(ids)}")
    for name, ids in s["alarm_cases"]:
        print(f"  false alarm on {name}: {', '.join(ids)}")
    return s


def repairs(results: list[dict], workdir: Path, n_jobs: int, baseline: bool, log) -> list[dict]:
    """Rerun the repairable cases with auto-repair (and, as the baseline, without) at 1.5x the budget, and train
    each one's healthy twin (the fault undone) at 1x: the yardstick."""
    from doctor_suite.cases import FAULTS

    todo = [r for r in results if r["key"] in REPAIRABLE]
    jobs = []
    for r in todo:
        case = FAULTS[r["key"]](r["dataset"], r["seed"])
        epochs = math.ceil(REPAIR_BUDGET * int(case.overrides["train.epochs"]))
        jobs.append((case, str(workdir), {"doctor.auto_repair": True, "train.epochs": epochs}, "+repair"))
        if baseline:
            jobs.append((case, str(workdir), {"train.epochs": epochs}, "+longer"))
        jobs.append((healthy_twin(case), str(workdir), None, ""))
    return run_all(jobs, n_jobs, log)


def print_repairs(title: str, reruns: list[dict], references: dict) -> dict:
    """Success against the healthy twin (the target's yardstick) and, for comparison, the dataset's base recipe."""
    twins = {(r["key"].split(":")[0], r["dataset"], r["seed"]): best_accuracy(r) for r in reruns
             if r["key"].endswith(":twin")}
    reruns = [r for r in reruns if not r["key"].endswith(":twin")]
    rows, out = [], {}
    for r in reruns:
        r["twin"] = twins[(r["key"], r["dataset"], r["seed"])]
        r["reference"] = references[(r["dataset"], r["seed"])]
        r["success"] = best_accuracy(r) >= REPAIR_TARGET * r["twin"]
        r["success_vs_base"] = best_accuracy(r) >= REPAIR_TARGET * r["reference"]
    print(f"\n## auto-repair, {title}: best val accuracy within {REPAIR_BUDGET}x the budget >= "
          f"{REPAIR_TARGET:.0%} of the healthy twin's (the same run with its fault undone, 1x the budget)\n")
    print("| class | repaired: success | without repair (same budget) | vs the base recipe instead | repairs made |")
    print("|---|---|---|---|---|")
    for key in REPAIRABLE:
        fixed = [r for r in reruns if r["key"] == key and r["name"].endswith("+repair")]
        plain = [r for r in reruns if r["key"] == key and r["name"].endswith("+longer")]
        if not fixed:
            continue
        made = sorted({x["id"] for r in fixed for x in r["repairs"]})
        rows.append(fixed)
        without = f"{sum(r['success'] for r in plain)}/{len(plain)}" if plain else "-"
        print(f"| {key} | {sum(r['success'] for r in fixed)}/{len(fixed)} | {without} | "
              f"{sum(r['success_vs_base'] for r in fixed)}/{len(fixed)} | {', '.join(made) or 'none'} |")
        for r in fixed:
            print(f"    {r['name']}: best val acc {best_accuracy(r):.3f} vs twin {r['twin']:.3f} (base recipe "
                  f"{r['reference']:.3f}){' (failed: diverged)' if r['failed'] else ''}; repairs: "
                  f"{'; '.join(x['action'] + ' @' + str(x['step']) for x in r['repairs']) or 'none'}")
    fixed = [r for rs in rows for r in rs]
    n = len(fixed)
    out["success_rate"] = sum(r["success"] for r in fixed) / n if n else float("nan")
    out["success_rate_vs_base"] = sum(r["success_vs_base"] for r in fixed) / n if n else float("nan")
    plain = [r for r in reruns if r["name"].endswith("+longer")]
    out["baseline_rate"] = sum(r["success"] for r in plain) / len(plain) if plain else float("nan")
    print(f"\nrepair success {out['success_rate']:.0%} ({sum(r['success'] for r in fixed)}/{n}) against the healthy "
          f"twins; {out['success_rate_vs_base']:.0%} against the base recipe"
          + (f"; without repair {out['baseline_rate']:.0%}" if plain else ""))
    return out


OVERHEAD_RUNS = [("digits-mlp", {}), ("digits-cnn", {}), ("mnist1d-cnn", {"train.epochs": 8})]


def overhead(repeats: int, workdir: Path) -> dict:
    """The doctor's cost at its default cadence on the default recipes (mnist1d-cnn cut to 8 epochs): step time (the
    summed train_time of the epochs: forward, backward, update and the step callbacks) and the whole training loop
    (validation, checkpoints and the end-of-run diagnosis too), doctor on vs off, interleaved, ratio of the medians.
    Pre-flight data checks run before the loop and are timed separately."""
    import goodfit

    torch.set_num_threads(1)
    out = {}
    for recipe, extra in OVERHEAD_RUNS:
        steps, loops = {True: [], False: []}, {True: [], False: []}
        for i in range(repeats + 1):  # the first round warms caches up and is not counted
            for enabled in ((False, True) if i % 2 else (True, False)):
                over = {"train.threads": 1, "train.checkpoint_interval": 1e9, "seed": 0, "doctor.enabled": enabled, **extra}
                run = goodfit.run(recipe, as_sets(over), out=workdir / "overhead", progress=False)
                if i:
                    steps[enabled].append(sum(h["train_time"] for h in run.history))
                    loops[enabled].append(sum(s for name, s in run.stages if name.startswith("training loop")))
        preflight = sum(s for name, s in run.stages if name == "run directory")  # doctor on last: includes pre-flight

        def ratio(d):
            return statistics.median(d[True]) / statistics.median(d[False])

        pairs = sorted(a / b for a, b in zip(steps[True], steps[False]))
        out[recipe] = {"step": ratio(steps), "loop": ratio(loops), "min": pairs[0], "max": pairs[-1],
                       "epochs": len(run.history), "step_ms": 1e3 * statistics.median(steps[False]) / max(1, run.history[-1]["step"])}
        print(f"  {recipe} {extra or ''}: step time {out[recipe]['step']:.3f}x with the doctor (per pair "
              f"{pairs[0]:.3f}-{pairs[-1]:.3f}; {out[recipe]['step_ms']:.2f} ms a step, {len(run.history)} epochs); "
              f"the whole training loop {out[recipe]['loop']:.3f}x; run directory + pre-flight checks {preflight:.2f}s",
              flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one seed (the held-out one), no repair baseline, 2 overhead repeats")
    p.add_argument("--seeds", type=int, nargs="*", help="default: 0 1 2 (0 1 calibration, 2 held out)")
    p.add_argument("--datasets", nargs="*", default=["digits", "mnist1d"])
    p.add_argument("--only", nargs="*", help="registry keys (fault ids, healthy or healthy:<variant>)")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (each one thread)")
    p.add_argument("--out", type=Path, help="where runs and results.json go (default: a temporary folder)")
    p.add_argument("--no-repair", action="store_true")
    p.add_argument("--no-overhead", action="store_true")
    p.add_argument("--overhead-repeats", type=int, default=9)
    p.add_argument("--rescore", type=Path, help="results.json of an earlier run: re-derive its diagnoses with the "
                                                "current rules from the saved run directories, then score")
    args = p.parse_args()
    torch.set_num_threads(1)
    workdir = args.out or Path(tempfile.mkdtemp(prefix="doctor_eval_"))
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds if args.seeds is not None else (list(TEST) if args.quick else [*CALIBRATION, *TEST])
    t0 = time.perf_counter()

    if args.rescore:
        results = [rederive(r) for r in json.loads(args.rescore.read_text())["results"]]
    else:
        cases = suite(seeds, args.datasets, args.only)
        print(f"{len(cases)} cases ({sum(c.label == 'healthy' for c in cases)} healthy), seeds {seeds}, "
              f"datasets {args.datasets}; runs in {workdir}", flush=True)
        results = run_all([(c, str(workdir), None, "") for c in cases], args.jobs, _line)
    t_suite = time.perf_counter() - t0

    summary = {}
    splits = [("calibration (seeds 0, 1)", [r for r in results if r["seed"] in CALIBRATION]),
              ("held out (seed 2)", [r for r in results if r["seed"] in TEST]),
              ("other seeds", [r for r in results if r["seed"] not in CALIBRATION + TEST])]
    for title, part in splits:
        if part:
            summary[title] = print_scores(title, part)

    print("\n## acceptable co-findings (a finding the expected fault causes is not a false positive)\n")
    for label, allowed in ACCEPTABLE.items():
        if allowed:
            print(f"- {label}: " + "; ".join(f"{k} ({why})" for k, why in allowed.items()))

    reruns = []
    if not args.no_repair and not args.rescore:
        references = {(r["dataset"], r["seed"]): best_accuracy(r) for r in results if r["key"] == "healthy:default"}
        missing = {(r["dataset"], r["seed"]) for r in results if r["key"] in REPAIRABLE} - set(references)
        if missing:
            refs = run_all([(healthy_reference(d, s), str(workdir), None, "") for d, s in sorted(missing)], args.jobs,
                           _line)
            references.update({(r["dataset"], r["seed"]): best_accuracy(r) for r in refs})
        print("\nrepair reruns:", flush=True)
        t = time.perf_counter()
        reruns = repairs(results, workdir, args.jobs, baseline=not args.quick, log=_line)
        for title, chosen in (("calibration (seeds 0, 1)", CALIBRATION), ("held out (seed 2)", TEST)):
            part = [r for r in reruns if r["seed"] in chosen]
            if part:
                summary[f"repair {title}"] = print_repairs(title, part, references)
        print(f"\nrepair reruns took {time.perf_counter() - t:.0f}s")

    if not args.no_overhead and not args.rescore:
        print(f"\n## overhead of the doctor (default cadence), {2 if args.quick else args.overhead_repeats} "
              "interleaved repeats\n", flush=True)
        summary["overhead"] = overhead(2 if args.quick else args.overhead_repeats, workdir)

    total = time.perf_counter() - t0
    cpu = sum(r.get("cpu_seconds", 0.0) for r in results + reruns)
    print(f"\nsuite {t_suite:.0f}s ({sum(r['seconds'] for r in results):.0f}s in runs); everything {total:.0f}s wall, "
          f"{cpu:.0f}s of CPU in the suite and repair runs (one thread each)")
    (workdir / "results.json").write_text(json.dumps({"results": results, "reruns": reruns, "summary": summary},
                                                     indent=1, default=str))
    print(f"results: {workdir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
