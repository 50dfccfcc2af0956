"""int8 engines and the re-ranked nearest-neighbour heads against fp32, side by side in one process.

For each real category (``--categories``; generated images in ``--quick`` mode) it trains the
PatchCore with its registry defaults (224 x 224, Lite0, 10 % bank; ``--patchcore-kwargs '{}'`` gives
the default recipe's instead) and PaDiM (``--models`` picks either), then reports:

- ``int8_gate``: ``export --precision int8`` (auto scope: int8 nearest-neighbour candidates for
  PatchCore, static QDQ backbone for PaDiM): passed, or the gate's numbers when it refuses;
- ``engine_img_s``: the fp32 and int8 graphs (the int8 one measured even when the gate refuses
  it, and never shipped then) and the PCA re-ranked PatchCore graph, batch 1 and 8, engine only;
- ``whole_infer``: PatchCore's ``infer``-path images/s over the test split (three passes), the
  fp32 and int8 engines of one bundle interleaved slice by slice, each under the runtime's
  default schedule and its throughput schedule (one stream per thread): the speed-up over fp32
  under the same schedule (of the totals, and per slice), image AUROC, the share of identical
  labels; and the PCA re-ranked bundle;
- ``int8_head_misses`` / ``pca_rerank_misses``: per patch query, how often the two-stage head
  misses the true nearest bank row, and the image-score error on the images with a miss;
- ``operator_share``: per engine, each stage's time and work against its own limit
  (``benchmarks/operator_share.py``);
- ``gemm`` / ``bandwidth``: this CPU's fp32 GEMM rate (ONNX Runtime MatMul), int8 rate
  (MatMulInteger, uint8 × int8 → int32; VNNI where ``environment.cpu_features`` lists it) and
  read bandwidth: the limits of that table.

    python benchmarks/bench_int8.py --root ../shared/data --categories bsd_ballscrew,hazelnut_toy --threads 2
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C
from _rundir import PATCHCORE_REGISTRY_KWARGS, timed_infer, train_cli_default

MODELS = ("vision_patchcore", "vision_padim")
RERANK = (16, 64)  # the PCA re-rank measured for comparison: candidates, principal directions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=C.REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--categories", default="bsd_ballscrew,hazelnut_toy")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default="vision_patchcore,vision_padim", help="comma-separated, of the default")
    p.add_argument("--patchcore-kwargs", type=_json_object, default=dict(PATCHCORE_REGISTRY_KWARGS),
                   help="PatchCore's model kwargs as a JSON object over the default recipe's (default: the registry "
                        "defaults, the issue's 10 %% bank at 224 x 224; '{}' is the default recipe)")
    p.add_argument("--quick", action="store_true", help="generated images, random init, small models")
    args = p.parse_args(argv)
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        p.error(f"--models: unknown {sorted(unknown)}; choose from {list(MODELS)}")
    return args


def _json_object(text: str) -> dict[str, Any]:
    """``--patchcore-kwargs``: a JSON object, or argparse's error naming what was given."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of model kwargs, got {text!r}")
    return value


