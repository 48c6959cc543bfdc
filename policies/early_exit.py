"""The early-exit family: caps as usual, plus a Dynasor-style rule that stops a request early.

* ``early-exit``: uniform caps (the target budget per query, on arrival) with the exit rule.
* ``clear+early-exit``: CLEAR's batch caps (the paper's market, :mod:`policies.clear`) with the
  exit rule inside them.

The policy decides caps from what a server knows before generation (as its base policy does)
and declares the rule (:attr:`exit_rule`); it never sees a probe.  The rule is applied by the
simulated server while the request decodes (:mod:`sim.core.early_exit`): stop after ``k``
consecutive forced answers agreed (and, with ``certain``, after ``k`` consecutive ones flagged
certain), paying each forced answer's tokens.  A stopped request frees its slot and KV at once,
so caps become ceilings that most requests never reach: the family spends fewer tokens than
its budget (``tokens_per_query`` says how many).
"""

from __future__ import annotations

from policies.base import ExitRule, register
from policies.clear import Clear
from policies.uniform import Uniform
from sim.foundation.spec import Field, positive

EXIT_PARAMS = {
    "k": Field((int,), 3, "stop after k consecutive forced answers agreed (Dynasor's "
               "consistency window)", check=positive),
    "certain": Field((bool,), False, "also stop after k consecutive answers flagged certain "
                     "(in the governor recordings nearly every probe is flagged certain, so "
                     "this stops almost every run at probe k)"),
}


class _EarlyExit:
    """Mixin: the exit rule from the ``k`` and ``certain`` parameters."""

    @property
    def exit_rule(self) -> ExitRule:
        return ExitRule(int(self.params["k"]), bool(self.params["certain"]))


@register
class EarlyExit(_EarlyExit, Uniform):
    name = "early-exit"
    doc = ("uniform caps (the target budget) with Dynasor-style early exit: stop after k "
           "consecutive agreeing forced answers (needs trace sets with probes)")
    PARAMS = dict(EXIT_PARAMS)


@register
class ClearEarlyExit(_EarlyExit, Clear):
    name = "clear+early-exit"
    doc = ("CLEAR batch caps with early exit inside them: stop after k consecutive agreeing "
           "forced answers (needs trace sets with probes)")
    PARAMS = {**Clear.PARAMS, **EXIT_PARAMS}
