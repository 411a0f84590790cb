"""``python -m robocds.train fit --config ...``: the ``robocds`` command.

The thread defaults of ``robocds.threads`` are applied before the CLI (and with it torch) is imported:
OpenMP reads them once, when it loads.
"""

from __future__ import annotations

from collections.abc import Sequence

from robocds.errors import run_cli
from robocds.threads import use_thread_defaults


def main(argv: Sequence[str] | None = None) -> None:
    """``robocds.train.cli.main``, imported on first use (after the thread defaults)."""
    from robocds.train.cli import main as train_main

    train_main(argv)


def cli() -> None:
    """Console-script entry point (``robocds``): thread defaults, then the CLI; user errors end in one line."""
    use_thread_defaults()
    from robocds.train.cli import PROG

    run_cli(main, PROG)


if __name__ == "__main__":
    cli()
