"""`tfrobust` entry point: dispatches to subcommands."""

import os
import sys
import tempfile


def build_parser():
    from tfrobust.cli import evaluate, export, train, tune
    from tfrobust.cli.arguments import Parser

    parser = Parser(
        prog="tfrobust",
        description="Train and evaluate adversarially robust image classifiers.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in (train, evaluate, export, tune):
        command.add_parser(sub).add_argument(
            "--verbose", action="store_true",
            help="show TensorFlow's own start-up and log lines (hidden by default)")
    return parser


def _start_tensorflow(verbose):
    """Import TensorFlow and every tfrobust module, quietly unless `verbose`.

    TensorFlow's C++ start-up lines (oneDNN notices, "Could not find cuda drivers",
    and on a machine without a GPU an `E0000 ... failed call to cuInit` that reads
    like a failure) are written to file descriptor 2 by absl before any log level
    applies, so they are caught there while TensorFlow is imported, and shown only
    if that fails; later ones are below `TF_CPP_MIN_LOG_LEVEL=3`.
    """
    import tfrobust

    if verbose:
        tfrobust.load()
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            # Importing only: devices must come up later, where the command configures them
            # (collective ops for multi-worker training must be set before that). Their
            # start-up error line (cuInit) is hidden by TF_CPP_MIN_LOG_LEVEL=3.
            tfrobust.load()
        except BaseException:
            os.dup2(saved, 2)
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def main(argv=None):
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # an unknown option belongs to the subcommand: its usage, and a suggestion
        commands = parser._subparsers._group_actions[0].choices if parser._subparsers else {}
        (commands.get(args.command) or parser).unknown(extras)
    if args.version:
        from tfrobust.version import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    _start_tensorflow(args.verbose)
    try:
        return args.run(args) or 0
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        if os.environ.get("TFROBUST_DEBUG"):
            raise
        print(f"tfrobust {args.command}: error: {error}", file=sys.stderr)
        return 1
    except PermissionError as error:  # e.g. a read-only --output, --report or OUTDIR
        if os.environ.get("TFROBUST_DEBUG"):
            raise
        print(f"tfrobust {args.command}: error: Expected a place this user may write. "
              f"Received: {error.filename!r} ({error.strerror})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
