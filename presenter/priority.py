"""CPU priority for the live path: the server's event loop and the engine process.

Frames are rendered and sent on a schedule; anything else on the machine (a browser, a
build, another service) can take the cores at the wrong moment. ``serve`` lowers its nice
value (``--nice``, default -5) before it starts its engine process and its threads, which
inherit it. A negative nice value needs root or ``CAP_SYS_NICE``; without them the presenter
says so in one line and runs at the normal priority.

With a browser on the same cores, the server dropped fewer frames and the page decoded
closer to 25 fps at nice -5 than at nice 0 (the runs, dated: benchmarks/README.md, "Figures
behind design choices").
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def set_nice(value: int) -> bool:
    """Set this process's nice value to ``value`` (-20..19) for the calling thread and what
    it starts from now on (threads and processes inherit it). Returns whether it was set;
    a refusal is logged, never raised."""
    if not -20 <= value <= 19:
        raise ValueError(f"a nice value is in -20..19, got {value}")
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current == value:
            return True
        os.setpriority(os.PRIO_PROCESS, 0, value)
    except PermissionError:
        log.info("CPU priority left at nice %d: nice %d needs root or CAP_SYS_NICE", current, value)
        return False
    except OSError as exc:
        log.info("CPU priority left as it was: %s", exc)
        return False
    log.info("CPU priority: nice %d (was %d)", value, current)
    return True
