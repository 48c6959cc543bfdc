"""``oracle``: the best allocation any policy could make for a batch, knowing the true curves.

Maximise the batch's expected accuracy sum_i acc_i(b_i) subject to sum_i b_i <= budget and
b_i <= b_max: a multiple-choice knapsack over each query's true curve (its options are 0 and the
lengths of its correct recorded samples, :mod:`policies.truth`), solved by Lagrangian relaxation
on upper concave hulls (:mod:`policies.mckp`; exact dynamic programming on small batches).  It
is an upper bound for comparisons, not a policy a server could run: it alone gets the true
curves (``sees_true_curves``), and it decides over the same batches as ``clear`` so that the
comparison is at the same information about arrivals.  Each decision's duality gap (LP bound
minus the value reached, in expected correct answers) is kept in ``gaps``.
"""

from __future__ import annotations


from policies.base import Allocation, Policy, QueryView, Timing, register
from policies.mckp import solve_mckp
from sim.foundation.spec import Field, positive

BATCH = Field((int,), None, "queries per allocation batch; null = the whole run",
              check=positive, nullable=True)
B_MAX = Field((int,), 4096, "largest cap any query may get (tokens)", check=positive)


@register
class Oracle(Policy):
    name = "oracle"
    doc = ("upper bound: best expected accuracy for the batch knowing the TRUE curves "
           "(multiple-choice knapsack, Lagrangian on concave hulls); not a real policy")
    PARAMS = {"batch": BATCH, "b_max": B_MAX}
    sees_true_curves = True

    def __init__(self, params, ctx, label=None):
        super().__init__(params, ctx, label)
        if ctx.true_curves is None:
            raise RuntimeError("oracle needs RunContext.true_curves (the runner sets it)")
        self.gaps: list[tuple[float, float]] = []  # (value, LP bound) per decision

    @property
    def timing(self) -> Timing:
        return Timing("batch", batch_size=self.params["batch"])

    def allocate(self, view: QueryView, budget_tokens: float) -> Allocation:
        costs, values = self.ctx.true_curves.options(view.query_id, self.params["b_max"])
        res = solve_mckp(costs, values, budget_tokens)
        self.gaps.append((res.value, res.bound))
        return Allocation(res.budgets, shadow_price=None if res.exact else res.price)

    def duality_gap(self) -> tuple[float, float]:
        """(absolute gap in expected correct answers, gap relative to the bound) over the run."""
        val = sum(v for v, _ in self.gaps)
        bound = sum(b for _, b in self.gaps)
        return bound - val, (bound - val) / bound if bound > 0 else 0.0
