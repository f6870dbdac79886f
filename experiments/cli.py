"""What every entry point does around its work: flags parsed with one-line errors, SIGTERM or SIGINT (Ctrl-C) at
any moment ending with one line and exit 143 or 130, an expected failure (bad input) printed as one ``error: ...`` line with exit 2, and
quiet library logs. ``--verbosity=1`` (or the environment variable SELECTIVITY_JAX_TRACEBACK=1) shows tracebacks
for bug reports.

Every command's module imports this one first and runs ``cli.run(main)``; ``main`` wraps its work in
`run_reporting_errors`.
"""

import os
import signal
import sys
from typing import Any, Callable


def _exit_on_signal(signum, frame):
    """SIGTERM or SIGINT outside the training loop (which saves a checkpoint itself and raises `Preempted`): one
    line, exit 128 + the signal's number at once (143, 130), no KeyboardInterrupt traceback from any thread. Every
    file the project writes is complete or absent at any moment (atomic writes, orbax's temporary directories), so
    stopping here loses nothing a kill -9 would not; raising instead could land inside an extension module's import
    (or a compilation) and abort the interpreter."""
    del frame
    try:
        sys.stdout.flush()  # the progress lines printed so far
    except Exception:  # noqa: BLE001 - e.g. the main thread was inside a write to stdout
        pass
    name = signal.Signals(signum).name
    os.write(2, f"stopped by {name}; what was saved is kept: run the same command again to resume\n".encode())
    rundir = sys.modules.get("selectivity_jax.rundir")
    if rundir is not None:
        rundir.forget_held_locks()
    os._exit(128 + signum)


# Installed when the command's module is imported, before the slow imports below, so that a signal at start-up (or
# during the first compilation) is reported like any other.
for _number in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_number, _exit_on_signal)

import errno  # noqa: E402
import re  # noqa: E402

TRACEBACK_ENV = "SELECTIVITY_JAX_TRACEBACK"
EXIT_BAD_INPUT = 2
EXIT_BUG = 1


def _show_tracebacks(argv: list[str] | None = None) -> bool:
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        return True
    if argv is not None:  # before the flags are parsed
        return any(re.match(r"^--?(verbosity|v)=?[1-9]", arg) for arg in argv)
    return flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity >= 1


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """Prints ``error: message`` as one line to stderr and exits with ``code``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(code)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = re.compile(r"No space left on device|Disk quota exceeded|os_error_code='(28|122)'", re.I)
_NO_MEMORY_TEXT = re.compile(r"out of memory|cannot allocate memory|failed to map segment|Unable to allocate|"
                             r"std::bad_alloc|RESOURCE_EXHAUSTED", re.I)
_QUOTED_PATH = re.compile(r"""["'](/[^"']+)["']""")
_XLA_INTERNAL = re.compile(r"^INTERNAL:")


def _address_space_limit() -> int | None:
    """This process's address-space limit in bytes (``ulimit -v``), or None when it has none."""
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def _chain(error: BaseException) -> list[BaseException]:
    """``error``, its causes and contexts, and the members of exception groups among them."""
    found, todo = [], [error]
    while todo:
        current = todo.pop()
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        todo += [current.__cause__, current.__context__, *getattr(current, "exceptions", ())]
    return found


def _outside_temporary(path: str) -> str:
    """``path`` up to the first temporary entry in it (an orbax temporary checkpoint, an atomic write's .tmp)."""
    parts = path.split(os.sep)
    for index, part in enumerate(parts):
        if ".orbax-checkpoint-tmp" in part or part.endswith(".tmp"):
            return os.sep.join(parts[:index]) or os.sep
    return path


def resource_error(error: BaseException) -> str | None:
    """The one line for a full disk or exhausted memory anywhere in ``error``'s chain (orbax and tensorstore wrap
    the OSError of their threads, or keep only its text), else None."""
    chain = _chain(error)
    stage = sys.modules.get("selectivity_jax.resources")
    what, where = stage.stage_of(error) if stage is not None else ("starting", None)
    if what == "starting" and any(isinstance(item, ImportError) for item in chain):
        what = "loading libraries"
    for item in chain:
        if (isinstance(item, OSError) and item.errno in _NO_SPACE) or _NO_SPACE_TEXT.search(str(item)):
            path = getattr(item, "filename", None) if isinstance(item, OSError) else None
            quoted = _QUOTED_PATH.search(str(item))
            path = path or (quoted.group(1) if quoted else None) or where or "the device"
            return (f"no space left on {_outside_temporary(str(path))} while {what} (free space and run the same "
                    "command again to resume)")
    for item in chain:
        if (isinstance(item, MemoryError) or (isinstance(item, OSError) and item.errno == errno.ENOMEM)
                or _NO_MEMORY_TEXT.search(str(item))):
            return f"out of memory while {what} (free memory, or use a smaller batch or model, and run it again)"
    return _internal_error_under_a_memory_limit(chain, what)


