"""The ``heartbeat`` command: small tools beside the twistd services."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from heartbeat import __version__

__all__ = ["main"]


def _passwd(args: argparse.Namespace) -> int:
    from heartbeat.passwords import hash_password  # noqa: PLC0415 - only this command

    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass(f"Password for {args.name}: ")
            again = getpass.getpass("Again: ")
        except (EOFError, KeyboardInterrupt):
            sys.stderr.write("\nheartbeat passwd: cancelled\n")
            return 1
        if password != again:
            sys.stderr.write("heartbeat passwd: the passwords differ; nothing written\n")
            return 1
    if not password:
        sys.stderr.write("heartbeat passwd: empty password refused\n")
        return 1
    sys.stderr.write(f"Paste under users.{args.name} in the server config:\n")
    sys.stdout.write(f"password: {hash_password(password)}\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heartbeat", description="Tools beside the heartbeat server and agent.")
    parser.add_argument("--version", action="version", version=f"heartbeat {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    passwd = commands.add_parser(
        "passwd", help="hash a password for users.NAME.password in the server config")
    passwd.add_argument("name", help="the user the password is for (shown in the prompt)")
    passwd.add_argument("--stdin", action="store_true",
                        help="read the password from the first line of standard input")
    passwd.set_defaults(run=_passwd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
