"""What the scripts share about their command line: how they end on Ctrl-C or ``kill`` (one line saying what is
kept and how to go on, not a traceback), and the overrides the running Hydra job was given."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

INTERRUPTED = 130   # the shell's code for a process ended by SIGINT


def run_main(main: Callable[[], Any], on_interrupt: str = "") -> None:
    """Call a script's Hydra ``main``; a KeyboardInterrupt (Ctrl-C, or SIGTERM where the script turns it into
    one) exits with code 130 and ``<script> interrupted`` plus ``on_interrupt`` (e.g. how to resume) on stderr.
    Errors are untouched: their traceback is the report."""
    try:
        main()
    except KeyboardInterrupt:
        name = Path(sys.argv[0]).name or "script"
        print(f"\n{name} interrupted" + (f": {on_interrupt}" if on_interrupt else ""), file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED)


def command_overrides() -> list[str]:
    """The running Hydra job's command-line overrides (``[]`` outside a Hydra job: a test composing a config)."""
    from hydra.core.hydra_config import HydraConfig

    return [str(o) for o in HydraConfig.get().overrides.task] if HydraConfig.initialized() else []
