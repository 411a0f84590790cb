"""``python -m robocds.train fit --config ...``: the ``robocds`` command."""

from robocds.train.cli import cli

if __name__ == "__main__":
    cli()
