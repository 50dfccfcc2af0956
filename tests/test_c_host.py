"""examples/c_host: a C program embedding CPython scores raw BGR frames handed over without a copy.

The compile test is skipped where no C compiler, Python.h or libpython exists. Python-side
tests check that the wrapped frame shares memory with the host's buffer and that nothing
keeps a reference to it once ``score_bgr`` returns.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from bundle_factory import build_tiny_bundle, random_images
from pyimgano_deploy.runtimes import load_bundle
from pyimgano_deploy.runtimes.embed import open_scorer, wrap_bgr

REPO = Path(__file__).resolve().parents[1]
HOST_C = REPO / "examples" / "c_host" / "host.c"
LINE = re.compile(r"^frame (\d+): score=(\S+) label=(\S+)$")


def _var(name: str) -> str:
    return str(sysconfig.get_config_var(name) or "")


def _compiler() -> str | None:
    for cand in (os.environ.get("CC", ""), _var("CC").split(" ")[0], "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return cand
    return None


def _ldflags() -> list[str] | None:
    """``python3-config --ldflags --embed`` of this interpreter, else the same from sysconfig."""
    config = Path(sys.executable).parent / f"python{_var('VERSION')}-config"
    flags = None
    if config.is_file():
        proc = subprocess.run([str(config), "--ldflags", "--embed"], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            flags = shlex.split(proc.stdout)
    shared = bool(sysconfig.get_config_var("Py_ENABLE_SHARED"))
    libdir, libpl = _var("LIBDIR"), _var("LIBPL")
    lib = Path(libdir, _var("LDLIBRARY")) if shared else Path(libpl, _var("LIBRARY"))
    if not shared and not lib.is_file():
        lib = Path(libdir, _var("LIBRARY"))
    if not lib.is_file():
        return None
    if flags is None:
        flags = [f"-L{lib.parent}", f"-lpython{_var('LDVERSION')}", *shlex.split(_var("LIBS"))]
        flags += shlex.split(_var("SYSLIBS"))
    # static libpython: extension modules (numpy, cv2) resolve the C API from the executable
    return [*flags, *shlex.split(_var("LINKFORSHARED")), f"-Wl,-rpath,{libdir}"]


@pytest.fixture(scope="module")
def host_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (cc/gcc/clang) found")
    include = _var("INCLUDEPY")
    if not Path(include, "Python.h").is_file():
        pytest.skip(f"Python headers not found (no Python.h in INCLUDEPY={include!r})")
    ldflags = _ldflags()
    if ldflags is None:
        pytest.skip("libpython (shared or static) not found for embedding")
    out = tmp_path_factory.mktemp("c_host") / "host"
    cmd = [cc, "-O1", "-Wall", "-Wextra", f"-I{include}", f'-DPYHOST_PYTHON="{sys.executable}"',
           "-o", str(out), str(HOST_C), *ldflags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{shlex.join(cmd)}\n{proc.stderr}"
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "b")


def _run_host(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120, env=env)


def _parse(stdout: str) -> list[tuple[int, float, str]]:
    rows = [LINE.match(line) for line in stdout.splitlines()]
    assert all(rows), f"unexpected output:\n{stdout}"
    return [(int(m.group(1)), float(m.group(2)), m.group(3)) for m in rows if m]


def _synthetic(height: int, width: int, n: int) -> np.ndarray:
    """The C host's make_synthetic_frame, in numpy (BGR uint8 HWC)."""
    spread = 20 + 50 * n
    y, x, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(3), indexing="ij")
    v = 128 + (x * 7 + y * 13 + c * 5 + n * 31) % (2 * spread + 1) - spread
    return np.clip(v, 0, 255).astype(np.uint8)


def _expected(bundle: Path, frames: list[np.ndarray]) -> list[tuple[float, str]]:
    runtime = load_bundle(bundle, batch_size=1)
    results = runtime.infer(frames, input_format="bgr_u8_hwc")
    assert all(r.ok for r in results)
    return [(float(r.score), "none" if r.label is None else str(r.label)) for r in results]


def _assert_matches(got: list[tuple[int, float, str]], want: list[tuple[float, str]]) -> None:
    assert [g[0] for g in got] == list(range(len(want)))
    for (_, score, label), (w_score, w_label) in zip(got, want):
        assert abs(score - w_score) <= 1e-6, (score, w_score)
        assert label == w_label