def int8_gemm(n: int, threads: int) -> dict[str, Any]:
    """MatMulInteger (uint8 × int8 → int32) GOPS of ONNX Runtime on n × n, and fp32 MatMul's."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    rates = {}
    for name, op, ta, tb, a, b in (
        ("fp32_matmul_gflops", "MatMul", TensorProto.FLOAT, TensorProto.FLOAT,
         rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)),
        ("int8_matmulinteger_gops", "MatMulInteger", TensorProto.UINT8, TensorProto.INT8,
         rng.integers(0, 255, (n, n), dtype=np.uint8), rng.integers(-127, 127, (n, n), dtype=np.int8)),
    ):
        out = TensorProto.FLOAT if op == "MatMul" else TensorProto.INT32
        graph = helper.make_graph([helper.make_node(op, ["A", "B"], ["Y"])], "g",
                                  [helper.make_tensor_value_info("A", ta, [n, n]), helper.make_tensor_value_info("B", tb, [n, n])],
                                  [helper.make_tensor_value_info("Y", out, [n, n])])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                    sess_options=opts, providers=["CPUExecutionProvider"])
        times = C.repeat_times(lambda: sess.run(None, {"A": a, "B": b}), warmup=1, repeats=5, min_time_s=1.0)
        rates[name] = round(2 * n**3 / min(times) / 1e9, 1)
    rates["int8_over_fp32"] = round(rates["int8_matmulinteger_gops"] / rates["fp32_matmul_gflops"], 2)
    return {"n": n, **rates}


def engine_rate(path: Path, images: Any, threads: int) -> dict[str, float]:
    import numpy as np

    from pyimgano_deploy.runtimes.onnx_session import OnnxSession

    session = OnnxSession(path, intra_op_threads=threads)
    out = {}
    for batch in (1, 8):
        x = np.resize(images, (batch, *images.shape[1:]))
        times = C.repeat_times(lambda: session.run(x), warmup=1, repeats=3, min_time_s=1.5)
        out[f"batch_{batch}"] = round(batch / min(times), 1)
    return out


def whole_infer(bundle: Path, paths: list[str], threads: int, precision: str = "auto") -> tuple[float, list[Any]]:
    """(images/s, results) of the whole ``infer`` path on the ``precision`` engine."""
    seconds, items = timed_infer(bundle, paths, threads, precision)
    return round(len(paths) / seconds, 2), [item.result for item in items]


#: images per slice of the interleaved whole-``infer`` timing (two batches of the runtime's 8)
SLICE = 16
#: the runtime's throughput schedule, measured beside the default one: one stream per thread (``streams``
#: = the thread count), this many images per call
THROUGHPUT_MICRO_BATCH = 1


def side_by_side(bundle: Path, paths: list[str], threads: int, engines: dict[str, dict[str, Any]], passes: int) -> dict[str, Any]:
    """Whole ``infer`` of each engine (``name -> load_bundle options``), interleaved slice by slice:
    every engine scores the same :data:`SLICE` images in turn, so the drift of this shared
    machine's speed (seconds to minutes) hits all alike. Per engine: images/s over ``passes``
    passes of ``paths``, each slice's seconds, and the results of the last pass."""
    import numpy as np

    from pyimgano_deploy.runtimes import load_bundle

    runtimes = {name: load_bundle(bundle, intra_op_threads=threads, **opts) for name, opts in engines.items()}
    try:
        for rt in runtimes.values():
            list(rt.infer_iter(paths[:SLICE]))
        seconds: dict[str, list[float]] = {name: [] for name in engines}
        results: dict[str, list[Any]] = {name: [] for name in engines}
        for p in range(passes):
            for i in range(0, len(paths), SLICE):
                for name, rt in runtimes.items():
                    t = time.perf_counter()
                    items = list(rt.infer_iter(paths[i : i + SLICE]))
                    seconds[name].append(time.perf_counter() - t)
                    if p == passes - 1:
                        results[name] += [item.result for item in items]
    finally:
        for rt in runtimes.values():
            rt.close()
    rates = {name: round(passes * len(paths) / sum(s), 2) for name, s in seconds.items()}
    return {"rates": rates, "slice_seconds": {n: np.asarray(s) for n, s in seconds.items()}, "results": results}


def speedup(seconds_base: Any, seconds: Any) -> dict[str, float]:
    """``seconds_base / seconds``: of the totals, and the median and quartiles over the slices."""
    import numpy as np

    per_slice = seconds_base / seconds
    return {"total": round(float(seconds_base.sum() / seconds.sum()), 3), "slice_median": round(float(np.median(per_slice)), 3),
            "slice_quartiles": [round(float(q), 3) for q in np.percentile(per_slice, [25, 75])]}


