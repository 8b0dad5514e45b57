"""The ``pancdiff`` command: subcommands, progress mode, and errors turned into exit codes.

Each subcommand lives in ``pancdiff/commands/<name>.py`` and exposes ``add_arguments(parser)`` and
``run(args, reporter) -> int``. Only the chosen subcommand's module is imported, so ``--help`` is
quick and one command's missing dependency never breaks another. A command may put a JSON-ready
dict in ``args.result``; it is added to the final ``{"event": "done", ...}`` line in json mode.

Exit codes (also what the Slicer module reads):
    0 done, 1 internal error (a bug: traceback printed), 2 bad input, 3 missing dependency or
    weights, 130 cancelled (Ctrl-C or SIGTERM; outputs rolled back).
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time
import warnings
from collections.abc import Sequence

from . import __version__
from .errors import Cancelled, DependencyError, InputError, PancDiffError
from .progress import Reporter

EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_DEPENDENCY, EXIT_CANCELLED = 0, 1, 2, 3, 130

# name -> one line for ``pancdiff --help``; the module's docstring is the subcommand's description.
COMMANDS: dict[str, str] = {
    "detect": "find pancreatic tumors in one CT or a cohort: heatmap, candidates, report",
    "pancreas": "find the pancreas with TotalSegmentator and write it as a mask (the Slicer module's first step)",
    "demo": "run detection on the bundled sample CT, as is and with a simulated lesion",
    "evaluate": "measure the classifier and the maps on a labelled dataset",
    "train": "train the diffusion model or the noisy classifier",
    "benchmark": "time the fast detection against the paper-exact one and compare their maps",
    "phantom": "write synthetic abdominal CT phantoms (MSD layout) for tests and tutorials",
    "doctor": "print versions, devices, TotalSegmentator and bundled models (for bug reports)",
}

EPILOG = """\
examples:
  pancdiff demo --out out/demo                  # the whole path on the bundled sample CT
  pancdiff detect ct.nii.gz --out results       # pancreas by TotalSegmentator, then detection
  pancdiff detect ct.nii.gz --pancreas-mask pancreas.nii.gz --out results --markers tumor.mrk.json
  pancdiff detect cohort.csv --out cohort --shard 2/8   # the 2nd of 8 job-array tasks
  pancdiff doctor                               # what to paste into a bug report

exit codes: 0 done, 2 bad input, 3 missing dependency or weights, 130 cancelled.
Run 'pancdiff COMMAND --help' for a command's options.
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s own options are loaded (its module is imported)."""
    common = _Parser(add_help=False)
    _add_global_options(common, default=argparse.SUPPRESS)
    parser = _Parser(
        prog="pancdiff",
        description="PancDiff: weakly supervised pancreatic tumor detection in CT with classifier-guided "
        "diffusion models. Research software, not for diagnosis.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pancdiff {__version__}")
    _add_global_options(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, summary in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=summary, parents=[common])
            continue
        module = _load_command(name)
        p = sub.add_parser(
            name,
            help=summary,
            parents=[common],
            description=(module.__doc__ or summary) if module else summary,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if module is not None:
            module.add_arguments(p)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, default) -> None:
    # Accepted before and after the command; SUPPRESS on the subcommand keeps a value given first.
    parser.add_argument(
        "--progress", choices=("bar", "json", "quiet"), default=default,
        help="progress as bars on stderr (default), JSON lines on stdout (for programs), or none",
    )  # fmt: skip
    parser.add_argument("--quiet", "-q", action="store_true", default=default, help="no progress, only errors")


def _load_command(name: str):
    """The command's module, or None where it is not part of this build (yet)."""
    module_name = f"{__package__}.commands.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise DependencyError(f"pancdiff {name} needs the Python package {exc.name!r}; install it with pip") from None


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand's name: the first token that is neither an option nor an option's value."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token == "--progress":
            skip = True
        elif not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pancdiff`` with ``argv`` (default: the process's arguments); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    json_mode = _wants_json(argv)
    start = time.monotonic()
    try:
        if command is not None and _load_command(command) is None:
            raise DependencyError(f"'pancdiff {command}' is not available in this version")
        parser = build_parser(command)
        args = parser.parse_args(argv)
    except PancDiffError as exc:
        return _fail(exc.exit_code, str(exc), json_mode)
    if args.command is None:
        parser.print_help()
        return EXIT_INPUT
    mode = "quiet" if args.quiet else (args.progress or "bar")
    reporter = Reporter(mode)

    _quiet_third_party_warnings()
    previous = _install_sigterm_handler()
    try:
        code = _load_command(args.command).run(args, reporter)
    except KeyboardInterrupt:
        return _fail(EXIT_CANCELLED, "cancelled; nothing was written", mode == "json")
    except Cancelled as exc:
        return _fail(exc.exit_code, str(exc) or "cancelled; nothing was written", mode == "json")
    except PancDiffError as exc:
        return _fail(exc.exit_code, str(exc), mode == "json")
    except Exception as exc:  # a bug: say so in json mode, then let the traceback show
        if mode == "json":
            reporter.event("error", message=f"internal error: {type(exc).__name__}: {exc}", exit_code=EXIT_BUG)
        raise
    finally:
        _restore_sigterm_handler(previous)
    if mode == "json":
        reporter.event(
            "done", command=args.command, exit_code=code, elapsed_s=round(time.monotonic() - start, 2),
            **(getattr(args, "result", None) or {}),
        )  # fmt: skip
    return code


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and a JSON line in json mode), exit 2."""

    def error(self, message: str):  # type: ignore[override]
        raise InputError(f"{message} (see '{self.prog} --help')")


def _fail(code: int, message: str, json_mode: bool) -> int:
    """ONE line on stderr (and one JSON line on stdout in json mode), no traceback."""
    message = " ".join(str(message).split())  # a user-facing error is one line, whatever it quoted
    if json_mode:
        print(json.dumps({"event": "error", "message": message, "exit_code": code}), flush=True)
    print(f"pancdiff: error: {message}", file=sys.stderr, flush=True)
    return code


def _wants_json(argv: Sequence[str]) -> bool:
    argv = list(argv)
    # zip(argv, argv[1:]) rather than itertools.pairwise: the engine runs on Python 3.9 (Slicer 5.8).
    return "--progress=json" in argv or any(pair == ("--progress", "json") for pair in zip(argv, argv[1:]))


def _quiet_third_party_warnings() -> None:
    """Library chatter on stderr would bury the one line a user must read.

    ITK prints C++ warnings (e.g. "No Series were found" for a folder without DICOM) straight to
    stderr; the same condition already reaches the user as a PancDiffError with a clear message.
    """
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    if not sys.warnoptions:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|monai|SimpleITK|totalsegmentator)")


def _on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # same path as Ctrl-C: roll back outputs, exit 130


def _install_sigterm_handler():
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (e.g. called from a GUI worker): leave signals alone
        return None


def _restore_sigterm_handler(previous) -> None:
    if previous is not None:
        try:
            signal.signal(signal.SIGTERM, previous)
        except ValueError:
            pass


if __name__ == "__main__":
    sys.exit(main())
