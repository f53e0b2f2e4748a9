"""Exported images keep their own file names; only a clash renames one, the same way every time."""

from __future__ import annotations

import hashlib

from dataset_pipeline.domain.export_names import AugmentedCopy, export_names


def _tag(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:8]


def test_names_are_kept_without_their_folders():
    names = export_names({"train/images/a.jpg": ".jpg", "valid/images/b.png": ".png", "c.jpeg": ".jpeg"})
    assert names == {"train/images/a.jpg": "a.jpg", "valid/images/b.png": "b.png", "c.jpeg": "c.jpeg"}


def test_two_images_with_one_name_rename_the_later_path_by_a_hash_of_its_path():
    names = export_names({"valid/img.jpg": ".jpg", "train/img.jpg": ".jpg"})
    assert names["train/img.jpg"] == "img.jpg"  # the path that sorts first keeps the name
    assert names["valid/img.jpg"] == f"img-{_tag('valid/img.jpg')}.jpg"
    # the same input in any order gives the same names
    assert export_names({"train/img.jpg": ".jpg", "valid/img.jpg": ".jpg"}) == names


def test_stems_clash_ignoring_case_and_suffix_since_label_files_are_named_by_stem():
    names = export_names({"a/Cat.JPG": ".JPG", "b/cat.png": ".png"})
    assert names["a/Cat.JPG"] == "Cat.JPG"
    assert names["b/cat.png"] == f"cat-{_tag('b/cat.png')}.png"


def test_a_re_encoded_original_takes_the_suffix_of_its_bytes():
    assert export_names({"scans/page.tif": ".jpg"}) == {"scans/page.tif": "page.jpg"}


def test_augmented_copies_are_named_after_their_source_and_never_take_an_original_name():
    originals = {"train/img.jpg": ".jpg", "valid/img.jpg": ".jpg", "x/img_aug1.jpg": ".jpg"}
    copies = [
        AugmentedCopy("img__aug1.jpg", "train/img.jpg", 1),
        AugmentedCopy("valid__img__aug1.jpg", "valid/img.jpg", 1),
    ]
    names = export_names(originals, copies)
    assert names["x/img_aug1.jpg"] == "img_aug1.jpg"  # an original keeps its name, even one like this
    assert names["img__aug1.jpg"] == f"img_aug1-{_tag('img__aug1.jpg')}.jpg"
    renamed_source = names["valid/img.jpg"].removesuffix(".jpg")
    assert names["valid__img__aug1.jpg"] == f"{renamed_source}_aug1.jpg"
    assert len({name.casefold() for name in names.values()}) == len(names)
