"""Time-aware biases (issue 18): the numpy rule by hand, the store round trip, the generator's planted drift, the
Spark fit against its equations, Spark's rule against numpy's, and recovery of planted drift."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from streamrec.core.arrays import ModelArrays, predict
from streamrec.core.params import BootstrapParams
from streamrec.core.synth import SynthConfig, generate_frame
from streamrec.core.temporal import NO_DAY, TIME_TABLES, Keyed, TimeConfig, TimeState, days_of, dev
from streamrec.storage.store import ModelStore

DAY = 86_400
ON = {"time_bin_days": 10, "user_drift": 1, "user_day": 1}


def tiny(time: bool = True) -> ModelArrays:
    """mu 3; users 1, 2; items 10, 20; rank 1; user 1 has drift and a day term; item 10 has bins 5 and 7."""
    a = ModelArrays(
        mu=3.0,
        rank=1,
        user_ids=[1, 2],
        user_bias=[0.5, -0.5],
        user_factors=[[1.0], [0.0]],
        item_ids=[10, 20],
        item_bias=[0.2, -0.3],
        item_factors=[[0.5], [1.0]],
    )
    if not time:
        return a
    cfg = TimeConfig(bin_days=10, user_drift=1, beta=0.5, user_day=1)
    state = TimeState.empty(cfg, 2, now=80)
    state.t0[0], state.alpha[0], state.s[0], state.last[0] = 50.0, 0.1, 9.0, 66
    state.bins = Keyed([0, 0], [5, 7], [0.25, -0.125], [3, 4])
    state.days = Keyed([0], [60], [0.0625], [2])
    a.time = state
    return a


@pytest.mark.unit
def test_keyed_table_exact_carry_and_gaps() -> None:
    t = Keyed([1, 0, 0, 2], [3, 5, 2, 9], [0.1, 0.2, 0.3, 0.4], [1, 1, 1, 1])  # sorted on construction
    assert t.rows.tolist() == [0, 0, 1, 2] and t.keys.tolist() == [2, 5, 3, 9]
    rows = np.array([0, 0, 0, 0, 0, 1, 1, 2, 3, 0])
    keys = np.array([2, 5, 3, 9, 1, 3, 4, 8, 5, NO_DAY])
    assert t.find(rows, keys).tolist() == [0, 1, -1, -1, -1, 2, -1, -1, -1, -1]
    # carry: a key after the row's last entry takes that entry; a gap or a key before the first gives 0
    np.testing.assert_array_equal(
        t.term(rows, keys, carry=True), [0.3, 0.2, 0.0, 0.2, 0.0, 0.1, 0.1, 0.0, 0.0, 0.0]
    )
    np.testing.assert_array_equal(
        t.term(rows, keys, carry=False), [0.3, 0.2, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0]
    )
    grown, pos = t.ensure(np.array([0, 4, 4]), np.array([5, 1, 1]))
    assert len(grown) == 5 and pos[0] == grown.find(np.array([0]), np.array([5]))[0] and pos[1] == pos[2]
    assert grown.bias[pos[1]] == 0.0 and grown.n[pos[1]] == 0
    with pytest.raises(ValueError, match="duplicate"):
        Keyed([0, 0], [1, 1], [0.0, 0.0], [1, 1])


@pytest.mark.unit
def test_time_aware_rule_by_hand() -> None:
    a = tiny()
    users = [1, 1, 1, 1, 2, 1, 99, 1]
    items = [10, 10, 10, 20, 10, 99, 10, 10]
    ts = [
        60 * DAY + 5,  # day 60: bin 6 (a gap of item 10: 0), user 1's day term, drift at 60
        75 * DAY,  # day 75: bin 7 exact; drift clamped to user 1's last day 66; no day term
        None,  # now (day 80): bin 8 -> item 10's last bin 7; drift at 66
        52 * DAY,  # item 20 has no bins
        52 * DAY,  # user 2 has no time state
        60 * DAY,  # unknown item: the user's terms only
        52 * DAY,  # unknown user: the item's terms only (bin 5)
        30 * DAY,  # before user 1's anchor: negative drift; bin 3, before item 10's first bin: 0
    ]
    drift = lambda d: 0.1 * np.sign(d - 50) * abs(d - 50) ** 0.5  # noqa: E731
    dot = 0.5
    want = [
        3 + 0.5 + 0.2 + (drift(60) + 0.0625) + 0.0 + dot,
        3 + 0.5 + 0.2 + drift(66) - 0.125 + dot,
        3 + 0.5 + 0.2 + drift(66) - 0.125 + dot,
        3 + 0.5 - 0.3 + drift(52) + 0.0 + 1.0,
        3 - 0.5 + 0.2 + 0.0 + 0.25 + 0.0,
        3 + 0.5 + drift(60) + 0.0625,
        3 + 0.2 + 0.25,
        3 + 0.5 + 0.2 + drift(30) + 0.0 + dot,
    ]
    time = pd.array([None if t is None else t for t in ts], dtype="Int64")
    np.testing.assert_allclose(predict(a, users, items, time=time), want, rtol=0, atol=1e-12)
    # None = now for every pair; NaN = now for that pair
    at_now = predict(a, users, items)
    assert at_now[2] == predict(a, users, items, time=np.full(8, np.nan))[2] == pytest.approx(want[2])
    np.testing.assert_allclose(a.item_bias_now(), [0.2 - 0.125, -0.3], rtol=0, atol=0)
    # biases only: the time terms stay, the dot product goes
    np.testing.assert_allclose(
        predict(a, users[:1], items[:1], time=time[:1], factors=False), [want[0] - dot], atol=1e-12
    )


@pytest.mark.unit
def test_a_time_blind_model_ignores_time_bit_for_bit() -> None:
    a = tiny(time=False)
    users, items = [1, 2, 99, 1], [10, 20, 10, 99]
    base = predict(a, users, items, clip=(0.5, 5.0))
    assert np.array_equal(base, predict(a, users, items, clip=(0.5, 5.0), time=[0, 5 * DAY, None, 1e9]))
    assert a.item_bias_now() is a.item_bias and a.time_tables() == {}


@pytest.mark.unit
def test_days_and_dev() -> None:
    assert days_of([0, DAY - 1, DAY, -1, np.nan], 5, now=7).tolist() == [0, 0, 1, -1, 7]
    assert days_of(None, 2, now=3).tolist() == [3, 3]
    np.testing.assert_allclose(
        dev(np.array([54, 46, 50]), np.array([50.0, 50.0, 50.0]), 0.5), [2.0, -2.0, 0.0]
    )


@pytest.mark.unit
def test_store_round_trip_of_the_time_terms(tmp_path) -> None:
    store = ModelStore(str(tmp_path))
    a = tiny()
    store.write_arrays(a, {"kind": "bootstrap"}, "v1")
    doc = store.read_manifest("v1")
    assert doc["time"]["now"] == 80 and doc["time"]["config"]["bin_days"] == 10
    assert {k: doc["tables"][k]["rows"] for k in TIME_TABLES} == {
        "user_time": 1,
        "item_bins": 2,
        "user_days": 1,
    }
    b = store.load_arrays("v1")
    assert b.time is not None and b.time.config == a.time.config and b.time.now == 80
    for name in ("t0", "alpha", "s", "last"):
        np.testing.assert_array_equal(getattr(b.time, name)[:1], getattr(a.time, name)[:1])
    assert b.time.last[1] == NO_DAY and np.isnan(b.time.t0[1])
    for name in ("bins", "days"):
        x, y = getattr(a.time, name), getattr(b.time, name)
        assert x.rows.tolist() == y.rows.tolist() and x.keys.tolist() == y.keys.tolist()
        assert np.array_equal(x.bias, y.bias) and np.array_equal(x.n, y.n)
    users, items, ts = [1, 1, 2], [10, 20, 10], [60 * DAY, None, 75 * DAY]
    time = pd.array(ts, dtype="Int64")
    assert np.array_equal(predict(a, users, items, time=time), predict(b, users, items, time=time))
    store.publish("v1")  # the listed time files are checked like the factor tables
    # a time-blind model's manifest has no "time": the files of today's models
    store.write_arrays(tiny(time=False), {"kind": "bootstrap"}, "v2")
    assert "time" not in store.read_manifest("v2") and store.load_arrays("v2").time is None
    assert not any((tmp_path / "models" / "versions" / "v2" / k).exists() for k in TIME_TABLES)
    with pytest.raises(ValueError, match="written by the store"):
        store.update_manifest("v1", time={})


@pytest.mark.unit
def test_params_time_terms_off_means_no_time() -> None:
    assert TimeConfig.from_params(BootstrapParams(time_bin_days=0, user_drift=0, user_day=0)) is None
    cfg = TimeConfig.from_params(BootstrapParams(**ON))
    assert cfg is not None and cfg.bin_days == 10 and cfg.user_drift == 1 and cfg.user_day == 1
    for bad in ({"time_bin_days": -1}, {"user_drift": 2}, {"drift_beta": 0.0}, {"reg_drift": -1.0}):
        with pytest.raises(ValueError):
            BootstrapParams(**bad)


@pytest.mark.unit
def test_generator_drift_is_off_by_default_and_planted_apart() -> None:
    cfg = SynthConfig(n_users=120, n_items=300, n_ratings=4000, seed=5)
    plain = generate_frame(cfg)
    assert plain.equals(generate_frame(dataclasses.replace(cfg, item_drift_sd=0.0, user_drift_sd=0.0)))
    assert "item_drift_sd" not in cfg.to_dict()  # the time-blind generator's description, unchanged
    drifted = generate_frame(dataclasses.replace(cfg, item_drift_sd=0.5, user_drift_sd=0.5))
    # the drift has its own random stream: same users, items and times, other ratings
    assert drifted[["user", "item", "ts"]].equals(plain[["user", "item", "ts"]])
    assert (drifted["rating"] != plain["rating"]).mean() > 0.2
    from streamrec.core.synth import Planted

    p = Planted.build(dataclasses.replace(cfg, item_drift_sd=0.5, user_drift_sd=0.25))
    assert p.item_drift.std() == pytest.approx(0.5, rel=0.15) and p.user_drift.std() == pytest.approx(
        0.25, rel=0.2
    )
    start, end = p.span
    np.testing.assert_allclose(
        p.item_drift_at(np.array([0, 0]), np.array([start, end])), p.item_drift[0] * np.array([-1, 1])
    )


# ------------------------------------------------------------------------------------------------------------
# Spark
# ------------------------------------------------------------------------------------------------------------


def _reference_biases(df: pd.DataFrame, mu: float, p: BootstrapParams) -> dict:
    """The alternating shrunk means of ``streamrec.spark.temporal`` written out in numpy, rating by rating."""
    cfg = TimeConfig.from_params(p)
    u = pd.Index(np.unique(df.user)).get_indexer(df.user)
    i = pd.Index(np.unique(df.item)).get_indexer(df.item)
    r = df.rating.to_numpy(float)
    day = np.floor(df.ts.to_numpy(float) / DAY)
    nu, ni = u.max() + 1, i.max() + 1
    t0 = np.bincount(u, weights=day, minlength=nu) / np.bincount(u, minlength=nu)
    dv = dev(day, t0[u], cfg.beta) if cfg.user_drift else np.zeros(len(r))
    ud = np.unique(np.stack([u, day]), axis=1, return_inverse=True)[1].reshape(-1)
    ib = np.unique(np.stack([i, np.floor(day / cfg.bin_days)]), axis=1, return_inverse=True)[1].reshape(-1)
    bu, a, bud, bi, bib = (
        np.zeros(nu),
        np.zeros(nu),
        np.zeros(ud.max() + 1),
        np.zeros(ni),
        np.zeros(ib.max() + 1),
    )

    def smean(idx, y, k, lam, w=None):
        return np.bincount(idx, weights=y, minlength=k) / (np.bincount(idx, weights=w, minlength=k) + lam)

    for _ in range(p.bias_iterations):
        uterm = bu[u] + a[u] * dv + bud[ud]
        bi = smean(i, r - mu - uterm - bib[ib], ni, p.reg_item)
        bib = smean(ib, r - mu - uterm - bi[i], len(bib), cfg.reg_bin)
        iterm = bi[i] + bib[ib]
        bu = smean(u, r - mu - iterm - a[u] * dv - bud[ud], nu, p.reg_user)
        if cfg.user_drift:
            e = r - mu - iterm - bu[u] - bud[ud]
            a = smean(u, dv * e, nu, cfg.reg_drift, dv * dv)
        bud = smean(ud, r - mu - iterm - bu[u] - a[u] * dv, len(bud), cfg.reg_day)
    return {"b_u": bu, "alpha": a, "b_i": bi, "users": np.unique(df.user), "items": np.unique(df.item)}


@pytest.mark.spark
def test_spark_time_aware_biases_are_the_alternating_shrunk_means(spark) -> None:
    from streamrec.spark import temporal
    from streamrec.spark.schema import RATINGS_SCHEMA

    rng = np.random.default_rng(3)
    n = 600
    df = pd.DataFrame(
        {
            "user": rng.integers(1, 25, n),
            "item": rng.integers(100, 140, n),
            "rating": rng.choice(np.arange(1, 11) / 2, n),
            "ts": (rng.integers(0, 400, n) * DAY + rng.integers(0, DAY, n)).astype(np.int64),
        }
    ).drop_duplicates(["user", "item"])
    mu = float(df.rating.mean())
    p = BootstrapParams(reg_user=3.0, reg_item=2.0, bias_iterations=3, drift_beta=0.4, reg_drift=7.0, **ON)
    tb = temporal.fit_biases(spark.createDataFrame(df, RATINGS_SCHEMA), mu, p, TimeConfig.from_params(p), 399)
    ref = _reference_biases(df, mu, p)
    ub = tb.user_bias.toPandas().set_index("user").loc[ref["users"]]
    ib = tb.item_bias.toPandas().set_index("item").loc[ref["items"]]
    ut = tb.time.user_time.toPandas().set_index("id").loc[ref["users"]]
    np.testing.assert_allclose(ub["b_u"], ref["b_u"], atol=1e-10)
    np.testing.assert_allclose(ib["b_i"], ref["b_i"], atol=1e-10)
    np.testing.assert_allclose(ut["alpha"], ref["alpha"], atol=1e-10)
    assert np.abs(ref["alpha"]).max() > 1e-3  # the drift term is fitted, not zero
    assert (ub["n_u"].to_numpy() == df.groupby("user").size().loc[ref["users"]].to_numpy()).all()


def _spark_model(spark, a: ModelArrays):
    from streamrec.spark.model import FactorModel
    from streamrec.spark.schema import FACTOR_SCHEMA
    from streamrec.spark.temporal import SCHEMAS, TimeFrames

    def side(ids, bias, n, f):
        return spark.createDataFrame(
            [
                (int(x), float(b), int(c), [float(v) for v in row])
                for x, b, c, row in zip(ids, bias, n, f, strict=True)
            ],
            FACTOR_SCHEMA,
        )

    tables = a.time_tables()
    frames = {k: spark.createDataFrame(tables[k].to_pandas(), SCHEMAS[k]) for k in tables}
    return FactorModel(
        a.mu,
        a.n,
        a.rank,
        side(a.user_ids, a.user_bias, a.user_n, a.user_factors),
        side(a.item_ids, a.item_bias, a.item_n, a.item_factors),
        TimeFrames(a.time.config, a.time.now, **frames),
    )


@pytest.mark.spark
def test_spark_evaluate_is_the_time_aware_rule_of_numpy(spark) -> None:
    from streamrec.spark import evaluate
    from streamrec.spark.schema import RATINGS_SCHEMA

    a = tiny()
    rng = np.random.default_rng(9)
    n = 400
    users = rng.choice([1, 2, 77], n)
    items = rng.choice([10, 20, 88], n)
    ts = pd.array(np.where(rng.random(n) < 0.2, -1, rng.integers(20, 100, n) * DAY + 7), dtype="Int64")
    ts[ts == -1] = pd.NA
    rating = np.arange(n) / 1000  # a key to put Spark's rows back in order
    pdf = pd.DataFrame({"user": users, "item": items, "rating": rating, "ts": ts})
    got = evaluate.predict(_spark_model(spark, a), spark.createDataFrame(pdf, RATINGS_SCHEMA))
    got = got.toPandas().sort_values("rating")["prediction"].to_numpy()
    want = predict(a, users, items, clip=(0.5, 5.0), time=ts)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert len(np.unique(np.round(want, 9))) > 10  # the time terms vary the prediction


# ------------------------------------------------------------------------------------------------------------
# streaming: streamrec.core.sgd.absorb_timed
# ------------------------------------------------------------------------------------------------------------


def _one_rating_problem(day: int):
    from streamrec.core.sgd import Side

    cfg = TimeConfig(
        bin_days=10, reg_bin=25.0, user_drift=1, beta=0.5, reg_drift=30.0, user_day=1, reg_day=5.0
    )
    users = Side(np.array([1]), np.array([0.1]), np.array([4]), np.zeros((1, 1)))
    items = Side(np.array([10]), np.array([-0.2]), np.array([9]), np.zeros((1, 1)))
    state = TimeState.empty(cfg, 1, now=120)
    state.t0[0], state.alpha[0], state.s[0], state.last[0] = 100.0, 0.01, 50.0, 120
    state.bins = Keyed([0], [12], [0.05], [3])
    return users, items, state


@pytest.mark.unit
def test_one_timed_rating_one_pass_by_hand() -> None:
    from streamrec.core.params import UpdateParams
    from streamrec.core.sgd import absorb_timed

    users, items, state = _one_rating_problem(125)
    p = UpdateParams(lr=1.0, reg=5.0, reg_factors=0.1, passes=1, prior_weight=1.0)
    z = np.array([0])
    nu, ni, ns = absorb_timed(z, z, np.array([4.5]), np.array([125]), 3.5, users, items, state, p)
    # day 125: bin 12 (has 3 ratings), a new (user, day) entry, dev = sqrt(125 - 100) = 5
    # user bias: eps = 4.5 - 3.5 - 0.1 + 0.2 - 0.01*5 - 0.05 = 1.0; P = 4 + 5; b_u = 0.1 + 1.0 / 10
    assert nu.bias[0] == pytest.approx(0.2)
    # drift: eps = 0.9; P = s + reg_drift = 80; alpha = 0.01 + 5 * 0.9 / (25 + 80)
    assert ns.alpha[0] == pytest.approx(0.01 + 4.5 / 105)
    # day: eps = 0.9 - 5 * 4.5 / 105; new entry, P = 0 + 5: b = eps / (1 + 5)
    e_day = 0.9 - 5 * 4.5 / 105
    pos = ns.days.find(np.array([0]), np.array([125]))[0]
    assert ns.days.bias[pos] == pytest.approx(e_day / 6) and ns.days.n[pos] == 1
    # item bias: eps = e_day * 5 / 6; P = 9 + 5: b_i = -0.2 + eps / 15
    e_item = e_day * 5 / 6
    assert ni.bias[0] == pytest.approx(-0.2 + e_item / 15)
    # bin 12: eps = e_item * 14 / 15; P = 3 + 25: b = 0.05 + eps / 29
    assert ns.bins.bias[0] == pytest.approx(0.05 + e_item * 14 / 15 / 29) and ns.bins.n[0] == 4
    assert ns.s[0] == pytest.approx(75.0) and ns.last[0] == 125 and ns.now == 125
    # inputs untouched
    assert state.alpha[0] == 0.01 and len(state.days) == 0 and users.bias[0] == 0.1


@pytest.mark.unit
def test_a_new_bin_opens_and_an_untimed_rating_moves_no_time_term() -> None:
    from streamrec.core.params import UpdateParams
    from streamrec.core.sgd import absorb_timed

    users, items, state = _one_rating_problem(0)
    p = UpdateParams(passes=2)
    z = np.array([0])
    _, _, ns = absorb_timed(z, z, np.array([5.0]), np.array([131]), 3.5, users, items, state, p)
    assert ns.bins.keys.tolist() == [12, 13] and ns.bins.n.tolist() == [3, 1] and ns.bins.bias[1] > 0
    assert ns.bins.bias[0] == 0.05  # the old bin is not moved by a rating of another bin
    _, _, nt = absorb_timed(z, z, np.array([5.0]), np.array([NO_DAY]), 3.5, users, items, state, p)
    assert nt.alpha[0] == 0.01 and nt.s[0] == 50.0 and len(nt.days) == 0 and nt.bins.n.tolist() == [3]
    assert nt.last[0] == 120 and nt.now == 120
    # a user's first timed ratings anchor it at their mean day
    fresh = TimeState.empty(state.config, 1)
    _, _, nf = absorb_timed(
        np.array([0, 0]),
        np.array([0, 0]),
        np.array([4.0, 3.0]),
        np.array([200, 210]),
        3.5,
        users,
        items,
        fresh,
        p,
    )
    assert nf.t0[0] == 205.0 and nf.last[0] == 210 and nf.s[0] == pytest.approx(2 * 5**0.5**2 * 0 + 2 * 5.0)


# ------------------------------------------------------------------------------------------------------------
# streaming on Spark: streamrec.spark.update with a time-aware model
# ------------------------------------------------------------------------------------------------------------


def _assert_same_model(a: ModelArrays, b: ModelArrays) -> None:
    """Every id, count, bias, factor, mu, n and time term equal, bit for bit."""
    assert a.mu == b.mu and a.n == b.n
    for name in (
        "user_ids",
        "user_bias",
        "user_n",
        "user_factors",
        "item_ids",
        "item_bias",
        "item_n",
        "item_factors",
    ):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert (a.time is None) == (b.time is None)
    if a.time is not None:
        assert a.time.now == b.time.now and a.time.config == b.time.config
        for name in ("t0", "alpha", "s", "last"):
            assert np.array_equal(getattr(a.time, name), getattr(b.time, name), equal_nan=True), name
        for name in ("bins", "days"):
            x, y = getattr(a.time, name), getattr(b.time, name)
            for col in ("rows", "keys", "bias", "n"):
                assert np.array_equal(getattr(x, col), getattr(y, col)), (name, col)


@pytest.fixture(scope="module")
def stream(spark):
    """A time-aware bootstrap on the first 70% of a small generated history with drift, and three partitions
    of what follows (the last one without timestamps on a third of its rows)."""
    from streamrec.spark import bootstrap
    from streamrec.spark.schema import RATINGS_SCHEMA

    df = generate_frame(
        SynthConfig(n_users=150, n_items=300, n_ratings=6000, seed=11, item_drift_sd=0.4, user_drift_sd=0.4)
    )
    cut = int(len(df) * 0.7)
    history = spark.createDataFrame(df.iloc[:cut], RATINGS_SCHEMA)
    p = BootstrapParams(rank=3, iterations=3, time_bin_days=1000, user_drift=1, user_day=1)
    model = bootstrap.fit(history, p)
    model.users, model.items = model.users.localCheckpoint(), model.items.localCheckpoint()
    model.time.local_checkpoint()
    parts = [df.iloc[cut + k * 300 : cut + (k + 1) * 300].reset_index(drop=True) for k in range(3)]
    last = parts[2].copy()
    last["ts"] = pd.array(np.where(np.arange(len(last)) % 3 == 0, -1, last["ts"]), dtype="Int64")
    last.loc[last["ts"] == -1, "ts"] = pd.NA
    parts[2] = last
    return model, parts, [spark.createDataFrame(x, RATINGS_SCHEMA) for x in parts]


@pytest.mark.spark
def test_time_aware_update_batch_equals_one_by_one_and_scores_are_numpy_predict(spark, stream) -> None:
    from streamrec.core.params import UpdateParams
    from streamrec.spark import update
    from streamrec.spark.model import to_arrays

    model, parts, frames = stream
    p = UpdateParams(passes=2)
    batched, metrics = update.apply_many(model, frames, p)
    one = model
    for k, f in enumerate(frames):
        before = to_arrays(one)
        one, (m,) = update.apply_many(one, [f], p)
        # the prequential score of each partition is numpy's rule on the model before it, at the rating times
        pred = predict(before, parts[k]["user"], parts[k]["item"], clip=(0.5, 5.0), time=parts[k]["ts"])
        err = parts[k]["rating"].to_numpy() - pred
        assert m["rmse"] == pytest.approx(float(np.sqrt(np.mean(err * err))), rel=0, abs=1e-12)
        assert metrics[k]["rmse"] == pytest.approx(m["rmse"], rel=0, abs=1e-12)
    a, b = to_arrays(batched), to_arrays(one)
    _assert_same_model(a, b)
    # time moved: now is the latest day streamed, bins opened, untouched users' time rows kept as they were
    m0 = to_arrays(model)
    days = np.floor(pd.concat(parts)["ts"].dropna().to_numpy(float) / DAY)
    assert a.time.now == int(days.max()) > m0.time.now
    assert len(a.time.bins) > len(m0.time.bins) and len(a.time.days) > len(m0.time.days)
    touched = set(pd.concat(parts)["user"])
    for uid in m0.user_ids[:40]:
        if uid not in touched:
            r0, r1 = m0.user_row(uid), a.user_row(uid)
            assert (m0.time.alpha[r0], m0.time.last[r0]) == (a.time.alpha[r1], a.time.last[r1])


@pytest.mark.spark
def test_time_aware_model_round_trips_through_the_store_with_spark(spark, stream, tmp_path) -> None:
    from streamrec.spark.model import load_model, to_arrays, write_model

    model, parts, _ = stream
    store = ModelStore(str(tmp_path))
    write_model(store, model, {"kind": "bootstrap"}, "v1")
    doc = store.read_manifest("v1")
    assert set(TIME_TABLES) <= set(doc["tables"]) and set(doc["time"]) == {"config", "now"}
    want = to_arrays(model)
    _assert_same_model(to_arrays(load_model(store, spark, "v1")), want)
    _assert_same_model(store.load_arrays("v1"), want)  # the serving path (pyarrow, no Spark)
    # serving "now": no time given = the latest day; an item's last bin after its data
    got = store.load_arrays("v1")
    users, items = parts[0]["user"].to_numpy(), parts[0]["item"].to_numpy()
    now = np.full(len(users), got.time.now * DAY, dtype=float)
    assert np.array_equal(predict(got, users, items), predict(got, users, items, time=now))
    later = now + 5000 * DAY  # far after the data: the last bins, the users' last days, no day terms
    assert np.array_equal(predict(got, users, items, time=later), predict(got, users, items, time=now + DAY))


@pytest.mark.spark
def test_the_time_aware_model_recovers_planted_drift_the_time_blind_cannot(spark) -> None:
    """Generated data with planted drift of known size (``streamrec.core.synth``: each item's popularity moves
    linearly across the period, each user's bias across its own window): fitted on 80 %, the time-aware model's
    time terms follow the planted drift at the held-out ratings' times (correlation), and it predicts those
    ratings better than the time-blind model, which has no term that can move with time."""
    from streamrec.core.synth import Planted
    from streamrec.spark import bootstrap
    from streamrec.spark.model import to_arrays
    from streamrec.spark.schema import RATINGS_SCHEMA

    cfg = SynthConfig(
        n_users=200, n_items=300, n_ratings=15_000, seed=3, item_drift_sd=0.6, user_drift_sd=0.6
    )
    df = generate_frame(cfg)
    planted = Planted.build(cfg)
    held = np.random.default_rng(0).random(len(df)) < 0.2
    train, test = df[~held], df[held].reset_index(drop=True)
    blind = BootstrapParams(rank=3, iterations=5)
    aware = dataclasses.replace(blind, time_bin_days=1000, user_drift=1)
    frame = spark.createDataFrame(train, RATINGS_SCHEMA)
    models = {name: to_arrays(bootstrap.fit(frame, p)) for name, p in (("blind", blind), ("aware", aware))}
    users, items, ts = test["user"].to_numpy(), test["item"].to_numpy(), test["ts"].to_numpy(float)
    scale = cfg.scale
    rmse = {
        name: float(
            np.sqrt(
                np.mean((test["rating"] - predict(m, users, items, (scale.low, scale.high), time=ts)) ** 2)
            )
        )
        for name, m in models.items()
    }
    assert models["blind"].time is None
    assert rmse["aware"] < rmse["blind"] - 0.03, rmse
    # what was planted at each held-out rating, and what the time-aware model's time terms say there
    truth = planted.item_drift_at(items - 1, ts) + planted.user_drift_at(
        pd.Index(planted.user_ids).get_indexer(users), ts
    )
    a = models["aware"]
    u, i = a.user_rows(users), a.item_rows(items)
    assert (u >= 0).all() and (i >= 0).all()
    day = days_of(ts, len(ts), a.time.now)
    fitted = a.time.user_term(u, day) + a.time.item_term(i, day)
    assert np.corrcoef(fitted, truth)[0, 1] > 0.5


@pytest.mark.unit
def test_gate_and_lookup_use_the_time_aware_rule(tmp_path) -> None:
    """The gate reads the validation rows' ``ts`` and scores them at those times; the lookup's ``recommend``
    ranks at now and returns ``predict`` at now (the one rule); a time-blind model is scored as before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from streamrec.pipeline.lookup import Recommender
    from streamrec.pipeline.tasks import read_ratings_arrays, rmse
    from streamrec.storage.bucket import LocalBucket

    folder = tmp_path / "validation" / "history"
    folder.mkdir(parents=True)
    users, items, ts = [1, 1, 1, 2], [10, 10, 20, 10], [60 * DAY + 5, 75 * DAY, None, 52 * DAY]
    table = pa.table(
        {
            "user": pa.array(users, pa.int64()),
            "item": pa.array(items, pa.int64()),
            "rating": pa.array([4.0, 3.5, 3.0, 2.5]),
            "ts": pa.array(ts, pa.int64()),
        }
    )
    pq.write_table(table, folder / "part-00000.parquet")
    bucket = LocalBucket(str(tmp_path))
    rows = read_ratings_arrays(bucket, [bucket.spark_uri("validation/history")])
    assert np.isnan(rows["ts"][2]) and rows["ts"][0] == 60 * DAY + 5
    a, blind = tiny(), tiny(time=False)
    at_ts = predict(a, users, items, clip=(0.5, 5.0), time=pd.array(ts, dtype="Int64"))
    want = float(np.sqrt(np.mean((rows["rating"] - at_ts) ** 2)))
    assert rmse(a, rows, 0.5, 5.0) == pytest.approx(want, abs=1e-12)
    assert rmse(a, rows, 0.5, 5.0) != rmse(a, {**rows, "ts": np.full(4, np.nan)}, 0.5, 5.0)
    plain = predict(blind, users, items, clip=(0.5, 5.0))
    assert rmse(blind, rows, 0.5, 5.0) == float(np.sqrt(np.mean((rows["rating"] - plain) ** 2)))
    # the lookup: ranked and scored at now
    rec = Recommender(a, scale=(0.5, 5.0))
    got = rec.recommend(1, k=2)
    now = predict(a, [1, 1], [20, 10], clip=(0.5, 5.0))
    # item 20: -0.3 + 1.0 (dot); item 10 at now: b_i + its last bin = 0.2 - 0.125, + 0.5 (dot); time-blind,
    # item 10 (0.2 + 0.5) would tie 20 (0.7) and win on its id
    assert [i for i, _ in got] == [20, 10]
    assert [i for i, _ in Recommender(blind, scale=(0.5, 5.0)).recommend(1, k=2)] == [10, 20]
    np.testing.assert_allclose([s for _, s in got], now, rtol=0, atol=1e-12)
    assert rec.predict(1, 10) == now[1]
