"""``mlops-assets``: thin command-line entry points.

The parser is built here; each command is a module of :mod:`mlops_assets.commands`, imported only when that
command runs, so the light commands (``rollback``, ``status``) start fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

# command -> (module under mlops_assets.commands, help). Each module has ``main(args) -> exit code`` and a typed
# function doing the work; only the chosen command's module is imported.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "materialize the whole graph over all partitions, gate, deploy"),
    "replay": ("replay", "backtest the retraining policy over the partitions"),
    "check-report": ("check_report", "every asset check result; exit 1 if a blocking one failed"),
    "serve": ("serve", "HTTP prediction service on the champion"),
    "rollback": ("rollback", "move the champion back to the previous (or given) version"),
    "status": ("status", "champion, deployment history, latest checks, pending triggers"),
    "repair": ("repair", "move unreadable stored partitions aside and rebuild them from the source"),
    "history": ("history", "every champion move: who, why, the gate record relied on, alerts sent"),
    "reproduce": (
        "reproduce",
        "rebuild a registered version from what it recorded; compare it with the original",
    ),
    "gc": ("gc", "remove the offline store's snapshots that no version to keep needs"),
    "approve": ("approval", "approve a challenger awaiting approval: it becomes champion through the gates"),
    "reject": ("approval", "reject a challenger awaiting approval: the champion is untouched"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops-assets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmds = {}
    for name, (_, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "--config", default=None, help="mlops.yaml (default: $MLOPS_CONFIG, else the bundled one)"
        )
        cmds[name] = p
    cmds["run"].add_argument("--report", default=None, help="write the report JSON here")
    cmds["run"].add_argument(
        "--no-progress", action="store_true", help="no progress (a bar on a terminal, plain lines otherwise)"
    )
    cmds["run"].add_argument(
        "--verbose", action="store_true", help="print Dagster's own log (events, stack traces) on stderr"
    )
    cmds["run"].add_argument(
        "--force",
        action="store_true",
        help="retrain even when the data and recipe are unchanged (still through the gates)",
    )
    cmds["replay"].add_argument("--report", default=None, help="write the report JSON here")
    cmds["replay"].add_argument("--plot", default=None, help="write a PNG of the metric over time here")
    cmds["check-report"].add_argument("--junit", default=None, help="write JUnit XML here")
    cmds["check-report"].add_argument("--markdown", default=None, help="write Markdown here")
    cmds["serve"].add_argument("--host", default="127.0.0.1")
    cmds["serve"].add_argument("--port", type=int, default=8000)
    cmds["serve"].add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port, each with its own service on the champion (default 1)",
    )
    cmds["serve"].add_argument(
        "--insecure-local",
        action="store_true",
        help="no authentication (loopback addresses only); otherwise tokens come from MLOPS_SERVE_TOKENS, "
        "or are generated and printed once",
    )
    cmds["serve"].add_argument(
        "--tls-cert", "--certfile", dest="tls_cert", default=None, help="PEM certificate: serve HTTPS"
    )
    cmds["serve"].add_argument("--tls-key", "--keyfile", dest="tls_key", default=None, help="PEM private key")
    cmds["serve"].add_argument(
        "--allowed-host",
        action="append",
        default=None,
        help="a name clients use for this service (repeatable); requests with another Host header get 421 "
        "(default: any with tokens; localhost, 127.0.0.1, ::1 with --insecure-local)",
    )
    cmds["rollback"].add_argument("--to", default=None, help="registered model version to make champion")
    cmds["rollback"].add_argument(
        "--reason", default=None, help="why (recorded; required with --override-gates, default 'rollback')"
    )
    cmds["rollback"].add_argument("--by", default=None, help="who rolls back (default: your login name)")
    cmds["rollback"].add_argument(
        "--override-gates",
        "--override",
        dest="override_gates",
        action="store_true",
        help="force a version without a passing gate record (needs --reason; recorded and alerted)",
    )
    cmds["history"].add_argument("--json", action="store_true", help="machine-readable output")
    cmds["history"].add_argument("--limit", type=int, default=None, help="only the newest N moves")
    for name in ("approve", "reject"):
        cmds[name].add_argument("version", help="the challenger version awaiting approval")
        cmds[name].add_argument("--by", required=True, help="who decides (recorded)")
        cmds[name].add_argument("--reason", default=None, help="why (recorded)")
    cmds["reproduce"].add_argument("version", help="the registered model version to rebuild")
    cmds["reproduce"].add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless the rebuilt model is identical to the registered one",
    )
    cmds["reproduce"].add_argument("--json", action="store_true", help="machine-readable output")
    cmds["gc"].add_argument(
        "--dry-run", action="store_true", help="list what would be removed; remove nothing"
    )
    cmds["status"].add_argument("--json", action="store_true", help="machine-readable output")
    cmds["repair"].add_argument(
        "--partition",
        action="append",
        default=[],
        metavar="KEY",
        help="rebuild this partition too, readable or not (repeatable)",
    )
    cmds["repair"].add_argument(
        "--dry-run", action="store_true", help="report the damaged files and what would be rebuilt"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, _ = COMMANDS[args.command]
    from mlops_assets.commands.context import NoStateError
    from mlops_assets.config import ConfigError

    try:
        command = importlib.import_module(f"mlops_assets.commands.{module}")
        return int(command.main(args))
    except ConfigError as err:
        print(f"mlops-assets {args.command}: configuration error: {err}", file=sys.stderr)
        return 2
    except NoStateError as err:
        print(f"mlops-assets {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        line = infrastructure_error(err)
        if line is None:
            raise
        print(f"mlops-assets {args.command}: {line}", file=sys.stderr)
        return 1


# Infrastructure failures a user fixes outside the project (a full disk, a permission, a database down): one line
# naming the file or the store and the cause, instead of a traceback through the stack that met it.
_FILE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
_DATABASE_ERRORS = {
    ("sqlite3", "OperationalError"),
    ("psycopg", "OperationalError"),
    ("psycopg.errors", "OperationalError"),
    ("sqlalchemy.exc", "OperationalError"),
}


def infrastructure_error(err: BaseException) -> str | None:
    """One line for an infrastructure error anywhere in ``err``'s chain (None for anything else)."""
    from mlops_assets.registry.reachability import one_line

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FILE_ERRNOS:
            where = f"{seen.filename}: " if seen.filename else ""
            return f"cannot write or read {where}{seen.strerror or seen}"
        if any((c.__module__, c.__name__) in _DATABASE_ERRORS for c in type(seen).__mro__):
            # SQLAlchemy's message carries the statement and a link after the driver's own words.
            cause = one_line(str(getattr(seen, "orig", None) or seen).split("\n[SQL:")[0])
            return f"a database cannot be reached or used: {cause}"
        seen = seen.__cause__ or seen.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
