"""`tfrobust` entry point: dispatches to subcommands."""

import os
import sys


def build_parser():
    from tfrobust.cli import evaluate, export, train, tune
    from tfrobust.cli.arguments import Parser

    parser = Parser(
        prog="tfrobust",
        description="Train and evaluate adversarially robust image classifiers.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    export.add_parser(sub)
    tune.add_parser(sub)
    return parser


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
    try:
        return args.run(args) or 0
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        if os.environ.get("TFROBUST_DEBUG"):
            raise
        print(f"tfrobust {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
