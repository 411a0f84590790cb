"""``python -m robocds.train fit --config ...``: the ``robocds`` command.

The thread defaults of ``robocds.threads`` are applied before the CLI (and with it torch) is imported:
OpenMP reads them once, when it loads.
"""

from robocds.threads import use_thread_defaults


def cli() -> None:
    use_thread_defaults()
    from robocds.train.cli import cli as run

    run()


if __name__ == "__main__":
    cli()
