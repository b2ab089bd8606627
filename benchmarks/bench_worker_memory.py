"""Lab training steps per second in one thread, as a worker process runs them, with glibc's default
allocator settings and with `xl.core.workers.keep_freed_memory` (what every worker process does).

    python benchmarks/bench_worker_memory.py [--objectives dae,mt,mlm --steps 30 --repeats 3]

Each measurement is a fresh process (the allocator's state is per process); the two settings
alternate, so a machine that speeds up or slows down during the run affects both alike. Prints, per
objective, the median steps per second of each setting, their ratio, and the kernel time and page
faults per step, and whether both settings ended on the same loss (they must: only memory reuse changes).
The lab preset's models and batches; the first run builds the lab tokenizer (cached in XL_CACHE).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

WARMUP = 5  # steps before the clock starts: the allocator settles, lazy initialisation is done


def child(objective: str, steps: int, keep: bool) -> dict:
    import torch

    from xl.core import presets, workers
    from xl.training.lab import _new_model, batch_of
    from xl.training.loop import at_labels

    torch.set_num_threads(1)
    if keep:
        workers.keep_freed_memory()
    cfg = presets.config("lab")
    common = dict(steps=steps + WARMUP, batch_size=batch_of(objective, cfg), max_length=cfg["model_max_length"],
                  seed=0)
    torch.manual_seed(0)
    model, _, task = _new_model(objective, "m2m" if objective == "mt" else None, cfg, common)
    model = at_labels(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(i: int) -> float:
        loss = model(**task.batch(i)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    for i in range(WARMUP):
        step(i)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(WARMUP, WARMUP + steps):
        loss = step(i)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {"steps_per_s": steps / wall, "sys_per_step": (after.ru_stime - before.ru_stime) / steps,
            "faults_per_step": (after.ru_minflt - before.ru_minflt) / steps, "loss": loss}


def measure(objective: str, steps: int, keep: bool) -> dict:
    args = [sys.executable, __file__, "--child", objective, "--steps", str(steps)] + (["--keep"] if keep else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default="dae,mt,mlm")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.keep)))
        return
    print(f"{'objective':<10}{'default steps/s':>16}{'kept steps/s':>14}{'ratio':>7}{'sys ms/step':>14}"
          f"{'faults/step':>16}  same loss")
    for objective in args.objectives.split(","):
        runs = {False: [], True: []}
        for _ in range(args.repeats):
            for keep in (False, True):
                runs[keep].append(measure(objective, args.steps, keep))

        def median(key: str) -> dict:
            return {keep: statistics.median(r[key] for r in rs) for keep, rs in runs.items()}

        rate, faults = median("steps_per_s"), median("faults_per_step")
        sys_ms = {keep: 1000 * s for keep, s in median("sys_per_step").items()}
        same = len({r["loss"] for rs in runs.values() for r in rs}) == 1
        print(f"{objective:<10}{rate[False]:>16.2f}{rate[True]:>14.2f}{rate[True] / rate[False]:>7.2f}"
              f"{sys_ms[False]:>7.0f} ->{sys_ms[True]:>4.0f}{faults[False]:>8.0f} ->{faults[True]:>5.0f}  {same}")


if __name__ == "__main__":
    main()
