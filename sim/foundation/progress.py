"""Progress of long work (sweeps, plans, trace imports), drawn by tqdm, one way everywhere.

Why it looks the way it does:

* On a terminal: tqdm's bar, redrawn in place (count, percentage, rate, elapsed and ETA).
* Anywhere else (a log file, CI, a notebook's stderr, a pipe): a bar redrawn with carriage
  returns is unreadable, and printing nothing until the end is worse, so whole lines are
  printed instead: one at the start, then one whenever :data:`INTERVAL_S` seconds have passed
  or another :data:`STEP` of the total is done, whichever comes first, and one at the end::

      sweep budgets: 12/40 tasks (30%), 0.85 tasks/s, elapsed 00:14, ETA 00:33

  A line is only printed when something finishes (never a heartbeat from a thread), so the
  output is a function of the work, not of the machine's timing alone.
* Warnings never break a bar: while it is live, ``warnings.showwarning`` and every console
  logging handler (Dask's ``distributed`` loggers included) write through ``tqdm.write``, which
  clears the bar, prints the message on its own line and redraws the bar below it.  Work that
  runs in other processes (a process pool, Dask workers, possibly on other machines) is wrapped
  in :class:`CatchWarnings`, so its warnings travel back with its result and are shown here,
  the same way, instead of on a worker's stderr.

Callers take ``progress: bool | None | ProgressOptions``: ``False`` is silent, ``None`` or
``True`` draws as above on stderr, a :class:`ProgressOptions` chooses the stream, interval and
step (tests inject a ``StringIO`` and a zero interval).
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

#: Off a terminal: at most this many seconds between two progress lines (while work finishes).
INTERVAL_S = 10.0
#: Off a terminal: a line at least every this fraction of the total.
STEP = 0.10


@dataclass(frozen=True)
class ProgressOptions:
    """Where and how often progress is shown (the defaults are the CLI's)."""

    stream: TextIO | None = None  # None: sys.stderr at the time of use
    interval_s: float = INTERVAL_S
    step: float = STEP
    terminal: bool | None = None  # None: ask the stream (isatty)

    def out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr


def options(progress: bool | None | ProgressOptions) -> ProgressOptions | None:
    """A ``progress=`` argument as options, or None when progress is off."""
    if progress is False:
        return None
    if isinstance(progress, ProgressOptions):
        return progress
    if progress is None or progress is True:
        return ProgressOptions()
    raise TypeError(f"progress must be a bool, None or ProgressOptions, not {progress!r}")


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineProgress(tqdm):
    """tqdm printing whole lines, for streams that are not terminals (see the module doc)."""

    def __init__(self, *args, interval_s: float = INTERVAL_S, step: float = STEP, noun: str = "",
                 **kwargs):
        self._interval_s, self._noun = interval_s, noun
        total = kwargs.get("total")
        self._step_n = max(1, math.ceil(step * total)) if total else 1
        self._last: tuple | None = None  # (n, total) at the last line
        self._last_t = 0.0
        # Every update reaches display(), which alone decides whether a line is due.
        super().__init__(*args, mininterval=0, miniters=1, smoothing=0, dynamic_ncols=False,
                         **kwargs)

    def line(self) -> str:
        """``desc: n/total noun (pct%), rate noun/s, elapsed mm:ss, ETA mm:ss``."""
        d = self.format_dict
        n, total, elapsed = d["n"], d["total"], d["elapsed"]
        ran = n - (d["initial"] or 0)
        rate = ran / elapsed if ran > 0 and elapsed > 0 else None
        noun = f" {self._noun}s" if self._noun else ""
        head = f"{n}/{total}{noun} ({100 * n / total:.0f}%)" if total else f"{n}{noun}"
        parts = [head]
        if rate is not None:
            parts.append(f"{rate:.3g}{noun}/s")
        parts.append(f"elapsed {self.format_interval(elapsed)}")
        if total and n < total:
            parts.append("ETA " + (self.format_interval((total - n) / rate) if rate else "?"))
        text = ", ".join(parts)
        return f"{self.desc}: {text}" if self.desc else text

    def display(self, msg=None, pos=None) -> bool:
        if msg is not None:  # tqdm clearing its line: nothing to clear in a log
            return False
        now, state = self._time(), (self.n, self.total)
        last = self._last
        finished = self.total is not None and self.n >= self.total
        due = (last is None
               or (finished and state != last)  # the end, or a total lowered to what is done
               or self.n - last[0] >= self._step_n
               or (self.n != last[0] and now - self._last_t >= self._interval_s))
        if not due:
            return False
        self._last, self._last_t = state, now
        self.fp.write(self.line() + "\n")
        getattr(self.fp, "flush", lambda: None)()
        return True

    def clear(self, nolock=False) -> None:
        pass  # lines are never redrawn, so tqdm.write has nothing to wipe first

    def close(self) -> None:
        if not self.disable and (self.n, self.total) != self._last:
            self._last = None  # force the final line (an interrupted run shows where it stopped)
            self.display()
        self.leave = False  # tqdm's own close would redraw and add a newline
        super().close()


def _console_loggers() -> list[logging.Logger]:
    """Loggers with a handler writing to stdout or stderr (root, ``distributed``, ...)."""
    found = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                     if isinstance(lg, logging.Logger)]
    return [lg for lg in found if any(isinstance(h, logging.StreamHandler)
                                      and getattr(h, "stream", None) in (sys.stdout, sys.stderr)
                                      for h in lg.handlers)]


