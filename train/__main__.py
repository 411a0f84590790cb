"""``python -m robocds.train fit --config ...``: the ``robocds`` command."""

from robocds.train.cli import main

if __name__ == "__main__":
    main()
