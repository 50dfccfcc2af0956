"""Ray Data inference against the local runtime, side by side in one process.

Trains the CLI-default PatchCore and PaDiM on ``--category`` (``run_training``, as ``train``
does), exports each, then scores the category's test images (whole ``infer``: read, decode,
preprocess, engine) with the local runtime (``--threads`` ONNX Runtime threads) and on a local
Ray instance of ``--threads`` CPUs with 1 actor × ``threads`` CPUs and with ``threads`` actors
× 1 CPU. Ray runs are warmed once (actor start-up is reported apart). Also: records against the
local run, the overhead per image, and the driver's peak RSS while ``--rss-inputs`` inputs
stream through. Prints one JSON document.

    python benchmarks/bench_ray.py --root ../shared/data --category bsd_ballscrew --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C
from _rundir import timed_infer, train_cli_default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=C.REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--category", default="bsd_ballscrew")
    p.add_argument("--models", default="vision_patchcore,vision_padim")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rss-inputs", type=int, default=10_000, help="inputs streamed for the driver's peak RSS")
    p.add_argument("--quick", action="store_true", help="generated images, random init, small models")
    return p.parse_args(argv)


def _train_and_export(name: str, category_dir: Path, work: Path, quick: bool) -> Path:
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run

    run = train_cli_default(name, category_dir, work, quick=quick)
    return export_run(run, work / "bundles" / name, ExportOptions(force=True), log=C.log).bundle_dir


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2)


def _ray(bundle: Path, paths: list[str], actors: int, cpus: int) -> dict[str, Any]:
    from pyimgano_deploy.scale.ray_data import RayRuntime

    with RayRuntime(bundle, actors=actors, cpus_per_actor=cpus) as rt:
        cold, _ = C.timed(lambda: list(rt.infer_iter(paths[:8])))
        warm, items = C.timed(lambda: list(rt.infer_iter(paths)))
    return {"cold_first_8_s": round(cold, 2), "seconds": warm, "items": items}


def _agreement(ray_items: list[Any], local_items: list[Any]) -> dict[str, Any]:
    rel = [abs(a.result.score - b.result.score) / max(1.0, abs(b.result.score))
           for a, b in zip(ray_items, local_items) if b.result.score is not None]
    return {"same_count": len(ray_items) == len(local_items),
            "labels_identical": all(a.result.label == b.result.label for a, b in zip(ray_items, local_items)),
            "max_rel_score": max(rel) if rel else None}


def _driver_rss(bundle: Path, paths: list[str], n: int, threads: int) -> dict[str, Any]:
    from pyimgano_deploy.scale.ray_data import RayRuntime

    inputs = [paths[i % len(paths)] for i in range(n)]
    with RayRuntime(bundle, actors=threads, cpus_per_actor=1) as rt:
        before = C.current_rss_mb()
        C.reset_peak_rss()
        t = time.perf_counter()
        count = sum(1 for _ in rt.infer_iter(inputs))
        seconds = time.perf_counter() - t
    return {"inputs": count, "driver_rss_before_mb": before, "driver_peak_rss_mb": C.peak_rss_mb(),
            "rss_source": C.rss_source(), "images_per_s": _rate(count, seconds)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = C.pin_threads(args.threads)
    import ray

    doc = C.header("bench_ray", args, threads)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        work = Path(tmp)
        category_dir = args.root / args.category
        if args.quick:
            from pyimgano_deploy.datasets import generate_synthetic_dataset

            category_dir = Path(generate_synthetic_dataset(work / "data", seed=0, n_train=12, n_test=16, size=64))
        paths = sorted(str(p) for p in (category_dir / "test").rglob("*") if p.is_file())
        ray.init(num_cpus=threads, include_dashboard=False, configure_logging=False, log_to_driver=False)
        try:
            bundles = {name: _train_and_export(name, category_dir, work, args.quick) for name in args.models.split(",")}
            for name, bundle in bundles.items():
                local_s, local_items = timed_infer(bundle, paths, threads)
                entry: dict[str, Any] = {"images": len(paths), "local": {"images_per_s": _rate(len(paths), local_s), "threads": threads}}
                for actors, cpus in ((1, threads), (threads, 1)):
                    C.log(f"{name}: Ray with {actors} actor(s) x {cpus} CPU")
                    r = _ray(bundle, paths, actors, cpus)
                    entry[f"ray_{actors}x{cpus}"] = {
                        "images_per_s": _rate(len(paths), r["seconds"]), "cold_first_8_s": r["cold_first_8_s"],
                        "overhead_ms_per_image": round(1000 * (r["seconds"] - local_s) / len(paths), 2),
                        "vs_local": round(local_s / r["seconds"], 3), **_agreement(r["items"], local_items)}
                results[name] = entry
            last = list(bundles.values())[-1]
            C.log(f"driver RSS while {args.rss_inputs} inputs stream through Ray")
            doc["driver_memory"] = _driver_rss(last, paths, 200 if args.quick else args.rss_inputs, threads)
        finally:
            ray.shutdown()
    doc.update({"models": results, "category": args.category, "threads": threads})
    return doc


def main(argv: list[str] | None = None) -> None:
    from pyimgano_deploy.scale.ray_data import driver_messages_to_stderr

    with driver_messages_to_stderr():  # Ray's driver messages would land before the JSON document
        doc = run(parse_args(argv))
    C.emit(doc)


if __name__ == "__main__":
    sys.exit(main())
