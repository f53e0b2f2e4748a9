"""The one partitions definition: each uploaded dataset (version) is a partition of `datasets`."""

import dagster as dg

dataset_partitions = dg.DynamicPartitionsDefinition(name="datasets")
