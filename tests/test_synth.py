"""Tests for streamrec.core.synth: determinism, the MovieLens shape, the planted truth, the chunked writer."""

from __future__ import annotations

import json
import math
import os
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from streamrec.core import synth_files
from streamrec.core.schema import WHOLE_STAR
from streamrec.core.synth import SynthConfig, generate_frame
from streamrec.core.synth_files import main, write_dataset
from streamrec.storage.ratings import read_ratings_pandas

pytestmark = pytest.mark.unit

SMALL = SynthConfig(n_users=300, n_items=800, n_ratings=12_000)


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return generate_frame(SMALL)


def test_same_seed_same_data_other_seed_other_data(small):
    again = generate_frame(SMALL)
    pd.testing.assert_frame_equal(small, again)
    other = generate_frame(SynthConfig(n_users=300, n_items=800, n_ratings=12_000, seed=43))
    assert len(other) == len(small)
    assert not other.equals(small)


def test_columns_sizes_and_ranges(small):
    assert list(small.columns) == ["user", "item", "rating", "ts"]
    assert [str(t) for t in small.dtypes] == ["int64", "int64", "float64", "int64"]
    assert len(small) == 12_000
    assert small["user"].between(1, 300).all() and small["item"].between(1, 800).all()
    assert small["ts"].between(SMALL.start_ts, SMALL.end_ts).all()
    assert (np.diff(small["ts"].to_numpy()) >= 0).all()


