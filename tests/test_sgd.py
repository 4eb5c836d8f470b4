"""The numeric core of the streaming update (streamrec.core.sgd), against hand-worked values and a loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.core.params import UpdateParams
from streamrec.core.sgd import Side, absorb

pytestmark = pytest.mark.unit


def side(ids, bias, n, factors) -> Side:
    return Side(
        np.array(ids, np.int64), np.array(bias, float), np.array(n, np.int64), np.array(factors, float)
    )


def test_one_rating_one_pass_matches_hand_computation():
    # mu 3.5; user b 0.1, n 4, p 0.5; item b -0.2, n 9, q 0.4; rating 4.0; rank 1.
    p = UpdateParams(lr=1.0, reg=5.0, reg_factors=0.1, passes=1, prior_weight=1.0)
    users, items = absorb(
        np.array([0]),
        np.array([0]),
        np.array([4.0]),
        3.5,
        side([1], [0.1], [4], [[0.5]]),
        side([10], [-0.2], [9], [[0.4]]),
        p,
    )
    # user bias: eps = 4 - 3.5 - 0.1 + 0.2 - 0.2 = 0.4; P_b = 4 + 5 = 9; b = 0.1 + 0.4 / (1 + 9) = 0.14
    assert users.bias[0] == pytest.approx(0.14)
    # user factor: eps = 0.36; grad = 0.36*0.4 - 0.1*1*0.5 = 0.094; c = 0.16; P_p = 4*(0.16+0.1) = 1.04
    # h = 0.16 + 0.1 + 1.04 = 1.30; p = 0.5 + 0.094 / 1.3
    p_u = 0.5 + 0.094 / 1.3
    assert users.factors[0, 0] == pytest.approx(p_u)
    # item bias: eps = 4 - 3.5 - 0.14 + 0.2 - p_u*0.4; P_b = 9 + 5 = 14; b = -0.2 + eps / 15
    e = 4 - 3.5 - 0.14 + 0.2 - p_u * 0.4
    b_i = -0.2 + e / 15
    assert items.bias[0] == pytest.approx(b_i)
    # item factor: eps against the new bias; c = p_u^2; P_p = 9*(p_u^2 + 0.1); h = p_u^2 + 0.1 + P_p
    e = 4 - 3.5 - 0.14 - b_i - p_u * 0.4
    prec = 9 * (p_u**2 + 0.1)
    q = 0.4 + (e * p_u - 0.1 * 0.4) / (p_u**2 + 0.1 + prec)
    assert items.factors[0, 0] == pytest.approx(q)


def reference(u, i, r, mu, users: Side, items: Side, p: UpdateParams) -> tuple[Side, Side]:
    """A plain-loop transcription of the update equations (no vectorisation), for established ids only."""
    us, its = users.copy(), items.copy()
    k = us.factors.shape[1]
    b0 = {("u", a): us.bias[a] for a in range(len(us.ids))} | {
        ("i", a): its.bias[a] for a in range(len(its.ids))
    }
    f0 = {("u", a): us.factors[a].copy() for a in range(len(us.ids))}
    f0 |= {("i", a): its.factors[a].copy() for a in range(len(its.ids))}
    lr = p.lr
    for _ in range(p.passes):
        for name, me, other, mine, theirs in (("u", us, its, u, i), ("i", its, us, i, u)):
            for a in range(len(me.ids)):
                rows = [j for j in range(len(r)) if mine[j] == a]
                if not rows:
                    continue

                def eps(j, a=a, name=name, theirs=theirs):
                    uu, ii = (a, theirs[j]) if name == "u" else (theirs[j], a)
                    return (
                        r[j]
                        - mu
                        - us.bias[uu]
                        - its.bias[ii]
                        - sum(us.factors[uu, x] * its.factors[ii, x] for x in range(k))
                    )

                prec_b = p.prior_weight * me.n[a] + p.reg
                g = sum(eps(j) for j in rows) - prec_b * (me.bias[a] - b0[(name, a)])
                me.bias[a] += lr * g / (len(rows) + prec_b)
                es = [eps(j) for j in rows]
                qs = [other.factors[theirs[j]] for j in rows]
                qq = sum(float(q @ q) for q in qs)
                c = qq / (len(rows) * k)
                prec_p = p.prior_weight * me.n[a] * (c + p.reg_factors)
                grad = sum(e * q for e, q in zip(es, qs, strict=True))
                grad = (
                    grad
                    - p.reg_factors * len(rows) * me.factors[a]
                    - prec_p * (me.factors[a] - f0[(name, a)])
                )
                me.factors[a] = me.factors[a] + lr * grad / (qq + p.reg_factors * len(rows) + prec_p)
        lr *= p.decay
    return us, its


def test_vectorised_update_equals_loop_reference():
    rng = np.random.default_rng(7)
    nu, ni, k, m = 4, 5, 3, 12
    users = side(
        range(1, nu + 1), rng.normal(0, 0.3, nu), rng.integers(1, 20, nu), rng.normal(0, 0.5, (nu, k))
    )
    items = side(
        range(1, ni + 1), rng.normal(0, 0.3, ni), rng.integers(1, 20, ni), rng.normal(0, 0.5, (ni, k))
    )
    u, i = rng.integers(0, nu, m), rng.integers(0, ni, m)
    r = rng.choice(np.arange(1, 11) / 2, m)
    p = UpdateParams(passes=3, lr=0.8, decay=0.9)
    got_u, got_i = absorb(u, i, r, 3.4, users, items, p)
    ref_u, ref_i = reference(u, i, r, 3.4, users, items, p)
    np.testing.assert_allclose(got_u.bias, ref_u.bias, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_i.bias, ref_i.bias, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_u.factors, ref_u.factors, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_i.factors, ref_i.factors, rtol=1e-12, atol=1e-12)


def test_learning_rate_zero_changes_no_established_entity():
    rng = np.random.default_rng(1)
    users = side([1, 2], [0.2, -0.1], [5, 8], rng.normal(size=(2, 2)))
    items = side([7, 8, 9], [0.0, 0.3, -0.4], [3, 1, 2], rng.normal(size=(3, 2)))
    u, i, r = np.array([0, 1, 1, 0]), np.array([0, 1, 2, 2]), np.array([4.0, 2.5, 3.0, 5.0])
    got_u, got_i = absorb(u, i, r, 3.5, users, items, UpdateParams(lr=0.0, passes=5))
    np.testing.assert_array_equal(got_u.bias, users.bias)
    np.testing.assert_array_equal(got_u.factors, users.factors)
    np.testing.assert_array_equal(got_i.bias, items.bias)
    np.testing.assert_array_equal(got_i.factors, items.factors)


def test_new_user_gets_zero_bias_and_ridge_fold_in():
    # Rank 1: y = r - mu - b_i, minus the provisional bias b = sum(y) / (n + reg) that the first pass will set;
    # p = sum(q * y') / (sum(q^2) + fold_in_reg * n).
    users = side([42], [0.0], [0], [[0.0]])
    items = side([1, 2], [0.5, -0.5], [10, 10], [[1.0], [2.0]])
    u, i, r = np.array([0, 0]), np.array([0, 1]), np.array([5.0, 3.0])
    p = UpdateParams(lr=0.0, fold_in_reg=0.1, reg=5.0)
    got_u, got_i = absorb(u, i, r, 3.0, users, items, p)
    y1, y2 = 5.0 - 3.0 - 0.5, 3.0 - 3.0 + 0.5
    b = (y1 + y2) / (2 + 5.0)
    assert got_u.bias[0] == 0.0
    assert got_u.factors[0, 0] == pytest.approx((1.0 * (y1 - b) + 2.0 * (y2 - b)) / (1.0 + 4.0 + 0.1 * 2))
    np.testing.assert_array_equal(got_i.factors, items.factors)  # known items are not folded in


def test_one_pass_bias_step_is_the_batch_shrunk_mean():
    # With w = 1, a user with n old ratings of mean residual m0 (b0 = n m0 / (n + reg)) and new ones of residual
    # sum S gets b = (n m0 + S) / (n + |B| + reg): exactly the shrunk mean over all its ratings.
    reg, n, m0 = 5.0, 6, 0.5
    b0 = n * m0 / (n + reg)
    users = side([1], [b0], [n], [[0.0]])
    items = side([1, 2, 3], [0.0, 0.0, 0.0], [100, 100, 100], [[0.0], [0.0], [0.0]])
    r = np.array([4.0, 3.0, 4.5])
    got_u, _ = absorb(np.zeros(3, int), np.arange(3), r, 3.0, users, items, UpdateParams(reg=reg, passes=1))
    assert got_u.bias[0] == pytest.approx((n * m0 + (r - 3.0).sum()) / (n + 3 + reg))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    lr=st.floats(0.05, 1.0),
    heavy=st.integers(1, 300),
    passes=st.integers(1, 6),
)
def test_no_divergence_whatever_the_batch_shape(seed, lr, heavy, passes):
    """One user with up to 300 ratings in the partition: the objective can only go down, so the partition's
    squared error ends below where it started (plus the factor ridge paid at the start)."""
    rng = np.random.default_rng(seed)
    k, ni = 4, 400
    users = side([1, 2], rng.normal(0, 0.5, 2), [3, 50], rng.normal(0, 1.0, (2, k)))
    items = side(range(ni), rng.normal(0, 0.5, ni), rng.integers(1, 100, ni), rng.normal(0, 1.0, (ni, k)))
    u = np.r_[np.zeros(heavy, int), np.ones(5, int)]
    i = np.r_[rng.choice(ni, heavy, replace=False), rng.choice(ni, 5, replace=False)]
    r = rng.choice(np.arange(1, 11) / 2, len(u))
    p = UpdateParams(lr=lr, passes=passes)

    def sse(us: Side, its: Side) -> float:
        e = r - 3.5 - us.bias[u] - its.bias[i] - np.einsum("ij,ij->i", us.factors[u], its.factors[i])
        return float(e @ e)

    before = sse(users, items)
    ridge = p.reg_factors * (
        np.bincount(u) @ (users.factors**2).sum(1) + np.bincount(i, minlength=ni) @ (items.factors**2).sum(1)
    )
    got_u, got_i = absorb(u, i, r, 3.5, users, items, p)
    after = sse(got_u, got_i)
    assert math.isfinite(after)
    assert after <= before + ridge + 1e-9


@pytest.mark.unit
def test_update_group_gives_the_same_bits_whatever_the_row_order() -> None:
    """The grouped-map function of the Spark update sorts its rows: Spark does not promise their order."""
    import pandas as pd

    from streamrec.core.params import UpdateParams
    from streamrec.core.schema import HALF_STAR
    from streamrec.spark.update import _absorb_group

    rng = np.random.default_rng(7)
    rank, n = 3, 400
    users, items = np.arange(1, 31), np.arange(101, 141)
    r = pd.DataFrame(
        {
            "kind": "r",
            "seq": rng.integers(0, 2, n),  # two partitions
            "user": rng.choice(users, n),
            "item": rng.choice(items, n),
            "rating": rng.choice(np.arange(1, 11) / 2, n),
            # null in Spark (pandas gets NaN for numbers); unused on rating rows
            "known": False,
            "bias": np.nan,
            "n": np.nan,
            "factors": None,
        }
    )

    def side(kind: str, ids: np.ndarray) -> pd.DataFrame:
        known = ids % 3 != 0  # a third are new (n = 0, no factors)
        return pd.DataFrame(
            {
                "kind": kind,
                "seq": np.nan,  # as Spark hands an int column with nulls to pandas
                "user": ids,
                "item": np.nan,
                "rating": np.nan,
                "known": known,
                "bias": np.where(known, rng.normal(0, 0.3, len(ids)), 0.0),
                "n": np.where(known, rng.integers(1, 50, len(ids)), 0).astype(float),
                "factors": [list(rng.normal(0, 0.1, rank)) if k else None for k in known],
            }
        )

    pdf = pd.concat([r, side("u", users), side("i", items)], ignore_index=True)
    run = _absorb_group(3.5, 1000, rank, UpdateParams(), HALF_STAR)
    a = run(pdf).sort_values(["side", "id"]).reset_index(drop=True)
    b = run(pdf.sample(frac=1.0, random_state=3).reset_index(drop=True)).sort_values(["side", "id"])
    b = b.reset_index(drop=True)
    assert a[["side", "id", "n"]].equals(b[["side", "id", "n"]])
    assert list(a.loc[a["side"] == "m", "id"]) == [0, 1]
    assert np.array_equal(a["bias"].to_numpy(), b["bias"].to_numpy())
    rows = a["side"] != "m"
    assert np.array_equal(np.stack(a.loc[rows, "factors"]), np.stack(b.loc[rows, "factors"]))
    assert np.array_equal(np.stack(a.loc[~rows, "stats"]), np.stack(b.loc[~rows, "stats"]))
