"""The study's reading of the recorded reasoning runs and probes (../shared/data): every run has
its probes in order, every 64 tokens and never past the run, and the forced answer after the
whole reasoning agrees with the source's own grading of the final answer."""

from __future__ import annotations

import numpy as np

from policies.reasoning_study import _from_shared
from traces.collect.grading import MathGrader


def test_amc23_probes_read_and_graded(shared_data):
    ts = _from_shared("deepseek-r1-distill-qwen-7b", "amc23", MathGrader(), lambda msg: None)
    n = np.diff(ts.probe_offsets)
    assert ts.n_queries == 40 and len(ts.sample_tokens) == 120 and (n > 0).all()
    run_len = np.repeat(ts.sample_tokens, n)
    assert (ts.probe_position % 64 == 0).all() and (ts.probe_position <= run_len).all()
    within = ts.probe_position[1:] > ts.probe_position[:-1]
    assert within[np.diff(ts.probe_sample) == 0].all()  # ordered inside each run
    # the last probe (after the whole reasoning) is graded as the source graded the run
    # (measured: 95 %; a grader disagreeing on more than 1 run in 10 would be a bug)
    last = ts.probe_offsets[1:] - 1
    assert (ts.probe_correct[last] == ts.sample_correct).mean() >= 0.9
    # answer classes: right answers share one class per query
    q = ts.sample_query[ts.probe_sample]
    right = ts.probe_correct
    for i in np.unique(q[right]):
        assert len(np.unique(ts.probe_answer[right & (q == i)])) == 1
