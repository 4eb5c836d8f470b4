r"""The numeric core of the streaming update, in numpy: fold one partition into the entities it touches.

Notation (as in the talk and Surprise's ``SVD``): ``mu`` global mean, ``b_u``/``b_i`` biases, ``p_u``/``q_i``
factors, ``lr`` the step γ, ``reg`` the bias λ, ``reg_factors`` the factor λ', ``w`` the prior weight.
Prediction and error::

    r̂_ui = mu + b_u + b_i + p_u · q_i            ε_ui = r_ui - r̂_ui

This module sees only the *touched* sub-problem: the ratings of one partition B and the current state of the
users and items that appear in it (``n`` = ratings each has absorbed before B, 0 for a new id). Its cost is
O(|B| · rank) per pass, whatever the size of the model.

**1. Fold-in of new ids** (bias 0; ridge least squares against the fixed other side, Oryx / ``implicit``).
The target is what the entity's bias will not explain: y minus its provisional shrunk mean
b̂ = Σ y / (|B_e| + reg), which the first pass's exact bias step then sets (fitting the factors to y itself lets
them soak up the bias: about 0.003 worse final validation RMSE in a development replica of ``bench/stream.py``)::

    p_u = (Q_uᵀ Q_u + fold_in_reg |B_u| I)⁻¹ Q_uᵀ (y_u - b̂_u)       (new users, against known items)
    q_i = (P_iᵀ P_i + fold_in_reg |B_i| I)⁻¹ P_iᵀ (y_i - b̂_i)       (new items, against the users above)

**2. Passes.** Each pass takes a step for the user side (items fixed), then for the item side (users fixed), bias
block first, then factor block, each against fresh residuals. For an entity e with ratings B_e in the partition
and state (b⁰, p⁰, n) before it, the objective of its block is the partition's squared error plus a Gaussian
prior that summarises what it absorbed before (recursive least squares with an isotropic precision)::

    J_b(b) = Σ_{B_e} ε²  + P_b (b - b⁰)²,                 P_b = w n + reg
    J_p(p) = Σ_{B_e} ε²  + reg_factors |B_e| ||p||²  + P_p ||p - p⁰||²,     P_p = w n (c_e + reg_factors)

``P_b`` makes the bias recursion exact: with ``w = 1`` one bias step gives b = Σ_all resid / (n_all + reg), the
batch shrunk mean, however the ratings were cut into partitions (the regulariser is paid once, not once per
partition: paying it per partition shrinks every bias again on every partition, which cost about 0.04 RMSE in a
development replica of ``bench/stream.py``). ``c_e`` = mean ||q||² / rank over the partners of e in B: the curvature one
old rating contributed. The factor term ``reg_factors |B_e|`` is ALS-WR's count-scaled ridge paid for the new
ratings only. The steps (one normalised-LMS step per block, i.e. gradient over a curvature bound)::

    b ← b + lr · (Σ_{B_e} ε - P_b (b - b⁰)) / (|B_e| + P_b)
    p ← p + lr · (Σ_{B_e} ε q - reg_factors |B_e| p - P_p (p - p⁰)) / (Σ_{B_e} ||q||² + reg_factors |B_e| + P_p)

The bias step with lr = 1 is the exact block minimiser; the factor denominator bounds the block's largest
curvature (||Σ q qᵀ|| ≤ Σ ||q||²), so for 0 < lr ≤ 1 each block step can only lower its block's objective:
no divergence for any batch shape (one user with 300 ratings in a partition is as safe as 300 users with one).
Alternating blocks (Gauss-Seidel) rather than moving both sides on the same ε avoids the oscillation of
simultaneous updates. ``lr`` is multiplied by ``decay`` after each pass.

**3. Time terms** (a time-aware model, :func:`absorb_timed`; Koren 2009, ``streamrec.core.temporal``): the
prediction is ``mu + b_u(t) + b_i(t) + p_u · q_i`` with ``b_u(t) = b_u + α_u dev_u(t) + b_{u,day}`` and
``b_i(t) = b_i + b_{i,Bin(t)}``, and ε is the error of that rule at each rating's time. The partition moves the
time terms it touches, each as one more block of the same kind, after the entity's bias block: the user side
steps ``b_u``, then α_u, then the ``b_{u,day}`` of its days in B, then ``p_u``; the item side ``b_i``, then the
``b_{i,bin}`` of its bins in B (a bin or day seen for the first time opens with value 0 and count 0: bins open
as time passes), then ``q_i``. Each has the prior of the bias block, with the model's own λs
(``TimeConfig``: the bootstrap's)::

    α ← α + lr · (Σ_{B_u} dev ε - P_α (α - α⁰)) / (Σ_{B_u} dev² + P_α),     P_α = w s_u + reg_drift
    b ← b + lr · (Σ_{B_e} ε - P (b - b⁰)) / (|B_e| + P),                    P = w n_e + reg_bin | reg_day

``s_u`` = Σ dev² over the user's absorbed timed ratings and ``n_e`` the absorbed count of that bin / day: with
``w = 1`` and lr = 1 each is the exact shrunk mean over everything absorbed (as the bias). ``t_u`` of a user's
first timed ratings is their mean day, and stays. A rating without timestamp moves no time term.

References: Koren, Bell, Volinsky (2009) "Matrix factorization techniques for recommender systems"; Zhou et al.
(2008) ALS-WR; Takács et al. (2008) on incremental / fold-in updates; Haykin, "Adaptive Filter Theory" (NLMS);
Koren (2009) "Collaborative filtering with temporal dynamics".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamrec.core.params import UpdateParams
from streamrec.core.temporal import NO_DAY, TimeState, bins_of, dev


@dataclass
class Side:
    """State of the touched entities of one side (rows aligned with the sub-problem's index arrays)."""

    ids: np.ndarray  # int64 (k,)
    bias: np.ndarray  # float64 (k,)
    n: np.ndarray  # int64 (k,): ratings absorbed before this partition (0 = new)
    factors: np.ndarray  # float64 (k, rank); rows of new ids are ignored (folded in)

    def copy(self) -> Side:
        return Side(self.ids.copy(), self.bias.copy(), self.n.copy(), self.factors.copy())


def fold_in(
    rows: np.ndarray,
    others: np.ndarray,
    y: np.ndarray,
    new: np.ndarray,
    other_factors: np.ndarray,
    reg: float,
) -> dict[int, np.ndarray]:
    """Ridge solve ``(XᵀX + reg |B_e| I)⁻¹ Xᵀ y`` per entity row in ``new``; X = factors of its partners.

    The ridge is count-scaled (ALS-WR), the same regulariser the bootstrap's ALS uses."""
    rank = other_factors.shape[1]
    out: dict[int, np.ndarray] = {}
    if len(new) == 0:
        return out
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.searchsorted(sorted_rows, new, "left")
    ends = np.searchsorted(sorted_rows, new, "right")
    eye = np.eye(rank)
    for e, s, t in zip(new, starts, ends, strict=True):
        sel = order[s:t]
        x = other_factors[others[sel]]
        out[int(e)] = np.linalg.solve(x.T @ x + reg * (t - s) * eye, x.T @ y[sel])
    return out


class _Terms:
    """The time terms of a sub-problem, per rating: ``dev`` (0 when untimed or no drift) and the positions of its
    (user, day) and (item, bin) entries in ``state.days`` / ``state.bins`` (-1: none)."""

    def __init__(self, u: np.ndarray, i: np.ndarray, day: np.ndarray, state: TimeState) -> None:
        cfg = state.config
        self.state = state
        timed = day != NO_DAY
        self.timed = timed
        # a user's first timed ratings anchor it: t_u = their mean day
        fresh = np.isnan(state.t0)
        if fresh.any():
            k = len(state.t0)
            cnt = np.bincount(u[timed], minlength=k)
            mean = np.bincount(u[timed], weights=day[timed].astype(np.float64), minlength=k) / np.maximum(
                cnt, 1
            )
            anchor = fresh & (cnt > 0)
            state.t0[anchor] = mean[anchor]
        self.dev = np.zeros(len(u))
        if cfg.user_drift:
            self.dev[timed] = dev(day[timed], state.t0[u[timed]], cfg.beta)
        self.ud = np.full(len(u), -1, dtype=np.int64)
        self.ib = np.full(len(u), -1, dtype=np.int64)
        if cfg.user_day:
            state.days, self.ud[timed] = state.days.ensure(u[timed], day[timed])
        if cfg.bin_days:
            state.bins, self.ib[timed] = state.bins.ensure(i[timed], bins_of(day[timed], cfg.bin_days))

    def user(self, u: np.ndarray) -> np.ndarray:
        out = self.state.alpha[u] * self.dev
        has = self.ud >= 0
        out[has] += self.state.days.bias[self.ud[has]]
        return out

    def item(self) -> np.ndarray:
        out = np.zeros(len(self.ib))
        has = self.ib >= 0
        out[has] = self.state.bins.bias[self.ib[has]]
        return out


def absorb(
    u: np.ndarray, i: np.ndarray, r: np.ndarray, mu: float, users: Side, items: Side, p: UpdateParams
) -> tuple[Side, Side]:
    """Fold the ratings ``(users.ids[u], items.ids[i], r)`` into the touched state; return the new state.

    ``mu`` is the mean *after* this partition (the caller keeps the running mean). Inputs are not modified.
    """
    users, items, _ = _absorb(u, i, r, mu, users, items, p, None)
    return users, items


def absorb_timed(
    u: np.ndarray,
    i: np.ndarray,
    r: np.ndarray,
    day: np.ndarray,
    mu: float,
    users: Side,
    items: Side,
    state: TimeState,
    p: UpdateParams,
) -> tuple[Side, Side, TimeState]:
    """:func:`absorb` for a time-aware model: ``day`` is each rating's day number (``NO_DAY``: no timestamp)
    and ``state`` the time terms of the touched rows (``TimeState.take``). Returns the new sides and the new
    time state: its time terms moved (module docstring, 3.), ``s`` and the bin / day counts grown by B, ``last``
    and ``now`` moved to B's latest day. Inputs are not modified."""
    day = np.asarray(day, dtype=np.int64)
    terms = _Terms(u, i, day, state.copy())
    users, items, terms = _absorb(u, i, r, mu, users, items, p, terms)
    assert terms is not None
    st, timed = terms.state, terms.timed
    st.s += np.bincount(u, weights=terms.dev * terms.dev, minlength=len(st.s))
    if (terms.ud >= 0).any():
        st.days.n += np.bincount(terms.ud[terms.ud >= 0], minlength=len(st.days))
    if (terms.ib >= 0).any():
        st.bins.n += np.bincount(terms.ib[terms.ib >= 0], minlength=len(st.bins))
    if timed.any():
        latest = np.full(len(st.last), NO_DAY, dtype=np.int64)
        np.maximum.at(latest, u[timed], day[timed])
        st.last = np.maximum(st.last, latest)
        st.now = max(st.now, int(day[timed].max()))
    return users, items, st


def _absorb(
    u: np.ndarray,
    i: np.ndarray,
    r: np.ndarray,
    mu: float,
    users: Side,
    items: Side,
    p: UpdateParams,
    terms: _Terms | None,
) -> tuple[Side, Side, _Terms | None]:
    users, items = users.copy(), items.copy()
    rank = users.factors.shape[1]
    new_u = np.nonzero(users.n == 0)[0]
    new_i = np.nonzero(items.n == 0)[0]
    users.bias[new_u] = 0.0
    items.bias[new_i] = 0.0
    users.factors[new_u] = 0.0
    items.factors[new_i] = 0.0
    # 1. Fold-in: users against items known before this partition, then items against users (folded ones too).
    # The factors are fitted to what the entity's bias will not explain: y minus its provisional shrunk mean
    # b̂ = Σ y / (|B_e| + reg), which the first pass's (exact) bias step then sets; the bias itself starts at 0.
    y = r - mu - items.bias[i]
    if terms is not None:
        y = y - terms.item() - terms.user(u)
    y = y - _shrunk_mean(u, y, len(users.ids), p.reg)[u] * np.isin(u, new_u)
    for row, vec in fold_in(u, i, y, new_u, items.factors, p.fold_in_reg).items():
        users.factors[row] = vec
    y = r - mu - users.bias[u]
    if terms is not None:
        y = y - terms.user(u) - terms.item()
    y = y - _shrunk_mean(i, y, len(items.ids), p.reg)[i] * np.isin(i, new_i)
    for row, vec in fold_in(i, u, y, new_i, users.factors, p.fold_in_reg).items():
        items.factors[row] = vec

    # 2. Passes of block-normalised steps.
    nb_u = np.bincount(u, minlength=len(users.ids)).astype(np.float64)
    nb_i = np.bincount(i, minlength=len(items.ids)).astype(np.float64)
    b0_u, b0_i = users.bias.copy(), items.bias.copy()
    p0_u, p0_i = users.factors.copy(), items.factors.copy()
    prior = None if terms is None else _TimePrior(terms, u, i, p)
    lr = p.lr
    for _ in range(p.passes):
        if lr > 0:
            _block(u, i, r, mu, users, items, nb_u, b0_u, p0_u, lr, p, rank, True, terms, prior)
            _block(i, u, r, mu, items, users, nb_i, b0_i, p0_i, lr, p, rank, False, terms, prior)
        lr *= p.decay
    return users, items, terms


class _TimePrior:
    """What the time blocks hold fixed during the passes: their values before B, their prior precisions and their
    rating counts / curvature in B."""

    def __init__(self, terms: _Terms, u: np.ndarray, i: np.ndarray, p: UpdateParams) -> None:
        st, cfg, w = terms.state, terms.state.config, p.prior_weight
        self.alpha0 = st.alpha.copy()
        self.prec_alpha = w * st.s + cfg.reg_drift
        self.dd = np.bincount(u, weights=terms.dev * terms.dev, minlength=len(st.alpha))
        self.day0, self.bin0 = st.days.bias.copy(), st.bins.bias.copy()
        self.prec_day = w * st.days.n.astype(np.float64) + cfg.reg_day
        self.prec_bin = w * st.bins.n.astype(np.float64) + cfg.reg_bin
        self.n_day = np.bincount(terms.ud[terms.ud >= 0], minlength=len(st.days)).astype(np.float64)
        self.n_bin = np.bincount(terms.ib[terms.ib >= 0], minlength=len(st.bins)).astype(np.float64)


def _shrunk_mean(idx: np.ndarray, y: np.ndarray, k: int, reg: float) -> np.ndarray:
    return np.bincount(idx, weights=y, minlength=k) / (np.bincount(idx, minlength=k) + reg)


def _residuals(u, i, r, mu, users: Side, items: Side, terms: _Terms | None = None) -> np.ndarray:
    if terms is None:
        return (
            r - mu - users.bias[u] - items.bias[i] - np.einsum("ij,ij->i", users.factors[u], items.factors[i])
        )
    return (
        r
        - mu
        - users.bias[u]
        - items.bias[i]
        - terms.user(u)
        - terms.item()
        - np.einsum("ij,ij->i", users.factors[u], items.factors[i])
    )


def _keyed_step(pos: np.ndarray, e: np.ndarray, bias, b0, prec, n_b, lr: float) -> None:
    """One prior-held shrunk-mean step of the entries ``pos`` (per rating, -1: none) of a keyed table."""
    has = pos >= 0
    if not has.any():
        return
    g = np.bincount(pos[has], weights=e[has], minlength=len(bias)) - prec * (bias - b0)
    moved = n_b > 0
    bias[moved] += lr * g[moved] / (n_b[moved] + prec[moved])


def _block(
    a,
    o,
    r,
    mu,
    me: Side,
    other: Side,
    nb,
    b0,
    p0,
    lr,
    p: UpdateParams,
    rank,
    side_is_user: bool,
    terms: _Terms | None = None,
    prior: _TimePrior | None = None,
) -> None:
    k = len(me.ids)
    touched = nb > 0

    def eps() -> np.ndarray:
        if side_is_user:
            return _residuals(a, o, r, mu, me, other, terms)
        return _residuals(o, a, r, mu, other, me, terms)

    n_old = me.n.astype(np.float64)
    # Bias block: exact minimiser for lr = 1.
    prec_b = p.prior_weight * n_old + p.reg
    g = np.bincount(a, weights=eps(), minlength=k) - prec_b * (me.bias - b0)
    me.bias[touched] += lr * g[touched] / (nb[touched] + prec_b[touched])
    if terms is not None and prior is not None:  # the time blocks of this side (module docstring, 3.)
        st, cfg = terms.state, terms.state.config
        if side_is_user and cfg.user_drift:
            gd = np.bincount(a, weights=terms.dev * eps(), minlength=k) - prior.prec_alpha * (
                st.alpha - prior.alpha0
            )
            moved = prior.dd > 0
            st.alpha[moved] += lr * gd[moved] / (prior.dd[moved] + prior.prec_alpha[moved])
        if side_is_user and cfg.user_day:
            _keyed_step(terms.ud, eps(), st.days.bias, prior.day0, prior.prec_day, prior.n_day, lr)
        if not side_is_user and cfg.bin_days:
            _keyed_step(terms.ib, eps(), st.bins.bias, prior.bin0, prior.prec_bin, prior.n_bin, lr)
    # Factor block: NLMS step against fresh residuals.
    e = eps()
    q = other.factors[o]
    grad = np.zeros_like(me.factors)
    np.add.at(grad, a, e[:, None] * q)
    qq = np.bincount(a, weights=np.einsum("ij,ij->i", q, q), minlength=k)
    c = np.divide(qq, nb * rank, out=np.zeros(k), where=touched)
    prec_p = p.prior_weight * n_old * (c + p.reg_factors)
    grad -= (p.reg_factors * nb)[:, None] * me.factors + prec_p[:, None] * (me.factors - p0)
    h = qq + p.reg_factors * nb + prec_p
    step = np.divide(lr, h, out=np.zeros(k), where=touched & (h > 0))
    me.factors += step[:, None] * grad
