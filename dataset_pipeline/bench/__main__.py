"""Entry point of `python -m dataset_pipeline.bench`; spawned workers re-import this module, so it stays tiny."""

import sys

from dataset_pipeline.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