def test_c_host_scores_frame_files_like_the_runtime(host_binary: Path, bundle: Path, tmp_path: Path) -> None:
    height, width = 48, 64
    frames = list(random_images(3, height, width, seed=7))
    paths = []
    for i, frame in enumerate(frames):
        paths.append(tmp_path / f"f{i}.bgr")
        paths[-1].write_bytes(frame.tobytes())
    proc = _run_host(host_binary, "--threads", "1", str(bundle), str(height), str(width), *map(str, paths))
    assert proc.returncode == 0, proc.stderr
    got = _parse(proc.stdout)
    want = _expected(bundle, frames)
    _assert_matches(got, want)
    assert {g[2] for g in got} <= {"0", "1"}
    assert len({g[1] for g in got}) == 3  # distinct frames, distinct scores


def test_c_host_synthetic_frames_match_the_runtime(host_binary: Path, bundle: Path) -> None:
    proc = _run_host(host_binary, str(bundle), "40", "50")
    assert proc.returncode == 0, proc.stderr
    _assert_matches(_parse(proc.stdout), _expected(bundle, [_synthetic(40, 50, n) for n in range(3)]))


def test_c_host_errors_become_exit_codes(host_binary: Path, bundle: Path, tmp_path: Path) -> None:
    missing = _run_host(host_binary, str(tmp_path / "no_bundle"), "8", "8")
    assert missing.returncode == 4
    assert "InvalidBundleError" in missing.stderr and "Traceback" in missing.stderr
    short = tmp_path / "short.bgr"
    short.write_bytes(b"\0" * 10)
    bad_frame = _run_host(host_binary, str(bundle), "8", "8", str(short))
    assert bad_frame.returncode == 2
    assert "expected exactly 192 bytes" in bad_frame.stderr
    assert _run_host(host_binary, str(bundle)).returncode == 2  # usage


def test_wrap_bgr_does_not_copy() -> None:
    height, width = 4, 5
    buf = bytearray(np.arange(height * width * 3, dtype=np.uint8).tobytes())
    view = memoryview(buf)
    frame = wrap_bgr(view, height, width)
    assert frame.shape == (height, width, 3) and frame.dtype == np.uint8
    assert np.shares_memory(frame, np.frombuffer(buf, dtype=np.uint8))
    buf[0] = 200
    assert frame[0, 0, 0] == 200  # same memory, seen through the array
    readonly = wrap_bgr(memoryview(bytes(height * width * 3)), height, width)
    assert not readonly.flags.writeable
    with pytest.raises(ValueError, match="buffer holds 59 bytes but a BGR uint8 frame of 4x5x3 needs 60"):
        wrap_bgr(memoryview(bytes(59)), height, width)


def test_score_bgr_keeps_no_reference_to_the_buffer(bundle: Path) -> None:
    scorer = open_scorer(bundle, threads=1)
    frames = random_images(2, 32, 40, seed=3)
    buf = bytearray(frames.tobytes())
    view = memoryview(buf)
    one = scorer.score_bgr(view[: frames[0].nbytes], 32, 40)
    many = scorer.score_bgr_batch(view, 2, 32, 40)
    view.release()
    buf.append(0)  # a bytearray cannot be resized while any buffer export (an array) is alive
    want = [(float(r.score), r.label) for r in scorer.runtime.infer(list(frames), input_format="bgr_u8_hwc")]
    assert one == want[0] and many == want
    assert isinstance(one[0], float) and one[1] in (0, 1)


def test_scorer_throughput_mode_scores_like_one_call(bundle: Path) -> None:
    frames = random_images(5, 32, 40, seed=4)
    buf = memoryview(bytearray(frames.tobytes()))
    one = open_scorer(bundle, threads=2, batch_size=5).score_bgr_batch(buf, 5, 32, 40)
    tuned = open_scorer(bundle, threads=2, batch_size=5, streams=2)
    assert tuned.runtime.streams == 2
    many = tuned.score_bgr_batch(buf, 5, 32, 40)
    assert [m[1] for m in many] == [o[1] for o in one]
    assert [m[0] for m in many] == pytest.approx([o[0] for o in one], rel=1e-6, abs=1e-6)


TORCH_FREE = r"""
import sys
from pyimgano_deploy.runtimes.embed import open_scorer
scorer = open_scorer(sys.argv[1], threads=1)
scorer.score_bgr(memoryview(bytes(8 * 8 * 3)), 8, 8)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx")))
"""


def test_embed_never_imports_torch_or_onnx(bundle: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE, str(bundle)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