def _internal_error_under_a_memory_limit(chain: list[BaseException], what: str) -> str | None:
    """XLA's CPU kernels (YNNPACK, oneDNN) report a failed allocation as ``INTERNAL: ... operation failed`` with no
    word of memory: under an address-space limit that is the likely cause, so the line says so with the limit."""
    limit = _address_space_limit()
    internal = next((item for item in chain if _XLA_INTERNAL.match(str(item))), None)
    if limit is None or internal is None:
        return None
    first_line = str(internal).splitlines()[0]
    return (f"out of memory while {what}, most likely: XLA failed with '{first_line}' under this process's "
            f"address-space limit of {limit >> 20} MiB (ulimit -v; raise it, or use a smaller batch or model, "
            "and run it again)")


def _report_resource_error(error: BaseException) -> None:
    """For a disk or memory error: prints the one ``error:`` line and exits 2 (the run directories' locks removed
    the temporary files of failed writes on the way out); returns for any other error."""
    message = resource_error(error)
    if message is not None:
        fail(message)


def _excepthook(kind: type, error: BaseException, trace: Any) -> None:
    """A disk or memory error outside `run_reporting_errors` (e.g. importing JAX under a memory limit): one line,
    exit 2; anything else as Python reports it."""
    if not _show_tracebacks(sys.argv) and isinstance(error, Exception):
        try:
            _report_resource_error(error)
        except SystemExit as exit_:
            sys.stderr.flush()
            os._exit(exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT)
    sys.__excepthook__(kind, error, trace)


sys.excepthook = _excepthook  # installed before the slow imports below, which can fail for lack of memory

import logging as std_logging  # noqa: E402
import traceback  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from selectivity_jax.train.stopping import Preempted  # noqa: E402


# Exceptions that mean bad input or a missing resource, not a bug: one line, exit 2.
EXPECTED_ERRORS = (ValueError, OSError, app.UsageError, flags.Error)

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_FRACTION = re.compile(rf"({_NUMBER})\s*/\s*({_NUMBER})")
_ARITHMETIC_VALUE = re.compile(r"^[\s\d.eE+\-/(),\[\]]*$")


