"""The soak's memory figure: growth is the least-squares slope over the last window."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def soak():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_soak", BENCH / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_soak"] = module
    spec.loader.exec_module(module)
    return module


def test_a_steady_climb_of_10_mb_an_hour_is_reported_as_10_mb_per_hour(soak):
    samples = [(t, 200 + 10 * t / 3600) for t in range(0, 3600, 10)]
    assert soak.slope_per_hour(samples) == pytest.approx(10.0)


def test_only_the_last_30_minutes_of_an_hour_count_so_warming_up_is_forgiven(soak):
    warming = [(t, 100 + 200 * t / 1800) for t in range(0, 1800, 10)]
    flat = [(t, 300.0) for t in range(1800, 3601, 10)]
    rates = soak.growth({"contacts": warming + flat}, duration_s=3600)
    assert rates["contacts"] == pytest.approx(0.0, abs=0.5)


def test_a_short_run_is_judged_on_its_second_half(soak):
    climbing = [(t, 100 + t / 60) for t in range(0, 181, 10)]  # 1 MB a minute
    assert soak.growth({"identity": climbing}, duration_s=180)["identity"] == \
        pytest.approx(60.0)
