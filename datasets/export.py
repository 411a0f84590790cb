"""``robocds-export <format> <root> --out DIR``: convert a robocds dataset for other offline-RL libraries.

    robocds-export minari data/tiny --out minari_datasets
    robocds-export minari data/benchmark --out minari_datasets --tasks lift-cube lift-block

Formats: ``minari`` (one Minari dataset per task; needs ``pip install 'robocds[minari]'``; see
``robocds.datasets.minari_export``). Bad input ends with one line, ``robocds-export: error: <what>:
<why>``, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from robocds.datasets.errors import DatasetError
from robocds.errors import INTERRUPTED_STATUS, ConfigError, run_cli

PROG = "robocds-export"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].split(": ", 1)[1])
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    minari = formats.add_parser(
        "minari",
        help="one Minari dataset per task (minari.load_dataset, recover_environment)",
        description="Export to Minari: <out> becomes a Minari datasets root (MINARI_DATASETS_PATH=<out>) holding "
        "<namespace>/<task>-v0 for every task. Rerun the same command after an interruption: finished tasks "
        "are kept, an unfinished one restarts.",
    )
    minari.add_argument("root", help="dataset folder (or URL) holding manifest.json")
    minari.add_argument("--out", required=True, help="Minari datasets root to write into (created if missing)")
    minari.add_argument("--tasks", nargs="+", help="tasks to export (default: every task of the dataset)")
    minari.add_argument("--namespace", help="Minari namespace of the dataset ids (default: robocds/<dataset name>)")
    minari.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from robocds.datasets.minari_export import export_minari

        results = export_minari(
            args.root, args.out, tasks=args.tasks, namespace=args.namespace, progress=not args.no_progress
        )
    except DatasetError:
        raise
    except (ValueError, ImportError) as err:
        raise ConfigError(str(err)) from None
    except OSError as err:  # --out not writable, a file where a folder should be, disk full ...
        raise ConfigError(f"{err.filename}: {err.strerror}" if err.filename else str(err)) from None
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished tasks are kept, rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED_STATUS
    for r in results:
        how = "kept (exported earlier from the same manifest)" if r.kept else "written"
        print(f"{r.dataset_id}: {r.episodes} episodes, {r.steps} steps, {how}: {r.path}")
    print(f"\nload with: MINARI_DATASETS_PATH={args.out} and minari.load_dataset({results[0].dataset_id!r})")
    return 0


def cli() -> None:
    """Console-script entry point (``robocds-export``)."""
    run_cli(main, "robocds-export")


if __name__ == "__main__":
    cli()