def numbers_written_as_fractions(argv: list[str]) -> list[str]:
    """``--config.x=2/255`` (or a tuple ``(1/255,2/255)``) -> the float, as a user writes attack budgets; other
    arguments unchanged."""
    def convert(value: str) -> str:
        if "/" not in value or not _ARITHMETIC_VALUE.match(value):
            return value

        def divide(match: re.Match) -> str:
            numerator, denominator = float(match.group(1)), float(match.group(2))
            if denominator == 0:
                raise ValueError(f"division by zero in {value!r}")
            return repr(numerator / denominator)
        return _FRACTION.sub(divide, value)

    converted = []
    for arg in argv:
        if arg.startswith("--config.") and "=" in arg:
            name, value = arg.split("=", 1)
            arg = f"{name}={convert(value)}"
        converted.append(arg)
    return converted


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with one-line errors (unknown flags or config fields, missing config files, values of
    the wrong type) and exit 2."""
    show = _show_tracebacks(argv)
    try:
        return flags.FLAGS(numbers_written_as_fractions(argv))
    except Exception as error:  # noqa: BLE001 - any failure while parsing is the command line's
        if show:
            traceback.print_exc()
        fail(f"{_describe(error, argv)} (see --help)")
    raise AssertionError("unreachable")


def _describe(error: BaseException, argv: list[str] | None = None) -> str:
    """One line saying what went wrong, with the innermost cause config_flags wraps errors in."""
    message = str(error).strip() or type(error).__name__
    if "Traceback (most recent call last)" in message:  # config_flags quotes a config file's traceback
        before, _, trace = message.partition("Traceback (most recent call last)")
        last = [line for line in trace.splitlines() if line.strip()][-1].strip()
        return f"{before.strip().rstrip(':')}: {last}"
    if isinstance(error, KeyError | AttributeError):
        return _unknown_field(message, argv)
    cause = error.__cause__ or error.__context__
    if cause is not None and str(cause).strip() and str(cause).strip() not in message:
        message += f" ({str(cause).strip()})"
    return message


def _unknown_field(message: str, argv: list[str] | None) -> str:
    """One line for a ``--config.`` override naming no field of the config, with ml_collections' suggestion (its
    message arrives quoted and escaped, e.g. ``'\\'datadir\\'\\nDid you mean "data_dir" ...'``)."""
    text = message.replace("\\'", "'").replace("\\n", "\n")
    name = re.search(r"[A-Za-z_][\w-]*", text)
    field = name.group(0) if name else text
    paths = [arg.split("=", 1)[0].split(".") for arg in argv or () if arg.startswith("--config.")]
    overrides = [".".join(path[:path.index(field) + 1]) for path in paths if field in path[1:]]
    where = overrides[0] if overrides else field
    suggestion = re.search(r'Did you mean "([\w-]+)"', text)
    hint = (f"; did you mean {where.rsplit('.', 1)[0]}.{suggestion.group(1)}?" if suggestion and overrides
            else f"; did you mean {suggestion.group(1)!r}?" if suggestion else "")
    return (f"{where}: the config has no field {field!r}{hint} (--config.<field> overrides must name a field of "
            "the config file)")


def _quiet_orbax(record: Any) -> bool:
    """Drops orbax's log records (errors of its save threads, with tracebacks): the error they log reaches the
    command, which reports it in one line."""
    return f"{os.sep}orbax{os.sep}" not in record.pathname


def _ignore_unraisable(unraisable: Any) -> None:
    """Errors Python can only ignore (tensorstore's callbacks into orbax's closed event loops after a failed save,
    "Event loop is closed"): silent in commands, whose failure is reported in one line."""
    del unraisable


def _quiet_libraries() -> None:
    """Library logs at ERROR only; without ``--verbosity=1``, none of the tracebacks orbax, asyncio and tensorstore
    print when a save fails (the error reaches the command, which reports it in one line)."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)
    if not _show_tracebacks():
        logging.get_absl_logger().addFilter(_quiet_orbax)
        std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)  # "Task exception was never retrieved"
        sys.unraisablehook = _ignore_unraisable


def run_reporting_errors(fn: Callable[[], Any]) -> Any:
    """Calls ``fn``: a stop saved after SIGTERM or SIGINT exits 143 or 130 with its line; a ValueError or OSError (bad input, something
    missing) prints one ``error:`` line and exits 2, as does a full disk or exhausted memory (`resource_error`, after
    removing the temporary files the process left); any other exception is a bug: one line asking for a report,
    exit 1 (with ``--verbosity=1`` the traceback instead)."""
    _quiet_libraries()
    try:
        return fn()
    except Preempted as stop:
        print(str(stop), file=sys.stderr, flush=True)
        sys.exit(128 + (stop.signal_number or signal.SIGTERM))
    except Exception as error:  # noqa: BLE001 - one line unless the traceback is asked for
        if _show_tracebacks():
            raise
        _report_resource_error(error)  # the one handler for disk and memory errors
        if isinstance(error, EXPECTED_ERRORS):
            fail(_describe(error))
        fail(f"internal error {type(error).__name__}: {_describe(error)}; please report it with the traceback "
             f"(rerun with --verbosity=1 or {TRACEBACK_ENV}=1)", EXIT_BUG)


def use_cpu_settings(config: Any = None) -> None:
    """The project's CPU settings (selectivity_jax/cpu: oneDNN convolutions, heap, an XLA:CPU flag), applied by a
    command at its start, before JAX computes anything: its config's ``cpu_tuning`` (``'auto'`` without a config or
    the field). Process-wide settings belong to the commands; importing the library changes nothing."""
    from selectivity_jax import cpu

    cpu.use_config(config) if config is not None else cpu.use("auto")


def run(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
    """``absl.app.run(main)`` with `_parse_flags` (``argv``: default ``sys.argv``); a SIGTERM outside the training
    loop (start-up, evaluation, writing results) ends the process with one line and exit 143 (`_exit_on_signal`)."""
    app.run(main, argv=argv, flags_parser=_parse_flags)


def no_extra_arguments(argv: list[str]) -> None:
    """Raises for positional arguments, which no command takes (a typo such as a missing ``--``)."""
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])} (flags start with --)")
