"""What every entry point does with its outcome: exit 143 after a preemption, one line for bad input; and quiet
library logs (orbax and absl INFO lines) unless ``--verbosity`` asks for them."""

import sys
from typing import Callable

from absl import flags, logging

from selectivity_jax.train.loop import Preempted


def run_reporting_errors(fn: Callable[[], object]) -> None:
    """Calls ``fn``; a SIGTERM-saved stop exits with status 143, a ValueError (bad config or input) prints one
    ``error:`` line and exits with status 2."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        fn()
    except Preempted as stop:
        print(str(stop), file=sys.stderr)
        sys.exit(143)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
