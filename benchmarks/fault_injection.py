"""Nothing lost, nothing let in (issue 7): the full fault-injection campaign behind README's Reliability table.

1. Crashes: chains of SIGKILLs at random points (mid-step, mid-validation, inside a checkpoint write at
   one of its three stages, or after a random wall time), each kill followed by a resume that may itself
   be killed, then `goodfit resume` to the end. A kill survives when the final run directory equals
   the uninterrupted run's bit for bit (weights of last and best, metrics.jsonl events, test metrics).
2. Corruptions: one bit flipped or the file cut at a random byte, in a random file (model/optimizer
   tensors or state.json) of a random checkpoint (last, prev, best); detected when loading refuses it.
   A few end to end: `last` damaged, resume falls back to `prev` and still ends bit-identical.
3. Hostile input: 2,000 generated inputs for each loader (tests/reliability/fuzz_targets.py); a
   traceback is any exception other than UserError.

    python benchmarks/fault_injection.py                  # >= 24 kills, 300 corruptions, 2,000 inputs per loader
    python benchmarks/fault_injection.py --quick          # a smoke run: 6 kills, 60 corruptions, 100 inputs
"""
from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reliability"))
import fuzz_targets  # noqa: E402
import reliability_harness as h  # noqa: E402

from goodfit.engine.checkpoint import CorruptCheckpoint, read_checkpoint  # noqa: E402
from goodfit.runner import resume  # noqa: E402


