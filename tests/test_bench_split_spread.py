"""benchmarks/split_spread.py: the figures it reads from a report, and their spread."""

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from split_spread import figures, spread  # noqa: E402


def test_spread_is_mean_sample_sd_min_max_of_the_defined_values():
    out = spread([0.9, None, 0.94, 0.92])
    assert out == {"mean": 0.92, "sd": round(statistics.stdev([0.9, 0.94, 0.92]), 4), "min": 0.9, "max": 0.94}


def test_spread_of_one_or_no_value_has_no_standard_deviation():
    assert spread([0.5])["sd"] is None
    assert spread([None]) == {"mean": None, "sd": None, "min": None, "max": None}


def test_figures_read_image_and_pixel_metrics_and_tolerate_a_missing_pixel_block():
    report = {"metrics": {"image": {"auroc": 0.91, "recall": 0.7, "precision": 0.9}, "pixel": None}}
    assert figures(report) == {"image_auroc": 0.91, "pixel_auroc": None, "aupro": None,
                               "recall_at_threshold": 0.7, "precision_at_threshold": 0.9}


def test_a_named_category_without_train_is_refused_with_its_path(tmp_path):
    from _rundir import category_dirs

    (tmp_path / "good" / "train").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    assert category_dirs(tmp_path, None, tmp_path, quick=False) == [tmp_path / "good"]
    with pytest.raises(SystemExit, match="no train/ folder") as err:
        category_dirs(tmp_path, "good,other", tmp_path, quick=False)
    assert str(tmp_path / "other") in str(err.value)


@pytest.mark.parametrize("only", ["3", "-1", "a"])
def test_only_out_of_range_or_not_an_index_is_an_argparse_error(only, capsys):
    from split_spread import main

    with pytest.raises(SystemExit) as err:
        main(["--only", only, "--quick"])
    assert err.value.code == 2
    assert "--only" in capsys.readouterr().err
