"""`python -m dataset_pipeline.bench`: the seven assets on a synthetic dataset, each beside a plain baseline.

Kept import-free on purpose: spawned pool workers import this package to reach `baselines`, and must not pay
for Dagster. The entry points are `runner.run_bench` (one N, used by the test) and `cli.main` (the Makefile).
"""