def crashes(root: Path, kills: int, rng: random.Random) -> dict:
    ref, counts = h.reference(root / "ref")
    print(f"reference: {counts['step']} steps, {counts['validation']} eval-mode forwards, "
          f"{counts['checkpoint']} checkpoint writes", flush=True)
    tried = survived = chains = missed = 0
    by_kind: dict[str, list[int]] = {}
    while tried < kills:
        chains += 1
        out = root / f"chain{chains}"
        args = ["train", h.RECIPE, *h.set_args(), "-q", "--out", out]
        landed = []
        for depth in range(3):  # up to 3 kills in a row: the train process, then resumes
            done = h.resume_point_step(h.only_run(out)) if depth else 0
            point = h.random_point(rng, counts, done)
            if h.killed(args, point) != -signal.SIGKILL:
                missed += 1
                break
            if not list(out.glob(f"{h.RECIPE}/*/recipe.yaml")):
                missed += 1  # before the run directory existed: nothing to resume (not a mid-training kill)
                shutil.rmtree(out, ignore_errors=True)
                break
            landed.append(point)
            args = ["resume", h.only_run(out), "-q"]
            if rng.random() < 0.5:
                break
        if not landed:
            continue
        run_dir = h.only_run(out)
        final = h.resume_cli(run_dir) if not (run_dir / "test.json").exists() else None
        ok = (final is None or final.returncode == 0) and h.differences(ref.dir, run_dir) == []
        tried += len(landed)
        survived += len(landed) if ok else 0
        for p in landed:
            kind = p.split(":")[0] + (f":{p.split(':')[2]}" if p.startswith("checkpoint") else "")
            by_kind.setdefault(kind, [0, 0])[0] += ok
            by_kind[kind][1] += 1
        print(f"  chain {chains}: {' -> '.join(landed)} -> resume: {'identical' if ok else 'DIFFERENT'}"
              + (f" ({final.stderr.strip()[-300:]})" if final is not None and final.returncode else ""), flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return {"tried": tried, "survived": survived, "chains": chains, "missed": missed, "by_kind": by_kind}


def corruptions(root: Path, injections: int, end_to_end: int, rng: random.Random) -> dict:
    import goodfit

    crashed = root / "crashed"
    ref, _ = h.reference(root / "ref2")

    class Stop(Exception):
        pass

    class StopAt:
        def on_step_end(self, trainer, state, loss):
            if state.step == 20:
                raise Stop

    try:
        goodfit.run(h.RECIPE, h.OVERRIDES, out=crashed, progress=False, callbacks=[StopAt()])
    except Stop:
        pass
    base = h.only_run(crashed)
    detected = 0
    for i in range(injections):
        case = root / "case"
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(base, case)
        folder = case / "checkpoints" / rng.choice(["last", "prev", "best"])
        victim = folder / rng.choice(["model.safetensors", "optimizer.safetensors", "state.json"])
        (h.flip_bit if rng.random() < 0.5 else h.truncate)(victim, rng)
        try:
            read_checkpoint(folder)
        except CorruptCheckpoint:
            detected += 1
        else:
            print(f"  NOT DETECTED: {victim}", flush=True)
    fallbacks = 0
    for i in range(end_to_end):
        case = root / f"e2e{i}"
        shutil.copytree(base, case)
        victim = case / "checkpoints" / "last" / rng.choice(["model.safetensors", "optimizer.safetensors", "state.json"])
        (h.flip_bit if i % 2 else h.truncate)(victim, rng)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            resume(case, progress=False)
        warned = any("falling back" in str(w.message) for w in said)
        fallbacks += warned and h.differences(ref.dir, case) == []
    return {"injected": injections, "detected": detected, "e2e": end_to_end, "e2e_ok": fallbacks}


def fuzz(examples: int) -> dict:
    counter: dict[str, int] = {}
    failures = {}
    for name, prop in fuzz_targets.properties(examples, counter).items():
        start = time.perf_counter()
        try:
            prop()
        except Exception as e:  # noqa: BLE001 - a falsified property: report it, go on
            failures[name] = f"{type(e).__name__}: {str(e)[:300]}"
        print(f"  {name}: {counter.get(name, 0)} inputs, {time.perf_counter() - start:.1f}s"
              + (f"  FAILED {failures[name]}" if name in failures else ""), flush=True)
    return {"inputs": counter, "tracebacks": len(failures), "failures": failures}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=24)
    ap.add_argument("--corruptions", type=int, default=300)
    ap.add_argument("--fuzz", type=int, default=2000, help="generated inputs per loader")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.kills, a.corruptions, a.fuzz = 6, 60, 100
    torch.set_num_threads(1)
    rng = random.Random(a.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="goodfit-faults-") as tmp:
        root = Path(tmp)
        print(f"1. crashes: SIGKILL chains on {h.RECIPE} ({' '.join(h.OVERRIDES)})", flush=True)
        c = crashes(root, a.kills, rng)
        print("2. corruptions", flush=True)
        k = corruptions(root, a.corruptions, 6 if not a.quick else 2, rng)
        print(f"3. hostile input: {a.fuzz} generated inputs per loader", flush=True)
        f = fuzz(a.fuzz)
    print()
    print("| check | result |")
    print("|---|---|")
    print(f"| SIGKILL at random points, then `goodfit resume`: final weights bit-identical | "
          f"{c['survived']} / {c['tried']} kills survived ({c['chains']} chains) |")
    kinds = ", ".join(f"{kind} {ok}/{n}" for kind, (ok, n) in sorted(c["by_kind"].items()))
    print(f"| ... by kill point | {kinds} |")
    print(f"| corrupted checkpoint file (bit flip / truncation) detected by checksum | "
          f"{k['detected']} / {k['injected']} |")
    print(f"| `last` corrupted: resume falls back to `prev`, ends bit-identical | {k['e2e_ok']} / {k['e2e']} |")
    total = sum(f["inputs"].values())
    print(f"| hostile inputs (recipe mappings, YAML, --set, CSV, NPZ, run directories) | {total:,} tried, "
          f"tracebacks: {f['tracebacks']} |")
    print(f"\n({'; '.join(f'{n}: {v}' for n, v in f['inputs'].items())}); kills that landed before the run "
          f"directory existed or after training ended (not counted): {c['missed']}; "
          f"{time.perf_counter() - start:.0f}s, torch threads 1")
    bad = c["survived"] != c["tried"] or k["detected"] != k["injected"] or k["e2e_ok"] != k["e2e"] or f["tracebacks"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
