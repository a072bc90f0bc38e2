"""Stratified allocation: how many samples of each class go to each part, within one of exact.

Splitting twice with sklearn's train_test_split rounds twice, so a class's val count can miss
its exact share n_c * f by up to 1 + val/(1 - test) samples (1.67 measured). Here the whole
(classes x parts) table is rounded at once ("controlled rounding"): every cell is the floor or
ceiling of its exact share, every row sums to the class count, and every part's total is within
one of n * f. Such a rounding always exists (the table's constraints form a network, whose
polytope has integral vertices); a max-flow finds one.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow

_TOL = 1e-6  # shares within this of an integer are that integer (n * (k / n) is not always k in floats)


def allocate(counts: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(groups, parts) int counts: row g sums to counts[g], cell (g, p) within one of counts[g] * fractions[p]."""
    counts = np.asarray(counts, dtype=np.int64)
    share = counts[:, None] * np.asarray(fractions, dtype=np.float64)[None, :]
    share = np.where(np.abs(share - np.rint(share)) < _TOL, np.rint(share), share)
    base = np.floor(share).astype(np.int64)
    frac = share - base
    row_need = counts - base.sum(1)            # how many ceilings each row takes
    col_total = frac.sum(0)
    col_cap = np.ceil(col_total - _TOL).astype(np.int64)
    # a dummy row holds each part's missing fraction, so all margins of the fractional table are
    # integers; dropping the dummy afterwards leaves each part's total at its floor or ceiling
    dummy = col_cap - col_total
    edges = np.vstack([frac > _TOL, dummy > _TOL])
    need = np.append(row_need, col_cap.sum() - row_need.sum())
    flow = _max_flow(edges, need, col_cap, rng)
    return base + flow[:-1]


def _max_flow(edges: np.ndarray, need: np.ndarray, cap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0/1 table on `edges` with row sums `need` and column sums `cap` (exists by construction)."""
    rows, cols = edges.shape
    order = rng.permutation(rows)  # which rows take the ceilings is decided at random, not by position
    src, sink = 0, 1 + rows + cols
    u, v, c = [], [], []
    for pos, r in enumerate(order):
        u.append(src); v.append(1 + pos); c.append(int(need[r]))
        for k in np.flatnonzero(edges[r]):
            u.append(1 + pos); v.append(1 + rows + k); c.append(1)
    for k in range(cols):
        u.append(1 + rows + k); v.append(sink); c.append(int(cap[k]))
    graph = csr_matrix((np.array(c, dtype=np.int32), (u, v)), shape=(sink + 1, sink + 1))
    result = maximum_flow(graph, src, sink)
    if result.flow_value != int(need.sum()):  # cannot happen; a wrong table must not pass silently
        raise AssertionError(f"allocation flow {result.flow_value} != {int(need.sum())}")
    f = result.flow.toarray()[1:1 + rows, 1 + rows:sink]
    table = np.zeros_like(f)
    table[order] = f
    return np.clip(table, 0, None).astype(np.int64)
