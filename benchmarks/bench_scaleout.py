"""Scale-out benchmark: local process pool against a Dask LocalCluster, and the cluster's per-task cost.

Measures, side by side in one run on this machine:

1. ``dicom2png`` throughput (images per second) on full-size (4096 x 3328)
   sample mammograms, with ``--workers N`` locally and on a LocalCluster of
   N single-threaded worker processes (the cluster started beforehand, as a
   running scheduler would be), checking that the PNGs are byte-identical;
   plus ``--scheduler local`` end to end, which includes starting the cluster.
2. The runner's own cost per task: a worker that does nothing, over 10,000
   tasks, inline, on the local pool, and on the cluster with batches of 200
   (the default cap) and of 1 (one cluster task per file).

Usage::

    python benchmarks/bench_scaleout.py                 # 4 patients = 8 full-size images, 2 workers
    python benchmarks/bench_scaleout.py --patients 10 --workers 4 --tasks 20000
    python benchmarks/bench_scaleout.py --data SAMPLE   # reuse a sample written with --full-size
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from csaws_tools.batch import Task, run_batch


def noop(task: Task) -> dict:
    """A worker that does nothing: what is left is the runner's own cost."""
    return {"status": "ok"}


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=4, help="full-size sample patients (2 images each)")
    parser.add_argument("--data", type=Path, default=None, help="an existing full-size sample folder")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="runs per mode; the best is reported")
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks for the overhead test")
    args = parser.parse_args()

    from distributed import LocalCluster

    from csaws_tools.dicom2png import convert
    from csaws_tools.sample import write_sample

    w = args.workers
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        tmp = Path(tmp)
        if args.data is None:
            t, info = timed(write_sample, tmp / "sample", full_size=True, n_train_patients=args.patients,
                            n_test_patients=0, workers=w)
            src = info.dicom_dir
            print(f"wrote {len(info.images)} full-size sample images in {t:.1f} s")
        else:
            src = args.data / "dicom"
        n_images = sum(1 for _ in src.rglob("*.dcm"))

        t_start, cluster = timed(LocalCluster, n_workers=w, threads_per_worker=1, processes=True,
                                 host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                                 scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
        address = cluster.scheduler_address
        try:
            print(f"\n== dicom2png, {n_images} images of 4096 x 3328, {w} workers (best of {args.repeat}) ==")
            best: dict[str, float] = {}
            outputs: dict[str, dict[str, bytes]] = {}
            for mode, scheduler in (("local pool", None), ("LocalCluster", address)):
                times = []
                for r in range(args.repeat):
                    out = tmp / f"out-{mode.replace(' ', '-')}-{r}"
                    t, result = timed(convert, src, out, workers=w, scheduler=scheduler, progress=False)
                    assert result.exit_code == 0, result.summary()
                    times.append(t)
                    outputs[mode] = pngs(out)
                best[mode] = min(times)
                print(f"{mode:<28s} {best[mode]:7.2f} s   {n_images / best[mode]:6.2f} images/s")
            t_e2e, result = timed(convert, src, tmp / "out-e2e", workers=w, scheduler="local", progress=False)
            assert result.exit_code == 0
            print(f"{'--scheduler local (+start)':<28s} {t_e2e:7.2f} s   {n_images / t_e2e:6.2f} images/s")
            same = outputs["local pool"] == outputs["LocalCluster"] == pngs(tmp / "out-e2e")
            print(f"LocalCluster start-up: {t_start:.2f} s; PNGs byte-identical across modes: {same}")
            print(f"ratio cluster / local throughput: {best['local pool'] / best['LocalCluster']:.3f}; "
                  f"per worker: {n_images / best['LocalCluster'] / w:.2f} images/s")

            n = args.tasks
            tasks = [Task(key=f"{i:07d}", source=f"in/{i:07d}.dcm") for i in range(n)]
            print(f"\n== runner overhead: no-op worker, {n} tasks ==")
            runs = [
                ("inline (workers=1)", dict(workers=1)),
                ("local pool, batch 1", dict(workers=w)),
                ("local pool, batch 200", dict(workers=w, batch_size=200)),
                ("cluster, batch 200", dict(scheduler=address, batch_size=200)),
                ("cluster, default batch", dict(scheduler=address)),
            ]
            per_task = {}
            for label, kw in runs:
                t, result = timed(run_batch, tasks, noop, manifest=None, progress=False, **kw)
                assert len(result.rows) == n
                per_task[label] = t / n
                print(f"{label:<28s} {t:7.2f} s   {1e6 * t / n:8.1f} us/task")
            small = min(n, 2000)
            t, result = timed(run_batch, tasks[:small], noop, manifest=None, progress=False, scheduler=address,
                              batch_size=1)
            per_task["cluster, batch 1"] = t / small
            print(f"{'cluster, batch 1':<28s} {t:7.2f} s   {1e6 * t / small:8.1f} us/task  ({small} tasks)")
            t_fixed = min(timed(run_batch, tasks[:1], noop, manifest=None, progress=False, scheduler=address)[0]
                          for _ in range(3))
            net = (per_task["cluster, batch 200"] * n - t_fixed) / n
            print(f"cluster fixed cost per run (connect, check workers, close): {t_fixed:.2f} s")
            print(f"cluster cost per file at batch 200, net of that: {1e6 * net:.1f} us "
                  f"(local pool at batch 200: {1e6 * per_task['local pool, batch 200']:.1f} us); "
                  f"one cluster task per file: {1e3 * per_task['cluster, batch 1']:.2f} ms per file")
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
