"""The one partitions definition: each uploaded dataset is a partition of `datasets`, its versions the
partition's materialisation history."""

import warnings

import dagster as dg

dataset_partitions = dg.DynamicPartitionsDefinition(name="datasets")


def per_dataset_check(name: str, asset: str, description: str, *, blocking: bool = True) -> dg.AssetCheckSpec:
    """A check stored and answered per dataset partition, so one dataset's failed gate never holds back, or
    lets through, another's (blocking), and a warning is about its own dataset only. Partitioned checks are a
    preview feature of Dagster 1.13; its warning is silenced here, the one place that relies on it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, blocking=blocking, partitions_def=dataset_partitions, description=description
        )
