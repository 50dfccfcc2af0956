"""``pyimgano-deploy infer``: score images with a bundle (torch-free) and stream JSONL records."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import click

from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE, EXIT_ENGINE, EXIT_FAILED, EXIT_OK, EXIT_OUTPUT
from pyimgano_deploy.cli.defects_options import DefectsFlags, defects_options, resolve_defects
from pyimgano_deploy.cli.failing import fail
from pyimgano_deploy.cli.progress import bar_wanted, progress_bar, progress_option
from pyimgano_deploy.cli.infer_records import LIST_LIMIT, RESUME_CHECKS, UnlikeTraining, previous_stats, score_all
from pyimgano_deploy.inputs.source_info import UNLIKE_TRAINING_POLICIES
from pyimgano_deploy.cli.maps_output import MAP_DTYPES, MapsOutput
from pyimgano_deploy.runtimes.folder_watch import FolderWatch
from pyimgano_deploy.runtimes.results import MAP_RESOLUTIONS
from pyimgano_deploy.runtimes.selection import PRECISIONS



def _fail(message: str, as_json: bool, code: int = EXIT_FAILED) -> None:
    fail(message, code, as_json=as_json)


@click.command("infer", epilog=EXIT_CODE_TABLE)
@click.option("--bundle", "bundle_path", required=True, type=click.Path(), help="Bundle directory (or its bundle.json).")
@click.option(
    "--input", "inputs", required=True, multiple=True,
    help="Image file, directory (recursive, sorted), glob, or list file (@list.txt / a .txt file; @- reads the list "
         "from standard input, one per line or NUL-separated as find -print0 writes it). Repeatable.",
)
@click.option("--save-jsonl", "jsonl_path", required=True, type=click.Path(dir_okay=False), help="Write one JSON record per input here.")
@click.option("--save-maps", "maps_dir", type=click.Path(file_okay=False), default=None,
              help="Save anomaly maps (.npy, at --maps-resolution, as --maps-dtype) here.")
@click.option("--maps-resolution", type=click.Choice(list(MAP_RESOLUTIONS)), default="original", show_default=True,
              help="Size of the saved maps: the image's ('original'), or the model's map as the engine gives it, "
                   "the one defects are found on ('model': for a 1130 × 460 image at 224 × 544, a quarter of the bytes). "
                   "Not with --save-overlays, which draws the original-size map.")
@click.option("--maps-dtype", type=click.Choice(list(MAP_DTYPES)), default="float32", show_default=True,
              help="dtype of the saved maps: float32 as the engine gives them, or float16 for half the bytes (about three "
                   "significant digits; a map with values over 65504 is then that input's error, never an inf).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True, help="Preprocessing threads.")
@click.option("--engine", type=click.Choice(["auto", "onnx", "tensorrt"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="auto", show_default=True,
              help="Engine file: auto is fp32 on CPU and fp16 on a GPU when the bundle has it; int8 only when named, "
                   "and checked on the bundle's golden images before any input (exit 6 if this CPU scores them differently).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads (default: ORT's choice).")
@click.option(
    "--streams", default="1", show_default=True, metavar="N|auto",
    help="CPU throughput mode: score each batch with N concurrent ONNX Runtime calls sharing --threads "
    "(default: all cores). 'auto' times a few schedules on this machine (about a second) and keeps the "
    "fastest. Not with TensorRT.",
)
@click.option("--micro-batch", type=click.IntRange(min=1), default=None, help="Images per engine call within a stream (default: the batch split evenly).")
@click.option("--resume", is_flag=True, help="Continue --save-jsonl: skip inputs already recorded there (matched by resolved path; "
              "a truncated last line is repaired). Refused when the file was written by another bundle, or when a "
              "recorded file's size is no longer the one its record gives (the path holds another image now).")
@click.option("--resume-check", type=click.Choice(list(RESUME_CHECKS)), default=None,
              help="With --resume, how a recorded file is checked to still hold the bytes its record describes: "
                   "size (the default: one stat per file) or sha256 (reads every recorded file again; also catches "
                   "an image rewritten at the same size).")
@click.option("--overwrite", is_flag=True, help="Replace an existing, non-empty --save-jsonl (without it, or --resume, infer refuses).")
@click.option("--expect-digest", default=None, metavar="sha256:HEX", help="Refuse the bundle unless its digest is this one (exit 4).")
@click.option("--public-key", type=click.Path(dir_okay=False), default=None, help="Require a bundle.sig that verifies with this Ed25519 PEM public key (exit 7).")
@click.option("--u16-max", type=click.IntRange(1, 65535), default=None, help="Full-scale value of 16-bit images (4095 for a 12-bit camera, 65535 for the full range); "
              "16-bit files are an error without it. Recorded in each record.")
@click.option("--max-pixels", type=click.IntRange(min=0), default=None, show_default="134217728 (8192 x 16384)",
              help="Refuse images larger than this many pixels, read from the file header before decoding (0: no limit).")
@click.option("--unlike-training", type=click.Choice(list(UNLIKE_TRAINING_POLICIES)), default="score", show_default=True,
              help="An image grey where the bundle's training images were in colour (or the reverse), or of another aspect "
                   "ratio (bundle.json input.trained_colour / trained_aspect): score it and warn once (score), or make it "
                   "that input's error record, counted against --max-errors (refuse). The summary counts them either way.")
@click.option("--max-errors", type=click.IntRange(min=0), default=0, show_default=True, help="Exit 0 while errors <= this.")
@click.option("--fsync", is_flag=True, help="fsync the JSONL file after every record.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout (no progress bar).")
@progress_option
@click.option("--save-parquet", "parquet_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the records as a Parquet table (pyarrow) once the run is complete; the JSONL stays the record of truth.")
@click.option("--ray-address", default=None, metavar="local|auto|ray://HOST:PORT",
              help="Score on Ray Data actors (pip install 'pyimgano-deploy[ray]'): 'local' starts Ray on this machine for the run, "
                   "'auto' joins a running cluster, ray://HOST:PORT connects a Ray client. Inputs and bundle must be readable "
                   "by the workers (docs/SCALING.md). Same records, order, resume and exit codes as a local run.")
@click.option("--ray-actors", type=click.IntRange(min=1), default=2, show_default=True, help="Ray actors, each loading the bundle once.")
@click.option("--ray-cpus-per-actor", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPUs reserved per actor, and its ONNX Runtime threads.")
@click.option("--watch", is_flag=True,
              help="Hot folder: keep scoring image files as they appear under --input, each once its size and time have "
                   "not changed for --watch-settle seconds (never half-written), until SIGINT/SIGTERM (the batch in flight "
                   "is recorded first) or --watch-idle-exit. Each path is scored once; indices continue the results file.")
@click.option("--watch-settle", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="Seconds a file's size and modification time must stay unchanged before it is read.")
@click.option("--watch-poll", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Seconds between scans of the --input folders.")
@click.option("--watch-idle-exit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="End the watch once no new file has appeared for this many seconds (default: run until stopped).")
@defects_options
def infer(
    bundle_path: str,
    inputs: tuple[str, ...],
    jsonl_path: str,
    maps_dir: str | None,
    maps_resolution: str,
    maps_dtype: str,
    batch_size: int,
    num_workers: int,
    engine: str,
    precision: str,
    device: str,
    threads: int | None,
    streams: str,
    micro_batch: int | None,
    resume: bool,
    resume_check: str | None,
    overwrite: bool,
    expect_digest: str | None,
    public_key: str | None,
    u16_max: int | None,
    max_pixels: int | None,
    unlike_training: str,
    max_errors: int,
    fsync: bool,
    as_json: bool,
    progress: bool,
    parquet_path: str | None,
    ray_address: str | None,
    ray_actors: int,
    ray_cpus_per_actor: int,
    watch: bool,
    watch_settle: float,
    watch_poll: float,
    watch_idle_exit: float | None,
    **defects_kwargs: Any,
) -> None:
    """Score images with a bundle and write JSONL records (one per input, flushed as written,
    each naming the bundle's digest). Every input gets exactly one record: a bad file is an
    error record at the stage where it failed, never a score.

    Defects options (see docs/DEFECTS.md) override the bundle's defects block. Exit 1 means
    more inputs failed than --max-errors allows; the bundle's own problems use validate's codes.
    SIGINT (Ctrl-C) or SIGTERM stops a run after the record being written, prints the summary
    with the number of inputs left, and exits 130 or 143; --resume continues it.
    """
    from pyimgano_deploy.bundles import BundleError
    from pyimgano_deploy.inputs import DEFAULT_MAX_PIXELS
    from pyimgano_deploy.runtimes.errors import EngineLoadError
    from pyimgano_deploy.runtimes.loader import load_bundle
    from pyimgano_deploy.runtimes.sources import expand_inputs

    defects_flags = DefectsFlags.from_kwargs(defects_kwargs)
    _check_combinations(maps_dir is not None, maps_resolution, bool(defects_kwargs.get("save_overlays")), watch, ray_address,
                        inputs)
    if resume_check is not None and not resume:
        raise click.UsageError("--resume-check applies to --resume only")
    try:
        plan = expand_inputs(inputs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--input") from exc
    if not watch:  # a watched folder may start empty, and globs may match later
        for spec in plan.unmatched:
            click.echo(f"warning: --input {spec!r} matched no files", err=True)
        if not plan.items:
            _fail(plan.nothing_found("--input", inputs), as_json)
        for link in plan.loops:
            click.echo(f"warning: not following {link}: its folder was already walked (a link loop or alias)", err=True)
    jsonl = Path(jsonl_path)
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if not (resume or overwrite) and jsonl.is_file() and jsonl.stat().st_size > 0:  # checked again under the lock
        _fail(f"{jsonl} already holds results; pass --resume to continue it or --overwrite to replace it", as_json, EXIT_OUTPUT)
    if expect_digest is not None:
        from pyimgano_deploy.bundles.identity import parse_digest

        try:
            parse_digest(expect_digest)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--expect-digest") from exc
    try:
        if ray_address is not None:
            runtime = _ray_runtime(bundle_path, ray_address, ray_actors, ray_cpus_per_actor, threads=threads, num_workers=num_workers,
                                   streams=streams, micro_batch=micro_batch, batch_size=batch_size, engine=engine, precision=precision,
                                   device=device, expect_digest=expect_digest, public_key=public_key, as_json=as_json)
        else:
            runtime = load_bundle(
                bundle_path, device=device, engine=engine, precision=precision, batch_size=batch_size,
                intra_op_threads=threads, num_workers=num_workers, streams=streams, micro_batch=micro_batch,
                expected_digest=expect_digest, public_key=public_key,
            )
    except BundleError as exc:
        _fail(f"invalid bundle {bundle_path}: {exc}", as_json, exc.exit_code)
    except EngineLoadError as exc:
        _fail(f"cannot load an engine of {bundle_path}: {exc}", as_json, exc.exit_code)
    except ValueError as exc:  # a bad --streams value, or a combination that cannot work (--streams with TensorRT)
        raise click.BadParameter(str(exc), param_hint="--streams / --micro-batch") from exc
    with runtime:
        maps = None if maps_dir is None else MapsOutput(Path(maps_dir), maps_resolution, maps_dtype)
        _run(runtime, plan, jsonl, maps=maps, defects_flags=defects_flags, resume=resume, resume_check=resume_check or "size",
             overwrite=overwrite, fsync=fsync,
             u16_max=u16_max, max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else (max_pixels or None),
             max_errors=max_errors, unlike_training=unlike_training, as_json=as_json, progress=progress,
             parquet=None if parquet_path is None else Path(parquet_path),
             watch=FolderWatch(list(inputs), settle_s=watch_settle, poll_s=watch_poll, idle_exit_s=watch_idle_exit) if watch else None)


def _check_combinations(save_maps: bool, maps_resolution: str, save_overlays: bool, watch: bool, ray_address: str | None,
                        inputs: tuple[str, ...] = ()) -> None:
    """Usage errors (exit 2) for options that contradict each other or describe nothing."""
    from pyimgano_deploy.runtimes.sources import STDIN_LIST

    if maps_resolution == "model" and save_overlays:
        raise click.UsageError("--maps-resolution model and --save-overlays exclude each other: overlays draw the map at "
                               "the original image size; save the maps at --maps-resolution original with them")
    given = click.get_current_context().get_parameter_source
    for names, needs, what in ((("maps_resolution", "maps_dtype"), save_maps, "the saved maps; add --save-maps DIRECTORY"),
                               (("watch_settle", "watch_poll", "watch_idle_exit"), watch, "a watch; add --watch")):
        unused = [f"--{n.replace('_', '-')}" for n in names if not needs and given(n) is click.core.ParameterSource.COMMANDLINE]
        if unused:
            raise click.UsageError(f"{' and '.join(unused)} {'describes' if len(unused) == 1 else 'describe'} {what}")
    if watch and ray_address is not None:
        raise click.UsageError("--watch scores files as they arrive on this machine; it does not run on Ray (--ray-address)")
    if watch and STDIN_LIST in inputs:
        raise click.UsageError(f"--watch looks at its --input specs again on every poll, and --input {STDIN_LIST} (a list on "
                               "standard input) can be read only once: watch the folders themselves, or write the list to a file "
                               "and pass @list.txt")


def _ray_runtime(bundle_path: str, address: str, actors: int, cpus_per_actor: int, *, threads: int | None, num_workers: int,
                 streams: str, micro_batch: int | None, batch_size: int, engine: str, precision: str, device: str,
                 expect_digest: str | None, public_key: str | None, as_json: bool) -> Any:
    """The Ray Data runtime for ``--ray-address`` (options that tune one local session are refused)."""
    from pyimgano_deploy.scale.extras import MissingExtraError

    local_only = {"--threads": threads is not None, "--num-workers": num_workers != 0, "--streams": streams != "1",
                  "--micro-batch": micro_batch is not None}
    given = [name for name, used in local_only.items() if used]
    if given:
        raise click.UsageError(f"{', '.join(given)} tune one local session; with --ray-address use --ray-actors and --ray-cpus-per-actor")
    try:
        from pyimgano_deploy.scale.ray_data import RayRuntime, check_address

        check_address(address)
    except MissingExtraError as exc:
        _fail(str(exc), as_json, EXIT_ENGINE)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ray-address") from exc
    try:
        return RayRuntime(bundle_path, address=address, actors=actors, cpus_per_actor=cpus_per_actor, batch_size=batch_size,
                          engine=engine, precision=precision, device=device, expected_digest=expect_digest, public_key=public_key)
    except MissingExtraError as exc:
        _fail(str(exc), as_json, EXIT_ENGINE)
    except (ConnectionError, TimeoutError) as exc:  # what ray.init raises for an address it cannot reach
        _fail(f"cannot connect to Ray at {address!r}: {exc}", as_json, EXIT_ENGINE)


def _run(runtime: Any, plan: Any, jsonl: Path, *, maps: MapsOutput | None, defects_flags: DefectsFlags, resume: bool, resume_check: str,
         overwrite: bool, fsync: bool, u16_max: int | None, max_pixels: int | None, max_errors: int, as_json: bool,
         parquet: Path | None = None, watch: FolderWatch | None = None, unlike_training: str = "score",
         progress: bool = True) -> None:
    """Score ``plan.items`` (or, with ``watch``, the files that appear) with the open ``runtime``
    into ``jsonl``; exits with the run's code."""
    from pyimgano_deploy.runtimes.jsonl import JsonlWriter, OutputError, path_key

    info = runtime.engine_info
    dplan = resolve_defects(defects_flags, runtime.bundle)
    if not as_json and info.get("ray"):
        ray_info = info["ray"]
        click.echo(f"engine: Ray Data at {ray_info['address']}, {ray_info['actors']} actor(s) × {ray_info['cpus_per_actor']} CPU, "
                   f"batch {runtime.batch_size} (each actor verifies bundle {runtime.bundle.digest})", err=True)
    elif not as_json:
        sched = info.get("schedule") or {}
        streams_note = f", {runtime.streams} streams × {sched.get('threads')} thread(s)" if runtime.streams > 1 else ""
        if runtime.micro_batch is not None:
            streams_note += f", {runtime.micro_batch} image(s) per call"
        if sched.get("tuned"):
            streams_note += " (fastest of the schedules timed here)"
        click.echo(f"engine: {info['engine']} {info['file']} ({info['precision']}, {info['device']}), batch {runtime.batch_size}{streams_note}", err=True)
        if "self_test" in info:
            check = info["self_test"]
            click.echo(f"self-test: {check['n_images']} golden images reproduced here, max |Δscore| "
                       f"{check['max_abs_score']:.3g} (gate {check['tolerance']['score_abs']:.3g})", err=True)

    digest = runtime.bundle.digest
    try:
        writer = JsonlWriter(jsonl, append=resume, fsync=fsync, refuse_existing=not (resume or overwrite))
    except OutputError as exc:
        _fail(str(exc), as_json, EXIT_OUTPUT)
    keys = [path_key(resolved) for resolved in plan.resolved]
    done, prev_errors, prev_anomalies = (set(), 0, 0)
    if resume:
        try:  # a watch continues after every recorded input, a plain run after those of its plan
            done, prev_errors, prev_anomalies = previous_stats(jsonl, None if watch else set(keys), digest, resume_check)
        except (ValueError, OSError) as exc:
            writer.close()
            _fail(f"cannot resume from {jsonl}: {exc}", as_json, EXIT_OUTPUT)
    resumed = len(done)
    todo = [(i, path, plan.resolved[i]) for i, path in enumerate(plan.items) if keys[i] not in done]
    rounds: Iterable[list[tuple[int, str, str]]] = [todo] if watch is None else _watch_rounds(watch, done)
    if maps is not None:
        maps.prepare()

    start = time.perf_counter()
    show_bar = bar_wanted(progress, as_json) and watch is None  # a watch has no total to count to
    errors = anomalies = processed = 0
    scoring_s = 0.0  # a watch's wall time is mostly waiting; its scoring rate counts only the rounds
    unlike = UnlikeTraining(runtime.bundle.trained_colour, runtime.bundle.trained_aspect, unlike_training)
    first_errors: list[dict[str, Any]] = []
    interruption = _Interruption()
    try:
        with writer, progress_bar(len(todo), show_bar, "infer") as bar, _driver_messages_to_stderr(info), \
                _stopped_by_signals(watch, interruption):
            for batch in rounds:
                round_start = time.perf_counter()
                n, e, a, failed = score_all(runtime, batch, writer, bar, maps, dplan, digest, u16_max, max_pixels,
                                            keep_errors=LIST_LIMIT - len(first_errors), unlike=unlike,
                                            stop=interruption.requested)
                scoring_s += time.perf_counter() - round_start
                errors, anomalies, processed = errors + e, anomalies + a, processed + n
                first_errors += failed
                if watch is not None and not as_json:
                    click.echo(f"watch: {processed} image(s) scored ({errors} error(s), {anomalies} anomalous)", err=True)
    except OutputError as exc:
        _fail(f"{exc}; the records written before this point are kept, rerun with --resume", as_json, EXIT_OUTPUT)
    elapsed = time.perf_counter() - start
    # the Parquet table is of a complete run; an interrupted one has only its JSONL until --resume ends it
    table = None if parquet is None or interruption.requested() else _write_parquet(jsonl, parquet, as_json)
    _summarise(runtime, plan if watch is None else watch.plan, processed, resumed, jsonl, maps, dplan, errors + prev_errors,
               anomalies + prev_anomalies, max_errors, elapsed, as_json, table, first_errors,
               watch=watch, scoring_s=scoring_s, unlike=unlike,
               interrupted=None if interruption.signum is None else (interruption.signum, len(todo) - processed))


def _watch_rounds(watch: FolderWatch, done: set[bytes]) -> Iterator[list[tuple[int, str, str]]]:
    """The watch's rounds as ``(index, path, resolved)``; indices continue after the recorded inputs."""
    index = len(done)
    for ready in watch.rounds(done):
        yield [(index + j, path, resolved) for j, (path, resolved) in enumerate(ready)]
        index += len(ready)


@dataclass
class _Interruption:
    """The first SIGINT or SIGTERM of a plain run: the record being written is finished, no other
    follows, the summary says what is left, and the exit code is 128 + the signal's number. A
    second signal stops at once (KeyboardInterrupt)."""

    signum: int | None = None

    def request(self, signum: int) -> None:
        if self.signum is not None:  # a second signal: stop at once (every record so far is flushed)
            raise KeyboardInterrupt
        self.signum = signum

    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def _stopped_by_signals(watch: FolderWatch | None, interruption: _Interruption) -> Iterator[None]:
    """SIGINT and SIGTERM end a watch after the batch in flight (its records are written, then
    the summary), and a plain run after the record being written, instead of killing the
    process mid-record; records already written stay, and ``--resume`` continues."""
    import signal

    def handler(signum: int, _frame: Any) -> None:
        if watch is not None:
            watch.stop()
        else:
            interruption.request(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _driver_messages_to_stderr(engine_info: dict[str, Any]) -> Any:
    """While Ray scores, its driver's messages go to stderr: stdout carries only the summary."""
    if not engine_info.get("ray"):
        return contextlib.nullcontext()
    from pyimgano_deploy.scale.ray_data import driver_messages_to_stderr

    return driver_messages_to_stderr()


def _write_parquet(jsonl: Path, parquet: Path, as_json: bool) -> dict[str, Any]:
    from pyimgano_deploy.scale.extras import MissingExtraError
    from pyimgano_deploy.scale.parquet_out import jsonl_to_parquet

    try:
        return jsonl_to_parquet(jsonl, parquet)
    except MissingExtraError as exc:
        _fail(f"{exc}; the JSONL records are complete in {jsonl}", as_json, EXIT_OUTPUT)
    except OSError as exc:
        _fail(f"cannot write {parquet}: {exc}; the JSONL records are complete in {jsonl}", as_json, EXIT_OUTPUT)
    raise AssertionError("unreachable")


def _summarise(runtime: Any, plan: Any, processed: int, resumed: int, jsonl: Path, maps: MapsOutput | None, dplan: Any,
               total_errors: int, total_anomalies: int, max_errors: int, elapsed: float, as_json: bool,
               parquet: dict[str, Any] | None = None, first_errors: list[dict[str, Any]] | None = None, *,
               watch: FolderWatch | None = None, scoring_s: float = 0.0, unlike: UnlikeTraining | None = None,
               interrupted: tuple[int, int] | None = None) -> None:
    """Print the run's summary and exit with its code; ``interrupted`` = (signal number, inputs
    left unscored) of a plain run stopped by a signal: exit 128 + that number."""
    import signal

    from pyimgano_deploy.runtimes.jsonl import SCHEMA_VERSION, text_and_raw

    info = runtime.engine_info
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "ok": total_errors <= max_errors and interrupted is None,
        "interrupted": None if interrupted is None else {"signal": signal.Signals(interrupted[0]).name,
                                                         "remaining": interrupted[1]},
        "bundle_digest": runtime.bundle.digest,
        "images": processed + resumed,
        "processed": processed,
        "resumed_skipped": resumed,
        "errors": total_errors,
        "first_errors": [{**e, "input": text_and_raw(e["input"])[0]} for e in first_errors or []],
        "anomalies": total_anomalies,
        "max_errors": max_errors,
        "elapsed_s": round(elapsed, 3),
        "images_per_s": round(processed / elapsed, 2) if elapsed > 0 else None,
        "skipped_files": [text_and_raw(p)[0] for p in plan.skipped],
        "skipped_links": [text_and_raw(p)[0] for p in plan.loops],
        "unmatched_inputs": plan.unmatched,
        "jsonl": jsonl.as_posix(),
        **(maps.summary() if maps is not None else {"maps_dir": None, "maps_resolution": None, "maps_dtype": None}),
        "engine": {k: info.get(k) for k in ("engine", "file", "precision", "device", "providers", "streams", "intra_op_threads", "schedule", "ray", "self_test")},
        "parquet": parquet,
        "unlike_training": None if unlike is None else unlike.summary(),
    }
    if watch is not None:  # its settings, how it ended, and the paths that changed after scoring (not scored again)
        summary["watch"] = {**watch.summary(), "changed": [text_and_raw(p)[0] for p in watch.changed],
                            "scoring_s": round(scoring_s, 3),
                            "images_per_s_scoring": round(processed / scoring_s, 2) if scoring_s > 0 else None}
    if dplan is not None:
        summary["defects"] = dplan.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    if interrupted is not None:
        sys.exit(128 + interrupted[0])  # the shell's convention for a process ended by a signal
    sys.exit(EXIT_OK if summary["ok"] else EXIT_FAILED)


def _error_line(e: dict[str, Any]) -> str:
    """One failed input for the human summary; its path once (most messages already name it)."""
    message = f"{e['message']} [{e['stage']}]"
    return message if e["input"] in e["message"] else f"{e['input']}: {message}"


def _print_summary(s: dict[str, Any]) -> None:
    rate = f"{s['images_per_s']} images/s" if s["images_per_s"] is not None else "n/a"
    lines = [
        f"images: {s['images']}  processed: {s['processed']}  resumed (already recorded): {s['resumed_skipped']}",
        f"errors: {s['errors']} (max allowed {s['max_errors']})  anomalies: {s['anomalies']}  "
        f"time: {s['elapsed_s']} s  ({rate})",
        f"records: {s['jsonl']}" + (f"  maps: {s['maps_dir']}" if s["maps_dir"] else "")
        + (f"  parquet: {s['parquet']['path']} ({s['parquet']['rows']} rows)" if s.get("parquet") else ""),
    ]
    if "defects" in s:
        d = s["defects"]
        lines.append(f"defects: {d['regions']} region(s) in {d['images_with_regions']} image(s), pixel threshold "
                     f"{d['pixel_threshold']['value']:.6g} ({d['pixel_threshold']['source']})")
    unlike = s.get("unlike_training") or {}
    if unlike.get("other_colour") or unlike.get("other_aspect"):
        how = "refused: error records" if unlike["policy"] == "refuse" else "scored, not comparable with training's"
        lines.append(f"unlike the training images ({how}): {unlike['other_colour']} of "
                     f"another colour (trained {unlike['trained_colour']}), {unlike['other_aspect']} of another aspect "
                     f"ratio (trained {unlike['trained_aspect']}); each record's source says which")
    skipped = s["skipped_files"]
    if skipped:
        lines.append(f"skipped {len(skipped)} non-image file(s):")
        lines += [f"  {p}" for p in skipped[:LIST_LIMIT]]
        if len(skipped) > LIST_LIMIT:
            lines.append(f"  ... and {len(skipped) - LIST_LIMIT} more (see --json)")
    if s.get("watch") and s["watch"]["images_per_s_scoring"] is not None:
        lines.append(f"watch: ended by {s['watch']['ended_by']}; {s['watch']['scoring_s']} s of it scoring "
                     f"({s['watch']['images_per_s_scoring']} images/s while scoring)")
    changed = (s.get("watch") or {}).get("changed") or []
    if changed:
        lines.append(f"{s['watch']['unscored_changes']} image(s) not scored: {len(changed)} scored path(s) changed afterwards "
                     "(a watch scores each path once; give new images new names):")
        lines += [f"  {p}" for p in changed[:LIST_LIMIT]]
    failed = s["first_errors"]
    if failed:
        shown_all = len(failed) == s["errors"]
        lines.append(f"failed {s['errors']} input(s)" + (":" if shown_all else f"; the first {len(failed)} of this run:"))
        lines += [f"  {_error_line(e)}" for e in failed]
        if not shown_all:
            lines.append(f"  ... every failure is a record with status \"error\" in {s['jsonl']}")
    if s["interrupted"] is not None:
        lines.append(f"INTERRUPTED by {s['interrupted']['signal']}: {s['interrupted']['remaining']} input(s) not scored; "
                     f"the records written are complete, and --resume with the same --save-jsonl scores the rest")
    elif s["ok"]:
        lines.append("OK")
    else:
        lines.append("FAILED: too many errors")
    for line in lines:
        click.echo(line, err=True)
