"""The reasoning study's machinery on a small hand-built probed set: every (semantics, policy,
budget) cell is filled, and the orderings that hold by construction do."""

from __future__ import annotations

import numpy as np

from sim.experiments.reasoning_study import POLICIES, SEMANTICS, k_sweep, study_rows
from probed import probed_traces


def test_study_rows_on_a_toy_set():
    rng = np.random.default_rng(1)
    queries = []
    for _ in range(30):
        runs = []
        for _ in range(3):
            n = int(rng.integers(3, 40))
            answers = np.where(rng.random(n) < 0.6, 7, rng.integers(-1, 4, n)).tolist()
            runs.append((64 * n + 20, bool(rng.random() < 0.7), answers))
        queries.append(runs)
    ts = probed_traces(queries, out_tokens=4)
    budgets = (500, 3000)
    rows = study_rows(ts, seeds=1, rate=2.0, queries=60, budgets=budgets)
    assert set(rows) == {(s, lab, b) for s in SEMANTICS for lab, _ in POLICIES for b in budgets}
    for b in budgets:
        for lab, spec in POLICIES:
            hard, forced = rows[("hard-cap", lab, b)], rows[("forced-answer", lab, b)]
            assert 0 <= hard["acc"] <= 1 and hard["abandon"] == forced["abandon"]
            if "early-exit" not in lab:
                # same caps; a run past its cap can only gain by answering there
                assert forced["acc"] >= hard["acc"] - 1e-12
                assert hard["exited"] == 0
        # the rule saves tokens against the same uniform caps (probes cost 4 tokens each)
        assert rows[("hard-cap", "early-exit k=3", b)]["tokens"] < rows[("hard-cap", "uniform", b)]["tokens"]
        assert rows[("hard-cap", "early-exit k=3", b)]["exited"] > 0


def test_k_sweep_table():
    ts = probed_traces([[(900, True, [1, 7, 7, 7, 7]), (300, False, [2, 2, 2, 2])]], out_tokens=3)
    lines = k_sweep(ts, caps=(200, 1000), ks=(2,))
    assert len(lines) == 4 + 2  # title, blank, head, rule; no rule and k = 2
    # k = 2 at cap 1000: run 1 exits at 192 on 7 (right), run 2 at 128 on 2 (wrong)
    cells = lines[-1].split(" | ")
    assert cells[3] == "0.500 / 168 / 100%"  # tokens (192 + 3 x 3 + 128 + 2 x 3) / 2 = 167.5