def test_ratings_on_the_grid_and_in_range(small):
    assert set(small["rating"].unique()) <= {0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0}
    assert small["rating"].nunique() == 10  # every grid point occurs
    whole = generate_frame(SynthConfig(n_users=100, n_items=300, n_ratings=3000, scale=WHOLE_STAR))
    assert set(whole["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_each_pair_at_most_once(small):
    assert not small.duplicated(["user", "item"]).any()
    # also for users rating half of all items (the cap), where draws with replacement collide a lot
    dense = generate_frame(SynthConfig(n_users=20, n_items=100, n_ratings=1000, popularity_exponent=1.5))
    assert not dense.duplicated(["user", "item"]).any()
    assert dense.groupby("user").size().max() == 50


def test_user_activity_floor_and_skew(small):
    per_user = small.groupby("user").size()
    assert len(per_user) == 300 and per_user.min() >= 5
    assert per_user.max() > 5 * per_user.median()  # heavy tail


def test_item_popularity_is_skewed(small):
    counts = small["item"].value_counts().to_numpy()  # descending
    top = counts[: len(counts) // 10].sum() / counts.sum()
    assert top > 0.35


def test_write_dataset_files_order_truth_and_loader(tmp_path, small):
    out = str(tmp_path / "ds")
    truth = write_dataset(SMALL, out, n_partitions=4, history_fraction=0.5)
    assert sorted(os.listdir(out)) == ["history", "partitions", "truth.json"]
    assert os.listdir(os.path.join(out, "history")) == ["ratings.csv"]
    assert sorted(os.listdir(os.path.join(out, "partitions"))) == [f"p-0000{j}.csv" for j in (1, 2, 3, 4)]
    with open(os.path.join(out, "history", "ratings.csv")) as f:
        assert f.readline() == "user,item,rating,timestamp\n"
    with open(os.path.join(out, "truth.json")) as f:
        assert json.load(f) == truth
    assert truth["config"]["n_ratings"] == 12_000 and truth["mu"] == 3.5 and truth["sigma"] == 0.5
    assert [f["rows"] for f in truth["files"]] == [6000, 1500, 1500, 1500, 1500]

    parts = [read_ratings_pandas(os.path.join(out, f["path"])) for f in truth["files"]]
    assert [len(p) for p in parts] == [6000, 1500, 1500, 1500, 1500]
    ts = np.concatenate([p["ts"].to_numpy(dtype=np.int64) for p in parts])
    assert (np.diff(ts) >= 0).all()  # time-ordered across history -> partitions
    both = pd.concat(parts, ignore_index=True)
    assert both["ts"].isna().sum() == 0
    both["ts"] = both["ts"].astype("int64")
    pd.testing.assert_frame_equal(both, small)  # the files hold exactly generate_frame's ratings


def test_later_partitions_contain_new_users(tmp_path):
    out = str(tmp_path / "ds")
    truth = write_dataset(SMALL, out, n_partitions=5)
    seen: set[int] = set()
    new_share = []
    for f in truth["files"]:
        users = set(read_ratings_pandas(os.path.join(out, f["path"]))["user"])
        new = users - seen
        assert f["users"] == len(users) and f["new_users"] == len(new)
        new_share.append(len(new) / len(users))
        seen |= users
    assert all(share > 0.1 for share in new_share[1:]), new_share
    assert truth["files"][-1]["new_users"] >= 10


def test_best_rmse_is_sigma_plus_rounding(tmp_path):
    cfg = SynthConfig(n_users=400, n_items=1000, n_ratings=30_000, sigma=0.5)
    truth = write_dataset(cfg, str(tmp_path / "a"))
    # noise 0.5 plus rounding to a 0.5 grid (uniform error, variance 0.5**2 / 12); clipping only lowers it
    assert 0.47 < truth["best_rmse"] < math.sqrt(0.5**2 + 0.5**2 / 12) + 0.01
    # without noise only rounding remains: every error is at most half a step
    exact = write_dataset(
        SynthConfig(n_users=400, n_items=1000, n_ratings=30_000, sigma=0.0), str(tmp_path / "b")
    )
    assert 0.10 < exact["best_rmse"] < 0.25 / math.sqrt(3) + 0.01


def test_parquet_and_partition_size(tmp_path):
    cfg = SynthConfig(n_users=100, n_items=300, n_ratings=2000)
    out = str(tmp_path / "pq")
    truth = write_dataset(cfg, out, history_fraction=0.6, fmt="parquet", partition_size=300)
    assert [f["path"] for f in truth["files"]] == ["history/ratings.parquet"] + [
        f"partitions/p-0000{j}.parquet" for j in (1, 2, 3)
    ]
    assert [f["rows"] for f in truth["files"]] == [1200, 300, 300, 200]
    loaded = read_ratings_pandas([os.path.join(out, "history"), os.path.join(out, "partitions")])
    expected = generate_frame(cfg)
    assert loaded["user"].tolist() == expected["user"].tolist()
    assert loaded["rating"].tolist() == expected["rating"].tolist()


def test_moderately_large_run_goes_through_the_chunked_path(tmp_path, monkeypatch):
    """300k ratings with small time windows and several history files: same data as in memory, less memory."""
    monkeypatch.setattr(synth_files, "_WINDOW_RATINGS", 40_000)
    cfg = SynthConfig(n_users=6000, n_items=5000, n_ratings=300_000, seed=7)
    tracemalloc.start()
    try:
        truth = write_dataset(cfg, str(tmp_path / "big"), history_file_rows=60_000)
        write_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        frame = generate_frame(cfg)
        frame_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert truth["chunks"]["user_units"] == 6 and truth["chunks"]["windows"] == 8
    assert truth["chunks"]["max_window_rows"] < 60_000
    assert write_peak < 25e6 and write_peak < frame_peak / 2, (write_peak, frame_peak)
    assert [f["path"] for f in truth["files"][:3]] == [f"history/part-0000{j}.csv" for j in range(3)]
    loaded = read_ratings_pandas([str(tmp_path / "big" / "history"), str(tmp_path / "big" / "partitions")])
    assert len(loaded) == 300_000
    assert (loaded["ts"].to_numpy(dtype=np.int64) == frame["ts"].to_numpy()).all()
    assert (loaded["user"].to_numpy() == frame["user"].to_numpy()).all()
    assert (loaded["item"].to_numpy() == frame["item"].to_numpy()).all()
    assert not loaded.duplicated(["user", "item"]).any()


def test_cli_prints_truth_summary(tmp_path, capsys):
    out = str(tmp_path / "cli")
    args = [
        "--out",
        out,
        "--users",
        "50",
        "--items",
        "200",
        "--ratings",
        "1000",
        "--partitions",
        "2",
        "--seed",
        "3",
    ]
    assert main(args + ["--rank", "4", "--sigma", "0.3", "--format", "csv"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["config"]["rank"] == 4 and summary["sigma"] == 0.3 and summary["n_ratings"] == 1000
    assert sorted(os.listdir(os.path.join(out, "partitions"))) == ["p-00001.csv", "p-00002.csv"]
    assert len(read_ratings_pandas(os.path.join(out, "history"))) == 500


def test_invalid_configs(tmp_path):
    with pytest.raises(ValueError, match="do not fit"):
        SynthConfig(n_users=2, n_items=10, n_ratings=11)
    with pytest.raises(ValueError):
        SynthConfig(start_ts=10, end_ts=5)
    with pytest.raises(ValueError):
        write_dataset(SynthConfig(n_users=10, n_items=50, n_ratings=100), str(tmp_path), fmt="json")
