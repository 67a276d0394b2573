"""The ``kdmobile`` command line: parse arguments → public API → exit code.

    kdmobile --help
    kdmobile distill configs/mnist.toml --set train.epochs=3

Exit codes: 0 ok, 1 a check failed, 2 bad usage (bad config key, missing file, bad value).
Each subcommand lives in ``kdmobile/commands/<name>.py`` with ``register(subparsers)``; importing it
must stay light (argparse only) so ``kdmobile --help`` is instant. Heavy imports go inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kdmobile.errors import CheckFailed, KDMobileError, UsageError

# Order is the order shown in --help. Add a module here when its capability lands.
COMMANDS = ("demo", "distill", "compress", "export", "targets", "bench", "check", "baseline")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdmobile",
        description="Distil a large model into a small student, export it to phones and browsers, "
        "and prove it still works.",
    )
    from kdmobile import __version__

    parser.add_argument("--version", action="version", version=f"kdmobile {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"kdmobile.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 on bad usage
    try:
        rc = args.func(args)
    except UsageError as e:
        print(f"kdmobile {args.command}: error: {e}", file=sys.stderr)
        return 2
    except CheckFailed as e:
        print(f"kdmobile {args.command}: check failed: {e}", file=sys.stderr)
        return 1
    except KDMobileError as e:
        print(f"kdmobile {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"kdmobile {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
