"""Progress of long loops: a tqdm bar on a terminal, one log line per ~10 % elsewhere.

CI logs stay readable (no ``\\r`` fragments) and the base runtime install needs no tqdm: without
it, or when stderr is not a terminal, progress is logged through ``logging`` instead.
"""
from __future__ import annotations

import logging
import sys
from typing import Callable

Report = Callable[[int, int], None]


def progress(label: str, logger: logging.Logger, level: int = logging.INFO) -> Report:
    """A ``report(done, total)`` callback (``done`` of ``total`` items so far) that shows ``label``'s
    progress: a tqdm bar when stderr is a terminal, tqdm is installed and ``logger`` shows INFO;
    else a line on ``logger`` at ``level`` each time another tenth is done."""
    if logger.isEnabledFor(logging.INFO) and sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return _bar(tqdm, label)
    last = [-1]

    def report(done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth != last[0]:
            last[0] = tenth
            logger.log(level, "%s: %d/%d (%d%%)", label, done, total, 100 * done // max(total, 1))
    return report


def _bar(tqdm, label: str) -> Report:
    bar = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, unit="it", leave=False, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return report
