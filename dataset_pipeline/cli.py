"""The `dataset-pipeline` command: run the UI, run the demo, submit uploads, list datasets, fetch exports."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3


def _cmd_dev(args: argparse.Namespace) -> int:
    from dataset_pipeline.devserver import run_dev

    return run_dev(host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataset-pipeline",
        description="Prepare object-detection datasets (YOLO, COCO, Pascal VOC) with Dagster and PostgreSQL.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="start PostgreSQL (embedded unless DATABASE_URL) and the Dagster UI")
    dev.add_argument("--host", default=os.environ.get("DAGSTER_HOST", "127.0.0.1"))
    dev.add_argument("--port", type=int, default=int(os.environ.get("DAGSTER_PORT", "3000")))
    dev.set_defaults(handler=_cmd_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
