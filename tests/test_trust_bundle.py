"""A bundle's identity: digest, signature, a manifest that cannot be edited or swapped unseen.

Each test is one hostile case from the trust issue; the bundle is a real export of a small
random-init PatchCore run, copied per test.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bundle_factory import rewrite_manifest
from cli_helpers import run_cli
from pyimgano_deploy.bundles.exit_codes import EXIT_OUTPUT
from pyimgano_deploy.bundles import InvalidBundleError, read_bundle
from pyimgano_deploy.bundles.errors import DigestMismatchError, SignatureError
from pyimgano_deploy.bundles.identity import bundle_digest, parse_digest
from pyimgano_deploy.runtimes import load_bundle, validate_bundle
from run_factory import make_run_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run dir, bundle dir) of a real export."""
    from pyimgano_deploy.exporters.bundle_export import export_run

    root = tmp_path_factory.mktemp("trust")
    run = make_run_dir(root, size=64, image_size=48)  # files are resized: interpolation matters
    bundle = export_run(run, root / "bundle", log=lambda m: None).bundle_dir
    return run, bundle


@pytest.fixture
def bundle(exported: tuple[Path, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "b"
    shutil.copytree(exported[1], copy)
    return copy


_cli = run_cli


def _manifest(path: Path) -> dict:
    return json.loads((path / "bundle.json").read_text())


# ----------------------------------------------------------------------------- digest
def test_digest_is_sha256_of_the_canonical_manifest(bundle: Path) -> None:
    b = read_bundle(bundle)
    assert b.digest == bundle_digest(_manifest(bundle))
    assert b.digest.startswith("sha256:") and parse_digest(b.digest.upper().replace("SHA256:", "")) == b.digest


def test_export_prints_the_digest_and_validate_json_reports_it(exported: tuple[Path, Path], tmp_path: Path) -> None:
    code, out, _ = _cli("export", "--run", str(exported[0]), "--out", str(tmp_path / "b2"), "--json")
    assert code == 0
    digest = json.loads(out)["digest"]
    code, out, _ = _cli("validate", str(tmp_path / "b2"), "--json", "--expect-digest", digest)
    assert code == 0 and json.loads(out)["digest"] == digest
    assert digest == read_bundle(tmp_path / "b2").digest


def test_expect_digest_mismatch_is_exit_4_in_validate_infer_and_load_bundle(exported: tuple[Path, Path], bundle: Path) -> None:
    wrong = "sha256:" + "0" * 64
    code, out, _ = _cli("validate", str(bundle), "--expect-digest", wrong)
    assert code == 4 and "expected sha256:000" in out
    with pytest.raises(DigestMismatchError) as info:
        load_bundle(bundle, expected_digest=wrong)
    assert info.value.exit_code == 4
    image = next((exported[0].parent / "data").rglob("*.png"))
    out = bundle.parent / "o.jsonl"
    code, _, err = _cli("infer", "--bundle", str(bundle), "--input", str(image), "--save-jsonl", str(out), "--expect-digest", wrong)
    assert code == 4 and "not the one that was pinned" in err and not out.exists()


def test_malformed_expect_digest_is_a_usage_error(bundle: Path) -> None:
    code, _, err = _cli("validate", str(bundle), "--expect-digest", "md5:abc")
    assert code == 2 and "sha256:" in err


def test_any_manifest_edit_changes_the_digest(bundle: Path) -> None:
    before = read_bundle(bundle).digest
    rewrite_manifest(bundle, lambda m: m["input"]["preprocess"].update(interpolation="nearest"))
    after = read_bundle(bundle).digest
    assert before != after
    code, _, _ = _cli("validate", str(bundle), "--expect-digest", before)
    assert code == 4


# ----------------------------------------------------------------------------- edited manifests
def test_edited_interpolation_fails_validate(bundle: Path) -> None:
    rewrite_manifest(bundle, lambda m: m["input"]["preprocess"].update(interpolation="nearest"))
    code, out, _ = _cli("validate", str(bundle), "--json")
    report = json.loads(out)
    assert code == 6
    pipeline = next(c for c in report["checks"] if c["name"] == "pipeline")
    assert pipeline["status"] == "fail" and "preprocessing or tiling" in pipeline["detail"]


def test_added_tiling_block_fails_validate(bundle: Path) -> None:
    rewrite_manifest(bundle, lambda m: m.update(tiling={"tile": 48, "stride": 32}))
    code, out, _ = _cli("validate", str(bundle), "--json")
    assert code == 6 and next(c for c in json.loads(out)["checks"] if c["name"] == "pipeline")["status"] == "fail"


def test_loosened_parity_tolerance_fails_validate(bundle: Path) -> None:
    rewrite_manifest(bundle, lambda m: m["parity"]["fp32"]["tolerance"].update(score_abs=1e9, map_abs=1e9))
    code, out, _ = _cli("validate", str(bundle))
    assert code == 3 and "tolerance.score_abs" in out and "edited" in out


def test_bundle_gated_under_rule_1_is_checked_under_the_current_rule(bundle: Path) -> None:
    def as_rule_1(m: dict) -> None:  # rule 1 recorded no "rule" and max(1, |thr|) numbers
        m["parity"]["fp32"]["tolerance"].pop("rule")
        m["parity"]["fp32"]["tolerance"].update(score_abs=1e9)
    rewrite_manifest(bundle, as_rule_1)
    code, out, _ = _cli("validate", str(bundle), "--json")
    golden = next(c for c in json.loads(out)["checks"] if c["name"] == "golden")
    assert code == 0 and "exported under gate rule 1, checked under rule 2" in golden["detail"]
    assert json.loads(out)["parity"]["tolerance"]["score_abs"] < 1e9


def test_manifest_symlink_to_outside_is_refused(bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    shutil.copy(bundle / "bundle.json", outside)
    (bundle / "bundle.json").unlink()
    os.symlink(outside, bundle / "bundle.json")
    code, out, _ = _cli("validate", str(bundle))
    assert code == 3 and "symlink" in out


@pytest.mark.parametrize("text, needle", [
    ("[" * 100_000 + "]" * 100_000, "nested"),
    ('{"schema_version": "1.1", "n": ' + "9" * 5000 + "}", "cannot be parsed"),
    ('{"schema_version": "1.1", "n": ' + "9" * 30 + "}", "out of range"),
    ('{"a": ' * 40 + "1" + "}" * 40, "nested deeper"),
    ("\xff\xfe", "not UTF-8"),
])
def test_absurd_manifest_is_exit_3_with_a_message(bundle: Path, text: str, needle: str) -> None:
    (bundle / "bundle.json").write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    code, out, _ = _cli("validate", str(bundle))
    assert code == 3 and needle in out and "Traceback" not in out
    with pytest.raises(InvalidBundleError):
        read_bundle(bundle)


def test_crop_contradicting_the_model_input_is_exit_3(bundle: Path) -> None:
    rewrite_manifest(bundle, lambda m: m["input"]["preprocess"].update(center_crop=[32, 32]))
    code, out, _ = _cli("validate", str(bundle))
    assert code == 3 and "input.height/width" in out


def test_engine_entry_naming_a_non_engine_file_is_exit_3(bundle: Path) -> None:
    rewrite_manifest(bundle, lambda m: m["engines"][0].update(file="golden.npz"))
    code, out, _ = _cli("validate", str(bundle))
    assert code == 3 and "not an ONNX model" in out


def test_external_data_outside_the_bundle_is_exit_3(bundle: Path, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(bundle / "model.onnx"))
    onnx.save_model(model, str(bundle / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.data", size_threshold=1024)
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../stolen.data"
    onnx.save_model(model, str(bundle / "model.onnx"))
    os.replace(bundle / "w.data", tmp_path / "stolen.data")
    rewrite_manifest(bundle)
    code, out, _ = _cli("validate", str(bundle))
    assert code == 3 and "outside the bundle" in out
    code, _, err = _cli("infer", "--bundle", str(bundle), "--input", str(tmp_path / "x.png"), "--save-jsonl", str(tmp_path / "o.jsonl"))
    assert code == 3 and "outside the bundle" in err


# ----------------------------------------------------------------------------- signatures
@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("cryptography", reason="bundle signatures need the 'sign' extra (cryptography)")
    out = tmp_path_factory.mktemp("keys")
    code, stdout, _ = _cli("keygen", "--out", str(out))
    assert code == 0 and "private key" in stdout
    return out / "bundle_signing.key", out / "bundle_signing.pub"


def test_keygen_never_overwrites(keys: tuple[Path, Path]) -> None:
    code, _, err = _cli("keygen", "--out", str(keys[0].parent))
    assert code == EXIT_OUTPUT and "never overwritten" in err
    assert oct(keys[0].stat().st_mode & 0o777) == "0o600"


def test_signed_export_verifies_and_tampering_is_exit_7(exported: tuple[Path, Path], keys: tuple[Path, Path], tmp_path: Path) -> None:
    private, public = keys
    out = tmp_path / "signed"
    code, stdout, _ = _cli("export", "--run", str(exported[0]), "--out", str(out), "--sign-key", str(private), "--json")
    assert code == 0 and json.loads(stdout)["signed"] is True and (out / "bundle.sig").is_file()
    code, report, _ = _cli("validate", str(out), "--public-key", str(public), "--json")
    assert code == 0 and json.loads(report)["signature"]["algorithm"] == "ed25519"
    assert load_bundle(out, public_key=public).bundle.signature is not None
    # a re-hashed edit keeps every checksum valid but breaks the signature
    rewrite_manifest(out, lambda m: m["thresholds"]["image"].update(value=1e9))
    code, text, _ = _cli("validate", str(out), "--public-key", str(public))
    assert code == 7 and "signs digest" in text


def test_unsigned_bundle_with_a_public_key_is_exit_7(bundle: Path, keys: tuple[Path, Path]) -> None:
    code, out, _ = _cli("validate", str(bundle), "--public-key", str(keys[1]))
    assert code == 7 and "not signed" in out
    with pytest.raises(SignatureError):
        load_bundle(bundle, public_key=keys[1])


def test_signature_by_another_key_is_exit_7(bundle: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    from pyimgano_deploy.bundles.signing import generate_keypair, sign_bundle

    other_private, _ = generate_keypair(tmp_path / "other")
    sign_bundle(bundle, read_bundle(bundle).digest, other_private)
    code, out, _ = _cli("validate", str(bundle), "--public-key", str(keys[1]))
    assert code == 7 and "does not verify" in out


# ----------------------------------------------------------------------------- folders
def test_force_refuses_a_folder_that_is_not_a_bundle(exported: tuple[Path, Path], tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    code, _, err = _cli("export", "--run", str(exported[0]), "--out", str(notes), "--force")
    assert code == EXIT_OUTPUT and "not a bundle" in err and (notes / "todo.txt").read_text() == "keep me"


def test_force_refuses_the_run_its_parent_and_a_folder_inside_it(exported: tuple[Path, Path]) -> None:
    run = exported[0]
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    for out, needle in ((run, "inside it"), (run.parent, "contains the run"), (run / "model", "inside it")):
        code, _, err = _cli("export", "--run", str(run), "--out", str(out), "--force")
        assert code == EXIT_OUTPUT and needle in err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_force_refuses_a_bundle_holding_extra_files(exported: tuple[Path, Path], bundle: Path) -> None:
    (bundle / "my_notes.txt").write_text("keep me")
    code, _, err = _cli("export", "--run", str(exported[0]), "--out", str(bundle), "--force")
    assert code == EXIT_OUTPUT and "my_notes.txt" in err and (bundle / "my_notes.txt").exists()


def test_force_replaces_a_bundle(exported: tuple[Path, Path], bundle: Path) -> None:
    code, _, _ = _cli("export", "--run", str(exported[0]), "--out", str(bundle), "--force")
    assert code == 0 and validate_bundle(bundle).ok
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]


def test_leftovers_of_a_killed_export_never_validate_and_are_cleaned(exported: tuple[Path, Path], bundle: Path) -> None:
    dead_pid = 2**22 + 12345  # above the default pid_max: no such process
    for kind in ("tmp", "old"):
        leftover = bundle.parent / f".{bundle.name}.{kind}-{dead_pid}"
        shutil.copytree(bundle, leftover)
        code, out, _ = _cli("validate", str(leftover))
        assert code == 3 and "work folder of an export" in out
    marked = bundle.parent / "marked"
    shutil.copytree(bundle, marked)
    (marked / ".incomplete").write_text("export in progress\n")
    code, out, _ = _cli("validate", str(marked))
    assert code == 3 and "incomplete bundle" in out
    code, _, err = _cli("export", "--run", str(exported[0]), "--out", str(bundle), "--force")
    assert code == 0 and "interrupted export" in err
    assert not list(bundle.parent.glob(f".{bundle.name}.*"))


def test_demo_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "data.csv").write_text("1,2,3")
    code, _, err = _cli("demo", "--out", str(keep), "--random-init", "--size", "64")
    assert code == EXIT_OUTPUT and "not a demo output folder" in err and (keep / "data.csv").exists()


def test_golden_carries_source_files_with_eager_scores(bundle: Path) -> None:
    from pyimgano_deploy.bundles.golden import unpack_sources

    golden = read_bundle(bundle).load_golden()
    files = unpack_sources(golden)
    assert len(files) == len(golden["source_score"]) == _manifest(bundle)["golden"]["n_sources"] >= 2
    assert all(f[:4] == b"\x89PNG" for f in files) and np.all(np.isfinite(golden["source_score"]))
