"""Ray Data batch inference with a bundle: the same records as local ``infer``, scored by actors.

The inputs become a Ray dataset of ``{index, path}`` rows. ``map_batches`` runs
:class:`BundleScorer`, a class-based actor that loads and verifies the bundle once (the
driver's digest is pinned, so every actor scores the very bundle the driver read) and scores
each batch with our own runtime: the same reader, decoder, preprocessing, tiling, engine and
result rules as local ``infer``, not Ray's image readers. Each scored item travels back as one
pickled :class:`~pyimgano_deploy.runtimes.runtime.RuntimeItem` (results, maps when asked, and
defects), in input order (``preserve_order``), and the driver streams them out: it holds the
input list and the batches in flight, never all results.

Inputs are paths, so the workers must be able to read them (the same shared storage as the
bundle); see docs/SCALING.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.inputs import DEFAULT_MAX_PIXELS
from pyimgano_deploy.scale.extras import require_ray

#: ``--ray-address`` values besides ``ray://HOST:PORT`` and ``HOST:PORT``
LOCAL, AUTO = "local", "auto"


def check_address(address: str) -> str:
    """``local``, ``auto``, ``ray://HOST:PORT`` or ``HOST:PORT``; ``ValueError`` otherwise."""
    text = str(address).strip()
    if text in (LOCAL, AUTO) or text.startswith("ray://") or (":" in text and text.rsplit(":", 1)[1].isdigit()):
        return text
    raise ValueError(f"ray address must be 'local' (start Ray for this run), 'auto' (an existing cluster), "
                     f"'ray://HOST:PORT' or 'HOST:PORT', got {address!r}")