def head_misses(detector: Any, paths: list[str], head: Any) -> dict[str, Any]:
    """Eager: share of patch queries whose true nearest bank row the two-stage ``head`` misses
    (its distance above the full head's), and the image-score error on images with a miss."""
    import numpy as np
    import torch

    from pyimgano_deploy.inputs import read_image

    module = detector.inference_module
    full = module.scorer.distance
    swapped = copy.deepcopy(module)
    swapped.scorer.distance = head
    missed = total = 0
    errors = []
    with torch.no_grad():
        for i in range(0, len(paths), 8):
            batch = torch.from_numpy(detector.preprocess.batch([read_image(p) for p in paths[i : i + 8]]))
            emb = module.embed(batch)
            q = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).float()
            d_true, _ = full.nearest(q)
            d_head, _ = head.nearest(q)
            miss = d_head > d_true * (1 + 1e-5) + 1e-6
            missed += int(miss.sum())
            total += int(miss.numel())
            per_image = miss.reshape(emb.shape[0], -1).any(dim=1)
            if per_image.any():
                s_full, _ = module(batch)
                s_head, _ = swapped(batch)
                errors += ((s_head - s_full).abs() / s_full.abs().clamp(min=1e-12))[per_image].tolist()
    return {"queries": total, "missed_share": missed / max(total, 1), "images_with_a_miss": len(errors),
            "max_rel_image_score_error": max(errors) if errors else 0.0,
            "mean_rel_image_score_error": float(np.mean(errors)) if errors else 0.0}


def _auroc(results: list[Any], paths: list[str]) -> float | None:
    from sklearn.metrics import roc_auc_score

    y = [0 if "/good/" in p else 1 for p in paths]
    return round(float(roc_auc_score(y, [r.score for r in results])), 4) if 0 < sum(y) < len(y) else None


def _gate(run: Path, out: Path) -> tuple[dict[str, Any], Path | None]:
    """``export --precision int8`` (auto scope): the gate's verdict and the bundle when it passed."""
    from pyimgano_deploy.bundles.parity import ParityError
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run

    try:
        result = export_run(run, out, ExportOptions(precision="int8", force=True), log=C.log)
    except ParityError as exc:
        return {"passed": False, "summary": str(exc).strip().splitlines()[-1]}, None
    engine = next(e for e in result.manifest["engines"] if e["precision"] == "int8")
    return {"passed": True, "scope": engine["calibration"]["scope"], **result.parity["int8"].to_manifest()}, result.bundle_dir


