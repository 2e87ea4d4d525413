"""What ``archscale check`` (and :func:`archscale.check`) returns: a :class:`Check`, or a
:class:`CheckError` when no configuration can train, for a one-stage spec (:mod:`.check`)
and a two-stage one (:mod:`.compound`). Imports neither ray nor optuna."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Callable

from archscale.search.jobs.check import feasibility
from archscale.search.jobs.compound import check_staged, stage_one_rows
from archscale.spec import Spec, SpecError
from archscale.search.track.options import require_trackers


class CheckError(SpecError):
    """``check`` found the spec unusable (no configuration fits the budgets, say); ``output``
    holds what ``archscale check`` prints before the error."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output


@dataclass
class Check:
    """What ``archscale check`` finds: ``size`` of the space (``inf`` with continuous ranges),
    configurations ``sampled`` (built and measured, not trained), how many are ``feasible``,
    and ``rows`` (one dict per configuration: its choices, params, macs, feasible, why).
    ``str(check)`` is the text ``archscale check`` prints."""

    spec: Spec
    text: str
    _counts: Callable[[], tuple[float, list[dict]]] = field(repr=False)
    _cache: tuple[float, list[dict]] | None = field(default=None, repr=False)

    def _get(self) -> tuple[float, list[dict]]:
        if self._cache is None:
            self._cache = self._counts()
        return self._cache

    @property
    def size(self) -> float:
        return self._get()[0]

    @property
    def rows(self) -> list[dict]:
        return self._get()[1]

    @property
    def sampled(self) -> int:
        return len(self.rows)

    @property
    def feasible(self) -> int:
        return sum(bool(r["feasible"]) for r in self.rows)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        if self._cache is None:  # a staged check measures its counts only when asked
            return f"Check({self.spec.name!r}: print() it for the report; .size, .sampled, .feasible, .rows)"
        size = "inf" if self.size == math.inf else f"{int(self.size):,}"
        return f"Check({self.spec.name!r}: {self.feasible} of {self.sampled} sampled feasible; size {size})"

    def __format__(self, format_spec: str) -> str:
        return format(self.text, format_spec)


def check_spec(spec: Spec, samples: int = 64) -> Check:
    """:func:`archscale.check` of a resolved spec."""
    require_trackers(spec)  # a tracker asked for whose package is missing
    if spec.search.stages is not None:
        return _check_staged(spec, samples)
    report = feasibility(spec, samples=samples)
    text = _check_text(spec, report)
    result = Check(spec, text, lambda: (report.size, report.rows))
    if report.feasible == 0:
        what = "" if len(report.unbuildable) == report.sampled else "no configuration meets the budgets; "
        raise CheckError(f"space: {what}{report.cause()}", output=text)
    return result


def _check_text(spec: Spec, report) -> str:
    choices = {d.name for d in spec.searched()}
    lines = [f"spec {spec.name!r}: valid",
             f"family {spec.space.family}; dataset {spec.data.dataset}; sampler {spec.search.sampler}; "
             f"{spec.search.num_trials} trials; objectives {', '.join(spec.search.objectives)}"]
    pre = spec.search.prescreen
    if pre is not None:
        lines.append(f"prescreen: {pre.proxy} ranks {pre.pool} random candidates"
                     + (f", {pre.check} train first to check it" if pre.check else "")
                     + f"; its best {pre.keep} train first (search.prescreen: null turns it off)")
    for d in spec.space.dimensions() + spec.train.dimensions():
        if d.kind == "fixed":
            desc = f"fixed {d.values[0]!r}"
        elif d.kind == "choice":
            desc = "choice of " + ", ".join(map(repr, d.values))
        else:
            desc = (f"{d.kind} range [{d.low}, {d.high}]" + (f" step {d.step}" if d.step else "")
                    + (" log" if d.log else ""))
        lines.append(f"  {d.name}: {desc}")
    size = "infinite (continuous ranges)" if report.size == math.inf else f"{int(report.size):,}"
    lines.append(f"size of the space: {size} configurations")
    budgets = ", ".join(f"{k}={v:,}" for k, v in (("max_params", spec.space.max_params),
                                                   ("max_macs", spec.space.max_macs),
                                                   ("max_latency_ms", spec.space.max_latency_ms)) if v)
    what = "configurations" if report.sampled == report.size else "sampled configurations"
    lines.append(f"{report.feasible} of {report.sampled} {what} fit the budgets ({budgets or 'no budgets'})")
    broken = report.unbuildable
    if broken:
        lines.append(f"{len(broken)} of {report.sampled} cannot be built (not counted as over a budget); the first "
                     f"{min(3, len(broken))}:")
        lines += [f"  {', '.join(f'{k}={v}' for k, v in r.items() if k in choices)}: {r['why']}" for r in broken[:3]]
    measured = [r for r in report.rows if r["params"] is not None]
    if measured:
        params = sorted(r["params"] for r in measured)
        macs = sorted(r["macs"] for r in measured)
        lines.append(f"params {params[0]:,} .. {params[-1]:,}; macs (multiply-adds per image) "
                     f"{macs[0]:,} .. {macs[-1]:,}")
    return "\n".join(lines) + "\n"


def _check_staged(spec: Spec, samples: int) -> Check:
    buffer = io.StringIO()
    try:
        check_staged(spec, samples=samples, out=buffer)
    except SpecError as err:
        raise CheckError(str(err), output=buffer.getvalue()) from None

    def counts() -> tuple[float, list[dict]]:
        # Stage 1's grid (or sample) measured again: only when the counts are asked for.
        rows, _ = stage_one_rows(spec, samples)
        size = math.prod(d.size for d in spec.space.searched()) if spec.space.searched() else 1
        return size, rows

    return Check(spec, buffer.getvalue(), counts)
