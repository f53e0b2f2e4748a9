import dagster as dg

from dataset_pipeline import definitions, jobs


def test_definitions_load():
    dg.Definitions.validate_loadable(definitions.defs)


def test_edit_labels_launchpad_opens_with_an_example_that_runs() -> None:
    """The launchpad of `edit_labels` starts from the job's config for the chosen partition: it must be valid
    config, show every operation, and apply as given to a dataset that has the classes it names."""
    from dataset_pipeline.assets.labels import LabelsConfig
    from dataset_pipeline.domain.label_edits import OPERATIONS, ImageLabels, LabelSet, apply_edits
    from dataset_pipeline.domain.model import Box

    job = definitions.defs.resolve_job_def("edit_labels")
    run_config = job.partitioned_config.get_run_config_for_partition_key("alice-traffic-trucks")
    assert run_config == jobs.EDIT_LABELS_EXAMPLE
    dg.validate_run_config(job, run_config)  # raises on invalid config: no red launchpad

    config = LabelsConfig(**run_config["ops"]["labels"]["config"])
    assert sorted({edit.operation for edit in config.edits}) == sorted(OPERATIONS)
    assert all(f"`{operation}`" in job.description for operation in OPERATIONS)

    dataset = LabelSet(
        ["person", "car", "truck", "dog"],
        {
            "images/train/img_000003.jpg": ImageLabels(200, 100, [Box(0, 1, 1, 9, 9), Box(3, 5, 5, 20, 20)]),
            "images/train/img_000004.jpg": ImageLabels(200, 100, [Box(1, 1, 1, 9, 9), Box(2, 2, 2, 8, 8)]),
        },
    )
    edited, effects = apply_edits(dataset, [edit.to_edit() for edit in config.edits])
    assert len(effects) == len(config.edits)
    assert sorted(edited.class_names) == ["pedestrian", "vehicle"]
    [replaced] = edited.images["images/train/img_000003.jpg"].boxes
    assert (edited.class_names[replaced.class_index], replaced.x_min, replaced.x_max) == ("vehicle", 10, 110)


def test_every_stage_is_in_one_asset_group() -> None:
    """Several one-asset groups make the lineage page open with collapsed boxes instead of the chain."""
    groups = {spec.key.path[-1]: spec.group_name for spec in definitions.defs.resolve_all_asset_specs()}
    assert len(groups) == 7  # the whole lineage, raw_upload to dataset_export
    assert set(groups.values()) == {"dataset_pipeline"}
