"""Jobs: selections of the asset graph."""

import dagster as dg

from dataset_pipeline.assets.ingest import raw_upload
from dataset_pipeline.assets.labels import labels
from dataset_pipeline.assets.validation import validated_dataset

#: Everything from the upload to the export zips: what the inbox sensor runs for each new dataset.
process_dataset_job = dg.define_asset_job(
    "process_dataset",
    selection=dg.AssetSelection.assets(raw_upload).downstream(),
    description="Ingest, validate, analyse, augment, split and export one dataset.",
)

#: Validation alone, for the nightly schedule: an unchanged dataset writes nothing, a changed one becomes a new
#: version, and what depends on it re-runs by automation.
revalidate_dataset_job = dg.define_asset_job(
    "revalidate_dataset",
    selection=dg.AssetSelection.assets(validated_dataset),
    description="Check each image of a dataset's newest version against what was recorded; a change "
    "becomes a new version, an unchanged dataset writes nothing.",
)


#: The old POST /label: `labels` materialised with edits in its config makes a new version of the dataset;
#: automation then re-runs the stages after it for that dataset.
#: What the launchpad opens with: one edit of each kind, to be changed to the dataset's own class names.
EDIT_LABELS_EXAMPLE = {
    "ops": {
        "labels": {
            "config": {
                "edited_by": "your-name",
                "edits": [
                    {"operation": "rename_class", "class_name": "person", "new_name": "pedestrian"},
                    {"operation": "merge_classes", "sources": ["car", "truck"], "into": "vehicle"},
                    {"operation": "delete_class", "class_name": "dog"},
                    {"operation": "remap_class_ids", "mapping": {"0": 1, "1": 0}},
                    {
                        "operation": "replace_boxes",
                        "image": "images/train/img_000003.jpg",
                        "boxes": [
                            {"class_name": "vehicle", "x_min": 10, "y_min": 20, "x_max": 110, "y_max": 90}
                        ],
                    },
                ],
            }
        }
    }
}

edit_labels_job = dg.define_asset_job(
    "edit_labels",
    selection=dg.AssetSelection.assets(labels),
    config=EDIT_LABELS_EXAMPLE,
    description="""Edit one dataset's labels as a new version with an audit trail; the stages after it then \
re-run by themselves. Choose the dataset's partition, then keep the edits you need from the example (they apply \
in order, all or nothing; an edit naming a class the dataset does not have fails the run and changes nothing):

- `rename_class`: `class_name` becomes `new_name`.
- `merge_classes`: every class in `sources` becomes `into` (an existing class or a new one).
- `delete_class`: `class_name` and all its boxes go.
- `remap_class_ids`: the class ids are renumbered one to one, `{"old": new}`; each class keeps its name and boxes.
- `replace_boxes`: all boxes of `image` (its path inside the dataset) become `boxes`, corners in pixels of the \
upright image.
""",
)
