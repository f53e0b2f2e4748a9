import dagster as dg

from dataset_pipeline import definitions


def test_definitions_load():
    dg.Definitions.validate_loadable(definitions.defs)