@contextlib.contextmanager
def driver_messages_to_stderr() -> Iterator[None]:
    """Send what the Ray driver prints on ``sys.stdout`` to ``sys.stderr`` inside the block.

    Ray's driver prints cluster error messages ("A worker died or was killed …") on stdout from
    a background thread, even with ``log_to_driver=False`` (``listen_error_messages`` in
    ``ray._private.worker``, Ray 2.x). A command whose stdout is one JSON document (``infer
    --json``, the benchmarks) must not get them there. The redirection is process-wide, so
    the block must not hold output that belongs on stdout."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


class BundleScorer:
    """Ray Data actor: one verified runtime per actor; ``{index, path}`` batch → ``{index, item}``."""

    def __init__(self, bundle_path: str, digest: str, load_options: dict[str, Any], infer_options: dict[str, Any]) -> None:
        from pyimgano_deploy.runtimes.loader import load_bundle

        self.runtime = load_bundle(bundle_path, expected_digest=digest, **load_options)
        self.infer_options = infer_options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        items = list(self.runtime.infer_iter(paths, **self.infer_options))
        blobs = np.empty(len(items), dtype=object)
        blobs[:] = [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]
        return {"index": np.asarray(batch["index"], dtype=np.int64), "item": blobs}


class RayRuntime:
    """The driver's side: what local ``infer`` needs of a runtime (``bundle``, ``engine_info``,
    ``batch_size``, ``infer_iter``, ``close``), with the scoring done by ``actors`` Ray actors.

    ``address``: ``local`` starts Ray on this machine for this runtime (shut down by
    :meth:`close`), ``auto`` joins a running cluster, ``ray://HOST:PORT`` connects a Ray
    client. ``cpus_per_actor`` CPUs are reserved per actor and are its ONNX Runtime threads.
    The bundle is verified here first (``expected_digest``, ``public_key``), then pinned by
    digest in every actor.
    """

    streams = 1
    micro_batch = None

    def __init__(self, bundle_path: str | os.PathLike[str], *, address: str = LOCAL, actors: int = 2, cpus_per_actor: int = 1,
                 batch_size: int = 8, engine: str = "auto", precision: str = "auto", device: str = "cpu",
                 expected_digest: str | None = None, public_key: str | os.PathLike[str] | None = None) -> None:
        if actors < 1 or cpus_per_actor < 1 or batch_size < 1:
            raise ValueError(f"actors, cpus_per_actor and batch_size must be >= 1, got {actors}, {cpus_per_actor}, {batch_size}")
        self.address = check_address(address)
        self.bundle = read_bundle(bundle_path, expected_digest=expected_digest, public_key=public_key)
        self.bundle_path = str(Path(self.bundle.root).resolve())
        self.actors, self.cpus_per_actor, self.batch_size = int(actors), int(cpus_per_actor), int(batch_size)
        self.load_options = {"engine": engine, "precision": precision, "device": device, "batch_size": self.batch_size,
                             "intra_op_threads": self.cpus_per_actor}
        self.engine_info: dict[str, Any] = {
            "engine": "ray", "file": f"chosen by each actor ({engine})", "precision": precision, "device": device,
            "providers": None, "streams": 1, "intra_op_threads": self.cpus_per_actor, "schedule": None,
            "ray": {"address": self.address, "actors": self.actors, "cpus_per_actor": self.cpus_per_actor},
        }
        self._ray = require_ray()
        self._owns_ray = False
        if not self._ray.is_initialized():
            self._connect()

    def _connect(self) -> None:
        ray = self._ray
        if self.address == LOCAL:
            ray.init(num_cpus=max(os.cpu_count() or 1, self.actors * self.cpus_per_actor), include_dashboard=False,
                     configure_logging=False, log_to_driver=False)
        else:
            ray.init(address=self.address, configure_logging=False, log_to_driver=False)
        self._owns_ray = True

    def infer_iter(self, images: Iterable[str | os.PathLike[str]], *, include_maps: bool | str = False, defects: Any = None,
                   u16_max: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, input_format: Any = None,
                   unlike_training: str = "score") -> Iterator[Any]:
        """Score the image *paths* ``images`` on the actors; yields a ``RuntimeItem`` per input, in order,
        with ``index`` its position in ``images``. Arrays are not accepted (they would be shipped
        through the object store; score them with a local runtime)."""
        if input_format is not None:
            raise ValueError("RayRuntime scores image files; score in-memory arrays with a local runtime (load_bundle)")
        ray = self._ray
        paths = [os.fspath(p) for p in images]
        if not paths:
            return
        # Ray Data logs each execution plan at INFO on stderr; our own summary says what ran
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        rows = ray.data.from_items([{"index": i, "path": p} for i, p in enumerate(paths)],
                                   override_num_blocks=max(1, min(len(paths) // self.batch_size, 4 * self.actors * 8)))
        infer_options = {"include_maps": include_maps, "defects": defects, "u16_max": u16_max, "max_pixels": max_pixels,
                         "unlike_training": unlike_training}
        scored = rows.map_batches(
            BundleScorer, batch_size=self.batch_size, batch_format="numpy", num_cpus=self.cpus_per_actor,
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            fn_constructor_kwargs={"bundle_path": self.bundle_path, "digest": self.bundle.digest,
                                   "load_options": self.load_options, "infer_options": infer_options},
        )
        expected = 0
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            for index, blob in zip(batch["index"], batch["item"]):
                if int(index) != expected:
                    raise RuntimeError(f"Ray returned input #{int(index)} where #{expected} was due: the order of records would be wrong")
                item = pickle.loads(blob)
                item.index = expected
                expected += 1
                yield item
        if expected != len(paths):
            raise RuntimeError(f"Ray returned {expected} results for {len(paths)} inputs")

    def close(self) -> None:
        if self._owns_ray and self._ray.is_initialized():
            with driver_messages_to_stderr():  # actors that die while Ray stops are reported on stdout
                self._ray.shutdown()
        self._owns_ray = False

    def __enter__(self) -> "RayRuntime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ray_infer(bundle: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]], *, address: str = LOCAL, actors: int = 2,
              save_jsonl: str | os.PathLike[str] | None = None, save_parquet: str | os.PathLike[str] | None = None,
              include_maps: bool | str = False, defects: Any = None, u16_max: int | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS, **runtime_options: Any) -> list[dict[str, Any]] | dict[str, Any]:
    """Score ``inputs`` (files, folders, globs or list files, expanded as ``infer --input`` does)
    with the bundle on a Ray cluster. Without ``save_jsonl``: returns the JSONL records (local
    ``infer``'s contract: one per input, in input order, error records for bad inputs).
    With ``save_jsonl``: streams them to that new file (refused when it holds records) and
    returns a summary; ``save_parquet`` then also writes them as a Parquet table
    (:func:`~pyimgano_deploy.scale.parquet_out.jsonl_to_parquet`). ``runtime_options`` go to
    :class:`RayRuntime` (``cpus_per_actor``, ``batch_size``, ``engine``, ``precision``, ``device``,
    ``expected_digest``, ``public_key``)."""
    from pyimgano_deploy.runtimes.jsonl import JsonlWriter, make_record
    from pyimgano_deploy.runtimes.sources import expand_inputs

    plan = expand_inputs(inputs)
    if save_parquet is not None and save_jsonl is None:
        raise ValueError("save_parquet needs save_jsonl: the Parquet table is written from the JSONL records")
    with RayRuntime(bundle, address=address, actors=actors, **runtime_options) as rt:
        digest = rt.bundle.digest
        stream = rt.infer_iter(plan.items, include_maps=include_maps, defects=defects, u16_max=u16_max, max_pixels=max_pixels)
        records = (make_record(item.index, plan.items[item.index], item.result, timing_ms=item.timing_ms, bundle_digest=digest,
                               resolved_path=plan.resolved[item.index], u16_max=u16_max) for item in stream)
        if save_jsonl is None:
            return list(records)
        errors = anomalies = n = 0
        with JsonlWriter(Path(save_jsonl), refuse_existing=True) as writer:
            for record in records:
                writer.write(record)
                n += 1
                errors += record["status"] != "ok"
                anomalies += record.get("label") == 1
    summary = {"images": len(plan.items), "processed": n, "errors": errors, "anomalies": anomalies, "bundle_digest": digest,
               "jsonl": Path(save_jsonl).as_posix(), "skipped_files": list(plan.skipped)}
    if save_parquet is not None:
        from pyimgano_deploy.scale.parquet_out import jsonl_to_parquet

        summary["parquet"] = jsonl_to_parquet(save_jsonl, save_parquet)
    return summary
