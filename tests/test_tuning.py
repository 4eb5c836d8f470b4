"""Tuning: search-space sampling, the tuning split (no leakage of the store's validation rows), the budget,
parameter-set resolution (explicit > stored set > built-in default), and one bootstrap and one update-replay
trial on a real Spark session with small generated data."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import numpy as np
import pytest

from streamrec.core.params import BootstrapParams, UpdateParams
from streamrec.pipeline import tuning
from streamrec.spark import tuning as spark_tuning
from streamrec.storage import paramsets
from streamrec.storage.bucket import Bucket


# ------------------------------------------------------------------------------------------------------------
# sampling
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize("part", ["bootstrap", "update"])
def test_trials_are_baseline_then_draws_inside_the_space(part):
    cls = BootstrapParams if part == "bootstrap" else UpdateParams
    base = cls().as_dict()
    trials = tuning.sample_trials(part, 30, seed=3, baseline=base)
    assert len(trials) == 30
    assert trials[0] == base, "trial 0 is the baseline, unchanged"
    dims = {d.name: d for d in tuning.SPACES[part]}
    for t in trials[1:]:
        cls.from_dict(t)  # every draw is a valid parameter set
        for name, d in dims.items():
            assert d.contains(t[name]), (name, t[name])
            if d.integer or d.choices:
                assert isinstance(t[name], int)
        # fields outside the space keep the baseline value
        assert {k: v for k, v in t.items() if k not in dims} == {
            k: v for k, v in base.items() if k not in dims
        }
    sigs = {tuple(t[k] for k in dims) for t in trials}
    assert len(sigs) == 30, "no trial repeats another"


@pytest.mark.unit
def test_sampling_is_deterministic_per_seed_and_covers_the_range():
    base = UpdateParams().as_dict()
    a = tuning.sample_trials("update", 200, seed=11, baseline=base)
    assert a == tuning.sample_trials("update", 200, seed=11, baseline=base)
    assert a != tuning.sample_trials("update", 200, seed=12, baseline=base)
    regs = np.array([t["reg"] for t in a[1:]])
    # log-uniform on [0.5, 50]: about half the draws below the geometric midpoint 5
    assert 0.35 < np.mean(regs < 5.0) < 0.65
    assert regs.min() >= 0.5 and regs.max() <= 50.0
    passes = {t["passes"] for t in a}
    assert passes == set(range(1, 11)), "every integer in [1, 10] is reachable, both ends included"


@pytest.mark.unit
def test_choose_lowest_score_ties_to_lower_index_and_ignores_missing():
    trials = [
        {"index": 0, "rmse": 0.90},
        {"index": 1, "rmse": None},
        {"index": 2, "rmse": 0.85},
        {"index": 3, "rmse": float("nan")},
        {"index": 4, "rmse": 0.85},
    ]
    assert tuning.choose(trials)["index"] == 2
    assert tuning.choose([{"index": 0, "rmse": None}]) is None


# ------------------------------------------------------------------------------------------------------------
# budget
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_budget():
    assert tuning.deadline(1000.0, None) is None and tuning.deadline(1000.0, 0) is None
    d = tuning.deadline(1000.0, 2.5)
    assert d == 1150.0
    assert tuning.budget_allows(d, now=1149.9)
    assert not tuning.budget_allows(d, now=1150.0), "at the deadline no new trial starts"
    assert tuning.budget_allows(None, now=1e12)


# ------------------------------------------------------------------------------------------------------------
# parameter sets
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_resolution_explicit_beats_set_beats_default(tmp_path):
    b = Bucket.from_uri(tmp_path)
    assert paramsets.load(b, "tuned") is None, "no set stored yet"
    p, lin, src = paramsets.resolve_in_bucket(b, "tuned", "bootstrap", {"rank": None, "reg": 0.3})
    assert p == BootstrapParams(reg=0.3) and lin is None
    assert src["reg"] == "explicit" and src["rank"] == "default"

    doc = paramsets.save(
        b,
        "tuned",
        {"bootstrap": {"rank": 20, "reg": 0.05, "iterations": 12}},
        {"bootstrap": {"run": "r1"}},
        datetime(2026, 11, 26, tzinfo=UTC),
    )
    assert b.exists("params/tuned.json") and doc["digest"]
    p, lin, src = paramsets.resolve_in_bucket(
        b, "tuned", "bootstrap", {"rank": None, "reg": 0.3, "seed": None}
    )
    assert p == BootstrapParams(rank=20, reg=0.3, iterations=12)
    assert src == {**src, "rank": "set", "reg": "explicit", "iterations": "set", "reg_user": "default"}
    assert lin == {
        "name": "tuned",
        "digest": paramsets.digest({"rank": 20, "reg": 0.05, "iterations": 12}),
        "overridden": ["reg"],
    }
    # "no set" names give the built-in defaults
    for none in ("", "none", None):
        p, lin, _ = paramsets.resolve_in_bucket(b, none, "bootstrap", {})
        assert p == BootstrapParams() and lin is None
    # every field given: the set is not used, so it is not in the lineage
    given = {f: v for f, v in BootstrapParams(rank=7).as_dict().items()}
    p, lin, _ = paramsets.resolve_in_bucket(b, "tuned", "bootstrap", given)
    assert p.rank == 7 and lin is None
    # a retrain's fallback (the replaced model's parameters) sits between the set and the built-in default
    p, _, src = paramsets.resolve_in_bucket(
        b, "tuned", "bootstrap", {"iterations": 3}, fallback={"rank": 99, "reg_user": 2.5, "seed": 7}
    )
    assert p == BootstrapParams(rank=20, reg=0.05, iterations=3, reg_user=2.5, seed=7)
    assert (src["rank"], src["iterations"], src["reg_user"], src["reg_item"]) == (
        "set",
        "explicit",
        "model",
        "default",
    )


@pytest.mark.unit
def test_save_merges_parts_and_validates(tmp_path):
    b = Bucket.from_uri(tmp_path)
    paramsets.save(b, "tuned", {"bootstrap": {"rank": 20}})
    doc = paramsets.save(b, "tuned", {"update": {"lr": 0.5, "passes": 3}})
    assert doc["bootstrap"] == {"rank": 20} and doc["update"] == {"lr": 0.5, "passes": 3}
    assert set(doc["digests"]) == {"bootstrap", "update"}
    p, _, _ = paramsets.resolve_in_bucket(b, "tuned", "update", {})
    assert p == UpdateParams(lr=0.5, passes=3)
    with pytest.raises(ValueError, match="unknown"):
        paramsets.save(b, "tuned", {"update": {"learning_rate": 0.5}})
    with pytest.raises(ValueError, match="lr"):
        paramsets.save(b, "tuned", {"update": {"lr": 3.0}})
    with pytest.raises(ValueError, match="invalid parameter set name"):
        paramsets.save(b, "../x", {"update": {"lr": 0.5}})
    assert paramsets.parse_lineage_arg("tuned@abc") == {"name": "tuned", "digest": "abc"}
    assert paramsets.lineage_argv({"name": "tuned", "digest": "abc"}) == ["--param-set", "tuned@abc"]


# ------------------------------------------------------------------------------------------------------------
# Spark: the split and one trial of each kind
# ------------------------------------------------------------------------------------------------------------
def _synth(spark, n_ratings=6000, seed=5):
    from streamrec.core.synth import SynthConfig, generate_frame
    from streamrec.spark.schema import RATINGS_SCHEMA

    pdf = generate_frame(SynthConfig(n_users=150, n_items=200, n_ratings=n_ratings, seed=seed))
    pdf = pdf.rename(columns={"timestamp": "ts"})
    pdf["ts"] = pdf["ts"].astype("int64")
    return pdf, spark.createDataFrame(pdf[["user", "item", "rating", "ts"]], RATINGS_SCHEMA)


@pytest.mark.spark
def test_tuning_split_never_uses_the_stores_validation_rows(spark):
    from streamrec.spark import split

    pdf, df = _synth(spark)
    holdout = {"fraction": 0.1, "seed": 42}
    _, store_val = split.split(df, 0.1, 42)
    # same seed as the store's split on purpose: the salt still gives a non-empty, independent split
    fit, score = spark_tuning.tuning_split(df, 0.2, 42, holdout)
    key = ["user", "item"]
    v = {tuple(r) for r in store_val.select(*key).collect()}
    f = {tuple(r) for r in fit.select(*key).collect()}
    s = {tuple(r) for r in score.select(*key).collect()}
    assert v and f and s
    assert not (v & f) and not (v & s), "the store's validation rows neither fit nor score a trial"
    assert not (f & s), "fit and score rows are disjoint"
    assert len(f) + len(s) + len(v) == len({tuple(x) for x in pdf[key].to_numpy()})
    assert 0.15 < len(s) / (len(s) + len(f)) < 0.25
    again = {tuple(r) for r in spark_tuning.tuning_split(df, 0.2, 42, holdout)[1].select(*key).collect()}
    assert again == s, "deterministic"


@pytest.mark.spark
def test_one_bootstrap_trial_and_one_replay_trial(spark):
    from streamrec.core.schema import HALF_STAR
    from streamrec.spark import bootstrap, update

    pdf, df = _synth(spark)
    fit, score = spark_tuning.tuning_split(df, 0.2, 1, {"fraction": 0.1, "seed": 42})
    good = spark_tuning.bootstrap_trial(
        fit, score, BootstrapParams(rank=4, iterations=5, reg=0.1), HALF_STAR, errors=True
    )
    assert good["n"] == score.count() > 0 and 0.3 < good["rmse"] < 1.5
    # the guard's input: one squared error per scoring row, in key order, adding up to the trial's score
    err = good["errors"]
    assert list(err.columns) == ["user", "item", "rating", "se"] and len(err) == good["n"]
    assert math.sqrt(err["se"].astype(float).mean()) == pytest.approx(good["rmse"], rel=1e-6)
    assert err[["user", "item"]].apply(tuple, axis=1).is_monotonic_increasing
    # an absurd λ flattens the factors: the search must be able to see the difference
    flat = spark_tuning.bootstrap_trial(
        fit, score, BootstrapParams(rank=4, iterations=5, reg=50.0), HALF_STAR
    )
    assert flat["rmse"] > good["rmse"]

    order = pdf.sort_values("ts", kind="stable")
    cut = int(len(order) * 0.6)
    from streamrec.spark.schema import RATINGS_SCHEMA

    start = bootstrap.fit(
        spark.createDataFrame(order.iloc[:cut][["user", "item", "rating", "ts"]], RATINGS_SCHEMA),
        BootstrapParams(rank=4, iterations=5),
    )
    parts = []
    for k, lo in enumerate(range(cut, len(order), 800)):
        chunk = order.iloc[lo : lo + 800][["user", "item", "rating", "ts"]]
        parts.append((f"p{k}", spark.createDataFrame(chunk, RATINGS_SCHEMA)))
    parts = parts[:3]
    res = spark_tuning.replay_trial(start, parts, UpdateParams(passes=2), HALF_STAR, errors=True)
    assert list(res["per_partition"]) == ["p0", "p1", "p2"]
    # per-row prequential errors, tagged with the partition's position, add up to each partition's score
    err = res.pop("errors")
    assert len(err) == res["n"] and list(err.columns) == ["seq", "user", "item", "rating", "se"]
    for k, pid in enumerate(["p0", "p1", "p2"]):
        se = err.loc[err["seq"] == k, "se"].astype(float)
        assert len(se) == res["per_partition"][pid]["n"]
        assert math.sqrt(se.mean()) == pytest.approx(res["per_partition"][pid]["rmse"], rel=1e-6)
    # the same replay as the update job's batch (update.apply_many), to rounding
    _, batch = update.apply_many(start, [df for _, df in parts], UpdateParams(passes=2), HALF_STAR)
    for pid, m in zip(["p0", "p1", "p2"], batch, strict=True):
        assert res["per_partition"][pid]["rmse"] == pytest.approx(m["rmse"], rel=1e-9)
    assert res["n"] == sum(p.count() for _, p in parts)
    pooled = math.sqrt(sum(v["n"] * v["rmse"] ** 2 for v in res["per_partition"].values()) / res["n"])
    assert res["rmse"] == pytest.approx(pooled)
    # lr 0 absorbs nothing into the old entities: the first partition's prediction is the same, and later
    # partitions are predicted by a model that learnt less
    frozen = spark_tuning.replay_trial(start, parts, UpdateParams(lr=0.0, passes=2), HALF_STAR)
    assert frozen["per_partition"]["p0"]["rmse"] == pytest.approx(res["per_partition"]["p0"]["rmse"])
    assert frozen["rmse"] != pytest.approx(res["rmse"])


@pytest.mark.spark
def test_a_tuning_run_never_stores_parameters_worse_on_held_back_rows(spark, tmp_path):
    """A whole tuning run with real trials (plan, prepare, trials, finish; no Airflow) on generated data, twice:
    trials that differ from the baseline only by noise leave the stored set at the baseline; a clearly better
    trial is adopted, and it is better on the rows the tuning never saw (the store's hold-out)."""
    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset
    from streamrec.spark import bootstrap, evaluate, split
    from streamrec.spark.ratings import read_ratings

    b = Bucket.from_uri(tmp_path / "bucket")
    write_dataset(SynthConfig(n_users=150, n_items=200, n_ratings=6000, seed=5), str(tmp_path / "d"), 1, 1.0)
    b.write_bytes("ratings/history/ratings.csv", (tmp_path / "d" / "history" / "ratings.csv").read_bytes())
    base = BootstrapParams(rank=4, iterations=5, reg=0.1)

    def run(name: str, trials: list[BootstrapParams]) -> dict:
        tuning.make_plan(b, name, "bootstrap", len(trials), 7, None, start_ts=0.0)
        spark_tuning.prepare(spark, b, name)
        for k, params in enumerate(trials):
            spark_tuning.run_trial(spark, b, name, "bootstrap", k, params)
        return tuning.finish(b, name, "tuned")

    # 1. noise: λ moved by 0.5 %..1 % (each trial with its own ALS seed, as every trial): some score below the
    # baseline, by less than what the initialisation alone moves
    noise = [base, *(BootstrapParams(rank=4, iterations=5, reg=r) for r in (0.099, 0.0995, 0.1005, 0.101))]
    r = run("noise", noise)["parts"]["bootstrap"]
    scores = [t["rmse"] for t in r["trials"]]
    assert [t["params"]["seed"] for t in r["trials"]] == [42, 43, 44, 45, 46]
    assert min(scores[1:]) < scores[0], f"precondition: a trial scores lower than the baseline {scores}"
    assert max(abs(x - scores[0]) for x in scores) < 0.05 * scores[0], scores
    assert not r["adopted"] and r["chosen"]["index"] == 0, [t["guard"] for t in r["trials"]]
    assert paramsets.load(b, "tuned")["bootstrap"] == {
        n: base.as_dict()[n] for n in tuning.tuned_fields("bootstrap")
    }
    assert b.exists("reports/tuning/noise/trials/bootstrap-001.errors.parquet")

    # 2. a baseline whose λs flatten the factors and shrink the biases away (nearly the global mean: RMSE 0.89
    # on the tuning rows against 0.67), and a trial that does not: adopted
    bad = BootstrapParams(rank=4, iterations=5, reg=30.0, reg_user=1000.0, reg_item=1000.0)
    r = run("clear", [bad, base])["parts"]["bootstrap"]
    assert r["adopted"] and r["chosen"]["index"] == 1 and r["trials"][1]["guard"]["better"]
    stored = paramsets.load(b, "tuned")["bootstrap"]
    assert stored == {n: base.as_dict()[n] for n in tuning.tuned_fields("bootstrap")}, stored

    # held back: fitted on every row the tuning could use, scored on the store's hold-out rows it never saw
    from streamrec.core.schema import HALF_STAR

    df = read_ratings(spark, b.spark_uri("ratings/history"), HALF_STAR)
    flag = split.holdout_flag(0.1, 42)
    rest, held = df.where(~flag), df.where(flag)
    held_back = {
        name: evaluate.rmse(bootstrap.fit(rest, params), held, HALF_STAR)["rmse"]
        for name, params in (("baseline", bad), ("adopted", base))
    }
    assert held_back["adopted"] < held_back["baseline"], held_back


# ------------------------------------------------------------------------------------------------------------
# plan and finish on a store (no Spark: versions written with pyarrow)
# ------------------------------------------------------------------------------------------------------------
def _lineage_store(root):
    """v-boot (history) -> v-u1 (p1) -> v-u2 (p1, p2) -> v-u3 (p1..p3), v-u3 published."""
    from streamrec.core.arrays import ModelArrays
    from streamrec.storage.store import ModelStore

    store = ModelStore(root)
    arrays = ModelArrays(3.5, 2, [1, 2], [0.0, 0.1], np.zeros((2, 2)), [10], [0.2], np.zeros((1, 2)), n=3)
    hold = {"uri": "v", "fraction": 0.1, "seed": 7}
    hist = store.bucket.spark_uri("ratings/history")
    parts, parent = [], None
    for k, name in enumerate(["v-boot", "v-u1", "v-u2", "v-u3"]):
        if k:
            parts = [*parts, f"p{k}"]
        store.write_arrays(
            arrays,
            {
                "kind": "bootstrap" if k == 0 else "update",
                "parent": parent,
                "partitions": parts,
                "inputs": [hist] + [f"/in/p{j}.csv" for j in range(1, k + 1)],
                "holdout": hold,
                "params": {"scale": "0.5:5:0.5"},
            },
            name,
        )
        parent = name
    store.publish("v-u3")
    return store


@pytest.mark.unit
def test_plan_replays_the_last_partitions_from_their_ancestor(tmp_path):
    store = _lineage_store(tmp_path)
    paramsets.save(store.bucket, "tuned", {"update": {"lr": 0.5}})
    p = tuning.make_plan(store.bucket, "run1", "both", 4, 9, 15, start_ts=1000.0, replay=2)
    assert p["deadline"] == 1000.0 + 15 * 60
    assert p["holdout"] == {"fraction": 0.1, "seed": 7}, "the lineage's hold-out is what the split removes"
    assert p["bootstrap"]["inputs"][0].endswith("ratings/history") and len(p["bootstrap"]["inputs"]) == 4
    u = p["update"]
    assert [r["id"] for r in u["replay"]] == ["p2", "p3"]
    assert [r["uri"] for r in u["replay"]] == ["/in/p2.csv", "/in/p3.csv"]
    assert u["start_version"] == "v-u1", "the model the stream had before p2"
    assert len(p["trials"]["bootstrap"]) == 4 and len(p["trials"]["update"]) == 4
    assert p["trials"]["update"][0]["lr"] == 0.5, (
        "the baseline is what the pipeline uses now (the stored set)"
    )
    assert store.bucket.read_json("reports/tuning/run1/plan.json")["run"] == "run1"
    # replaying more partitions than there are: all of them, from the bootstrap
    p = tuning.make_plan(store.bucket, "run2", "update", 2, 9, None, start_ts=0.0, replay=10)
    assert p["update"]["start_version"] == "v-boot" and p["deadline"] is None and "bootstrap" not in p


@pytest.mark.unit
def test_plan_without_a_matching_ancestor_bootstraps_on_the_data_before(tmp_path):
    store = _lineage_store(tmp_path)
    m = store.read_manifest("v-u1")
    store.bucket.write_json(
        "models/versions/v-u1/manifest.json", {**m, "partitions": ["px"]}
    )  # break the chain
    p = tuning.make_plan(store.bucket, "run3", "update", 2, 1, 5, start_ts=0.0, replay=2)
    assert p["update"]["start_version"] is None
    hist = store.bucket.spark_uri("ratings/history")
    assert p["update"]["start_inputs"] == [hist, "/in/p1.csv"], "history and p1: the data before p2, p3"
    assert any("bootstrap on the data before" in n for n in p["notes"])


def _errors(rmse: float, n: int = 4000, users: int = 400, seed: int = 0, noise: float = 0.0, seq=None):
    """Per-row squared errors on a fixed set of scoring rows (the same keys for every trial): squared
    residuals of a N(0, rmse) draw common to every trial (seed 0), scaled to mean exactly ``rmse``² and
    perturbed by ``noise`` (a trial-specific relative jitter): what two models' errors on the same rows look
    like, one a little (noise) or clearly (rmse) different from the other."""
    import pandas as pd

    from streamrec.core import search

    common = np.random.default_rng(0).normal(0.0, 1.0, n) ** 2
    if noise:
        common = common * np.exp(np.random.default_rng(seed).normal(0.0, noise, n))
    se = common / common.mean() * rmse**2
    frame = pd.DataFrame(
        {
            "user": np.arange(n) % users,
            "item": np.arange(n) // users,
            "rating": np.full(n, 3.0),
            "se": se,
        }
    )
    if seq is not None:
        frame.insert(0, "seq", np.arange(n) % seq)
    return search.sort_errors(frame)


def _write_trial(b, run, part, k, values, rmse, errors):
    from streamrec.core import search

    key = tuning.trial_key(run, part, k)
    b.write_json(
        key,
        {
            "part": part,
            "index": k,
            "params": values,
            "rmse": rmse,
            "mae": 0.7,
            "n": 100,
            "tuned": {n: values[n] for n in tuning.tuned_fields(part)},
            "seconds": 1.0,
        },
    )
    if errors is not None:
        b.write_bytes(search.errors_key(key), search.errors_to_parquet(errors))


@pytest.mark.unit
def test_finish_chooses_reports_skipped_trials_and_stores_the_set(tmp_path):
    store = _lineage_store(tmp_path)
    b = store.bucket
    p = tuning.make_plan(b, "run4", "bootstrap", 4, 3, 1, start_ts=0.0)
    scores = {0: 0.91, 1: 0.88, 2: 0.95}  # trial 3 never ran (budget)
    # the guard's precondition, made explicit: trial 1 is better than the baseline on every scoring row
    # (3 % of RMSE on 4000 rows, far beyond the noise), so the lowest score is also the adopted one
    for k, rmse in scores.items():
        _write_trial(b, "run4", "bootstrap", k, p["trials"]["bootstrap"][k], rmse, _errors(rmse))
    res = tuning.finish(b, "run4", "tuned", datetime(2026, 11, 26, tzinfo=UTC))
    r = res["parts"]["bootstrap"]
    assert r["adopted"] and r["trials"][1]["guard"]["better"]
    assert not r["trials"][2]["guard"]["better"] and r["trials"][0]["guard"] is None
    assert r["chosen"]["index"] == 1 and r["not_run"] == [3] and r["finished"] == 3
    assert r["improvement"] == pytest.approx(0.03)
    stored = paramsets.load(b, "tuned")
    chosen = {n: p["trials"]["bootstrap"][1][n] for n in tuning.tuned_fields("bootstrap")}
    assert stored["bootstrap"] == chosen and stored["tuning"]["bootstrap"]["run"] == "run4"
    hp, lin, _ = paramsets.resolve_in_bucket(b, "tuned", "bootstrap", {})
    assert hp.rank == chosen["rank"] and lin["digest"] == stored["digests"]["bootstrap"]
    html = b.read_text("reports/tuning/run4/index.html")
    assert "<svg" in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "not run" in html and b.exists("reports/tuning/run4/result.json")
    assert "Adopted trial 1: trial 1 beats the baseline beyond the noise" in html
    assert "paired bootstrap interval" in html and "(Bonferroni)" in html, "the report states the rule"
    # nothing finished: nothing stored, and the report says so
    tuning.make_plan(b, "run5", "bootstrap", 2, 3, 1, start_ts=0.0)
    res = tuning.finish(b, "run5", "other")
    assert res["param_set"] is None and paramsets.load(b, "other") is None


@pytest.mark.unit
def test_finish_keeps_and_stores_the_baseline_when_every_trial_is_only_noise_level_better(tmp_path):
    store = _lineage_store(tmp_path)
    b = store.bucket
    paramsets.save(b, "tuned", {"update": {"lr": 0.5}})
    before = paramsets.load(b, "tuned")
    p = tuning.make_plan(b, "run6", "update", 6, 3, None, start_ts=0.0, replay=2)
    # every trial scores a little lower than the baseline (0.1 % .. 0.05 % of RMSE), each with its own
    # row-level jitter: the lowest score is trial 5, but no difference is beyond the noise of 4000 rows
    scores = {0: 0.9100, 1: 0.9095, 2: 0.9098, 3: 0.9099, 4: 0.9096, 5: 0.9091}
    for k, rmse in scores.items():
        err = _errors(rmse, seed=k, noise=0.0 if k == 0 else 0.5, seq=2)
        _write_trial(b, "run6", "update", k, p["trials"]["update"][k], rmse, err)
    res = tuning.finish(b, "run6", "tuned")
    r = res["parts"]["update"]
    assert tuning.choose(r["trials"])["index"] == 5, "trial 5 has the lowest score ..."
    assert r["best_score"]["index"] == 5
    assert not r["adopted"] and r["chosen"]["index"] == 0, "... but the guard keeps the baseline"
    assert r["compared"] == 5 and r["level"] == pytest.approx(0.01)
    for k in range(1, 6):
        g = r["trials"][k]["guard"]
        assert g["mean_diff"] < 0 and g["upper"] > 0 and not g["better"], (k, g)
        assert (g["n"], g["users"], g["items"]) == (4000, 400, 10)
    assert r["improvement"] == 0.0
    stored = paramsets.load(b, "tuned")
    baseline = {n: p["trials"]["update"][0][n] for n in tuning.tuned_fields("update")}
    assert stored["update"] == baseline and stored["update"]["lr"] == 0.5, "the baseline, unchanged"
    resolved, _, _ = paramsets.resolve_in_bucket(b, "tuned", "update", {})
    assert resolved == UpdateParams.from_dict({**UpdateParams().as_dict(), **before["update"]})
    assert stored["tuning"]["update"]["adopted"] is False
    html = b.read_text("reports/tuning/run6/index.html")
    assert "Kept the current parameters (trial 0): none of the 5 trials beats the baseline" in html
    assert "99.00 % (1 − α/m, m = 5 trials compared)" in html
    assert '<td class="num">4,000</td><td class="num">400</td><td class="num">10</td><td>no</td>' in html
    rows = re.findall(
        r"<tr><th>(\d+)</th>.*?<td>(yes|no)", html.replace('<span class="ok">yes</span>', "yes")
    )
    assert rows == [(str(k), "no") for k in range(1, 6)]


@pytest.mark.unit
def test_finish_cannot_adopt_without_a_baseline_or_paired_rows(tmp_path):
    store = _lineage_store(tmp_path)
    b = store.bucket
    p = tuning.make_plan(b, "run7", "bootstrap", 3, 3, None, start_ts=0.0)
    t = p["trials"]["bootstrap"]
    # trial 1 clearly better but its errors are missing, trial 2 clearly better on other rows
    _write_trial(b, "run7", "bootstrap", 0, t[0], 0.95, _errors(0.95))
    _write_trial(b, "run7", "bootstrap", 1, t[1], 0.85, None)
    _write_trial(b, "run7", "bootstrap", 2, t[2], 0.86, _errors(0.86, n=3000))
    r = tuning.finish(b, "run7", "tuned")["parts"]["bootstrap"]
    assert not r["adopted"] and r["chosen"]["index"] == 0
    assert r["trials"][1]["guard"] == {"better": False, "reason": "this trial's per-row errors are missing"}
    assert "different scoring rows" in r["trials"][2]["guard"]["reason"]
    # no baseline (trial 0 did not run): nothing to compare with, nothing adopted, nothing stored
    p = tuning.make_plan(b, "run8", "bootstrap", 2, 3, None, start_ts=0.0)
    _write_trial(b, "run8", "bootstrap", 1, p["trials"]["bootstrap"][1], 0.5, _errors(0.5))
    res = tuning.finish(b, "run8", "other")
    assert res["parts"]["bootstrap"]["chosen"] is None and res["param_set"] is None


@pytest.mark.unit
def test_paired_bootstrap_sees_noise_and_the_clusters():
    from streamrec.core import search

    rng = np.random.default_rng(1)
    n, users, items = 6000, 300, 120
    user, item = np.arange(n) % users, (np.arange(n) * 7) % items
    base = rng.chisquare(1, n) * 0.8
    # a real gain of 2 % of MSE on every row: passes even at a Bonferroni level
    t = search.paired_bootstrap(base, base * 0.98, user, item, alpha=0.05 / 7, seed=3)
    assert t["better"] and t["upper"] < 0 and t["mean_diff"] == pytest.approx(-0.02 * base.mean())
    assert (t["users"], t["items"], t["n"], t["resamples"]) == (300, 120, 6000, 1000)
    assert t["z"] == pytest.approx(2.450, abs=1e-3), "z of 1 - 0.05/7"
    assert t == search.paired_bootstrap(base, base * 0.98, user, item, alpha=0.05 / 7, seed=3), "seeded"
    # pure noise: the mean difference is below 0, the interval covers 0
    noisy = base * np.exp(rng.normal(0, 0.3, n))
    noisy = noisy / noisy.mean() * base.mean() * 0.999
    t = search.paired_bootstrap(base, noisy, user, item, alpha=0.05, seed=3)
    assert t["mean_diff"] < 0 and t["upper"] > 0 and not t["better"]
    # a per-user and a per-item shift (the rows of a user, of an item, move together): resampling users and
    # items gives a wider interval than users alone, which is wider than rows alone
    diff = base + rng.normal(0, 0.2, users)[user] + rng.normal(0, 0.2, items)[item] - 0.01
    se = {
        name: search.paired_bootstrap(base, diff, u, i, seed=3)["se"]
        for name, u, i in (
            ("both", user, item),
            ("users", user, np.zeros(n)),
            ("rows", np.arange(n), np.zeros(n)),
        )
    }
    assert se["both"] > 1.5 * se["users"] and se["users"] > 2 * se["rows"], se
    with pytest.raises(ValueError, match="paired rows"):
        search.paired_bootstrap(base, base[:-1], user, item)


@pytest.mark.unit
def test_errors_round_trip_and_keys():
    from streamrec.core import search

    e = _errors(0.9, n=50, users=7, seq=3)
    assert search.error_keys(e) == ["seq", "user", "item", "rating"]
    back = search.errors_from_parquet(search.errors_to_parquet(e.sample(frac=1.0, random_state=1)))
    assert back.equals(e), "stored in key order, read back identical"
    assert back["se"].dtype == np.float32
    assert search.errors_key("reports/tuning/r/trials/update-003.json") == (
        "reports/tuning/r/trials/update-003.errors.parquet"
    )


@pytest.mark.unit
def test_update_manifest_lineage_keeps_the_bootstrap_entry_and_replaces_the_update_entry():
    from streamrec.spark.runs import _param_set_lineage

    boot = {"name": "tuned", "digest": "aaa"}
    base = {
        "bootstrap": {"rank": 5},
        "param_set": {"bootstrap": boot, "update": {"name": "old", "digest": "x"}},
    }
    new = _param_set_lineage(dict(base), {"name": "tuned", "digest": "bbb"})
    assert new["param_set"] == {"bootstrap": boot, "update": {"name": "tuned", "digest": "bbb"}}
    assert _param_set_lineage(dict(base), None)["param_set"] == {"bootstrap": boot}, (
        "stale update entry dropped"
    )
    assert "param_set" not in _param_set_lineage({"bootstrap": {"rank": 5}}, None)