@contextmanager
def _route_warnings(bar: tqdm, stream: TextIO) -> Iterator[None]:
    """While ``bar`` is live, warnings and console logging print through ``tqdm.write``."""
    def show(message, category, filename, lineno, file=None, line=None):
        text = warnings.formatwarning(message, category, filename, lineno, line)
        type(bar).write(text.rstrip("\n"), file=stream)

    saved = warnings.showwarning
    warnings.showwarning = show
    try:
        with logging_redirect_tqdm(loggers=_console_loggers(), tqdm_class=type(bar)):
            yield
    finally:
        warnings.showwarning = saved


@contextmanager
def progress_bar(total: int | None, *, done: int = 0, desc: str = "", noun: str = "",
                 progress: bool | None | ProgressOptions = None) -> Iterator[tqdm]:
    """A live progress display for ``total`` units (``done`` of them already finished).

    ``noun`` names one unit ("task"): tqdm's unit on a terminal ("2.1task/s"), made plural in
    the lines ("12/40 tasks, 2.1 tasks/s").

    Yields a tqdm object: ``update(n)`` after each unit, ``write(text)`` for a message that
    must not land inside the bar, ``total`` may be lowered when the work ends early.  With
    ``progress=False`` it is a disabled tqdm (every call a no-op) and nothing is rerouted.
    """
    opts = options(progress)
    if opts is None:
        bar = tqdm(total=total, initial=done, disable=True)
        try:
            yield bar
        finally:
            bar.close()
        return
    stream = opts.out()
    terminal = is_terminal(stream) if opts.terminal is None else opts.terminal
    if terminal:
        bar = tqdm(total=total, initial=done, desc=desc or None, unit=noun or "it",
                   file=stream, dynamic_ncols=True, leave=True)
    else:
        bar = LineProgress(total=total, initial=done, desc=desc or None, file=stream,
                           interval_s=opts.interval_s, step=opts.step, noun=noun)
    with ExitStack() as stack:
        stack.callback(bar.close)
        stack.enter_context(_route_warnings(bar, stream))
        yield bar


def say(progress: bool | None | ProgressOptions, text: str) -> None:
    """A one-line notice (say, the Dask dashboard's address) on the progress stream; printed
    whatever ``progress`` is (it is not progress), through tqdm so a live bar stays intact."""
    opts = options(progress) or ProgressOptions()
    tqdm.write(text, file=opts.out())
    getattr(opts.out(), "flush", lambda: None)()


# ---------------------------------------------------------------------------------------------
# Warnings raised in other processes.

class CatchWarnings:
    """``fn`` wrapped to return ``(result, warnings)``: the warnings it raised wherever it ran
    (a pool or Dask worker, maybe another machine), as picklable records for :func:`reissue`.

    The worker's own warning filters still apply; :func:`reissue` removes repeats across calls,
    so a sweep shows each warning (text, category, place) once, as a serial run would.
    """

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            result = self.fn(*args, **kwargs)
        records = [(str(w.message), w.category, w.filename, w.lineno) for w in caught]
        return result, records


def reissue(records: list[tuple], seen: set) -> None:
    """Raise recorded warnings here, through ``warnings.showwarning`` (so a live bar's hook
    prints them on their own lines) and this process's filters.  ``seen`` (one set per sweep)
    drops repeats: Python's own per-place registry is reset by every ``catch_warnings``, so it
    cannot."""
    for record in records:
        if record not in seen:
            seen.add(record)
            warnings.warn_explicit(*record)


__all__ = ["progress_bar", "ProgressOptions", "CatchWarnings", "reissue", "say", "INTERVAL_S",
           "STEP"]