def category(category_dir: Path, work: Path, threads: int, quick: bool, limits: dict[str, float], *,
             models: tuple[str, ...] = MODELS, patchcore_kwargs: dict[str, Any] = PATCHCORE_REGISTRY_KWARGS) -> dict[str, Any]:
    from operator_share import operator_share

    from pyimgano_deploy.bundles import read_bundle
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run, golden_batch
    from pyimgano_deploy.exporters.int8_quantize import quantize_int8
    from pyimgano_deploy.exporters.run_source import resolve_run
    from pyimgano_deploy.models.detectors.int8_candidates import Int8RerankedNearestNeighbourDistance
    from pyimgano_deploy.models.detectors.reranked_distance import RerankedNearestNeighbourDistance

    paths = sorted(str(p) for p in (category_dir / "test").rglob("*") if p.is_file())
    doc: dict[str, Any] = {"test_images": len(paths)}
    for name in models:
        kwargs = patchcore_kwargs if name == "vision_patchcore" else {}
        run = train_cli_default(name, category_dir, work, quick=quick, **kwargs)
        out = work / "bundles" / f"{category_dir.name}_{name}"
        entry: dict[str, Any] = {}
        entry["int8_gate"], gated = _gate(run, out / "int8")
        base = gated or export_run(run, out / "fp32", ExportOptions(force=True), log=C.log).bundle_dir
        source = resolve_run(run)
        detector = source.load_detector()
        golden = read_bundle(base).load_golden()["images"]
        int8_file = base / "model.int8.onnx"
        if gated is None:  # measure the refused engine all the same (never shipped)
            calib = golden_batch(source, detector.preprocess, min(64, len(source.calibration_inputs)), 0)
            int8_file = work / "q.onnx"
            quantize_int8(base / "model.onnx", int8_file, calib, detector.inference_module.fp32_scopes)
        rates = {"fp32": engine_rate(base / "model.onnx", golden, threads), "int8" if gated else "int8_ungated": engine_rate(int8_file, golden, threads)}
        batch = golden[: min(8, len(golden))]
        entry["operator_share"] = {"fp32": operator_share(base / "model.onnx", batch, threads=threads, limits=limits),
                                   "int8": operator_share(int8_file, batch, threads=threads, limits=limits)}
        if name == "vision_patchcore":
            bank = detector.inference_module.scorer.distance.bank
            entry["bank"] = list(bank.shape)
            engines: dict[str, dict[str, Any]] = {"fp32": {"precision": "fp32"}}
            if gated:
                engines["int8"] = {"precision": "int8"}
            throughput = {"streams": threads, "micro_batch": THROUGHPUT_MICRO_BATCH}
            engines.update({f"{n}_throughput": {**o, **throughput} for n, o in list(engines.items())})
            timed = side_by_side(base, paths, threads, engines, passes=1 if quick else 3)
            fp32_results, slices = timed["results"]["fp32"], timed["slice_seconds"]
            entry["whole_infer"] = {"slice_images": SLICE, "throughput_schedule": throughput}
            for engine in engines:
                results = timed["results"][engine]
                baseline = "fp32_throughput" if engine.endswith("_throughput") else "fp32"
                entry["whole_infer"][engine] = {
                    "images_per_s": timed["rates"][engine], f"vs_{baseline}": speedup(slices[baseline], slices[engine]),
                    "image_auroc": _auroc(results, paths),
                    "labels_identical_share": sum(a.label == b.label for a, b in zip(results, fp32_results)) / len(paths)}
            shipped = ExportOptions()  # the head export --precision int8 ships
            head = Int8RerankedNearestNeighbourDistance(bank, candidates=shipped.int8_candidates, projection_dim=shipped.int8_projection)
            entry["int8_head_misses"] = {**head.record(), **head_misses(detector, paths, head)}
            c, r = RERANK
            rr = export_run(run, out / f"rr{c}", ExportOptions(nn_rerank=c, nn_rerank_dim=r, force=True), log=C.log).bundle_dir
            rates[f"pca_rerank_c{c}_r{r}"] = engine_rate(rr / "model.onnx", golden, threads)
            rate, results = whole_infer(rr, paths, threads)
            entry["whole_infer"][f"pca_rerank_c{c}_r{r}"] = {"images_per_s": rate, "image_auroc": _auroc(results, paths)}
            entry["pca_rerank_misses"] = head_misses(detector, paths, RerankedNearestNeighbourDistance(bank, candidates=c, projection_dim=r))
        entry["engine_img_s"] = rates
        doc[name] = entry
    return doc


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = C.pin_threads(1 if args.quick else args.threads)
    C.pin_torch_threads(threads)
    doc = C.header("bench_int8", args, threads)
    from roofline import memory_bandwidth

    doc["gemm"] = int8_gemm(512 if args.quick else 2048, threads)
    doc["bandwidth"] = memory_bandwidth(threads, n_bytes=(32 if args.quick else 256) << 20, min_time_s=0.2 if args.quick else 1.0)
    limits = {"fp32_gflops": doc["gemm"]["fp32_matmul_gflops"], "int8_gops": doc["gemm"]["int8_matmulinteger_gops"],
              "bandwidth_gbs": doc["bandwidth"]["best_gbs"]}
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_int8_") as tmp:
        work = Path(tmp)
        if args.quick:
            from pyimgano_deploy.datasets import generate_synthetic_dataset

            dirs = [Path(generate_synthetic_dataset(work / "data", seed=0, n_train=12, n_test=8, size=64))]
        else:
            dirs = [args.root / c for c in args.categories.split(",")]
        for category_dir in dirs:
            C.log(f"category {category_dir.name}")
            results[category_dir.name] = category(category_dir, work, threads, args.quick, limits,
                                                  models=tuple(args.models.split(",")), patchcore_kwargs=args.patchcore_kwargs)
    doc.update({"categories": results, "threads": threads})
    return doc


def main(argv: list[str] | None = None) -> None:
    C.emit(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
