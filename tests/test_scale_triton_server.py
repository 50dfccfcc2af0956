"""Smoke test: serve an exported repository with a real Triton server and score the golden
source files through tritonclient, with parity to the torch-free runtime.

The server is the one inside ``nvidia-pytriton`` (pip install nvidia-pytriton): it has the
Python backend but no onnxruntime backend, so the repository is written with
``--engine-backend python``. Its Python stub embeds the system CPython and needs NumPy < 2;
when this environment has NumPy 2, point ``PYIMGANO_TRITON_SITE`` at a folder holding
NumPy 1.26 (``pip install --target DIR numpy==1.26.4``), which goes first on the stub's path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from run_factory import make_run_dir

from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.bundles.golden import unpack_sources

pytriton = pytest.importorskip("pytriton", reason="no Triton server here (pip install nvidia-pytriton brings one)")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install 'tritonclient[grpc]')")

REPO_ROOT = Path(__file__).resolve().parents[1]
STUB_SITE = os.environ.get("PYIMGANO_TRITON_SITE")
if int(np.__version__.split(".")[0]) >= 2 and not STUB_SITE:
    pytest.skip("Triton's Python stub needs NumPy < 2 and this environment has NumPy 2: set PYIMGANO_TRITON_SITE to a "
                "folder from `pip install --target DIR numpy==1.26.4`", allow_module_level=True)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run

    root = tmp_path_factory.mktemp("triton")
    bundle = export_run(make_run_dir(root, size=48, coreset_ratio=0.2), root / "bundle", ExportOptions(golden=4), log=lambda m: None).bundle_dir
    code, _, _ = run_cli("export-triton", "--bundle", str(bundle), "--out", str(root / "models"), "--engine-backend", "python", "--name", "pc")
    assert code == 0
    server_dir = Path(pytriton.__file__).parent / "tritonserver"
    backends = root / "backends"  # the stub for this Python goes beside the backend library
    shutil.copytree(server_dir / "backends", backends)
    stub = server_dir / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
    shutil.copy(stub, backends / "python" / stub.name)
    http, grpc, metrics = _free_ports(3)
    paths = [p for p in (STUB_SITE, str(REPO_ROOT), *[p for p in sys.path if p.endswith("site-packages")]) if p]
    libs = Path(pytriton.__file__).parents[1] / "nvidia_pytriton.libs"  # the stub's RPATH is relative to its own folder
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths),
           "LD_LIBRARY_PATH": os.pathsep.join(p for p in (str(libs), os.environ.get("LD_LIBRARY_PATH", "")) if p)}
    log = open(root / "triton.log", "wb")
    proc = subprocess.Popen([str(server_dir / "bin" / "tritonserver"), f"--model-repository={root / 'models'}",
                             f"--backend-directory={backends}", f"--http-port={http}", f"--grpc-port={grpc}",
                             f"--metrics-port={metrics}"], stdout=log, stderr=subprocess.STDOUT, env=env)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"tritonserver exited with {proc.returncode}: {(root / 'triton.log').read_text(errors='replace')[-3000:]}")
            try:
                if client.is_model_ready("pc"):
                    break
            except grpcclient.InferenceServerException:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"the ensemble never became ready: {(root / 'triton.log').read_text(errors='replace')[-3000:]}")
        yield client, bundle
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _infer(client, blobs: list[bytes]):
    data = np.array([[b] for b in blobs], dtype=np.object_)
    tensor = grpcclient.InferInput("IMAGE", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return client.infer("pc", [tensor], outputs=[grpcclient.InferRequestedOutput(n) for n in ("label", "score", "threshold", "anomaly_map")])


def test_golden_sources_served_by_triton_match_the_runtime(served) -> None:
    from pyimgano_deploy.inputs import decode_image
    from pyimgano_deploy.runtimes import load_bundle

    client, bundle = served
    files = unpack_sources(read_bundle(bundle).load_golden())
    result = _infer(client, files)
    with load_bundle(bundle) as rt:
        want = rt.infer([decode_image(f, name="golden") for f in files], input_format="rgb_u8_hwc", include_maps=True)
    np.testing.assert_allclose(result.as_numpy("score").ravel(), [r.score for r in want], rtol=1e-5)
    assert result.as_numpy("label").ravel().tolist() == [r.label for r in want]
    assert result.as_numpy("anomaly_map").shape[0] == len(files)


def test_a_bad_image_is_an_error_response_naming_it(served) -> None:
    client, _ = served
    with pytest.raises(grpcclient.InferenceServerException, match="request image"):
        _infer(client, [b"not an image"])
