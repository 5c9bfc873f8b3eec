"""Hugging Face datasets as sources (``hf:NAME``), for text and images alike.

``NAME`` is a dataset on the Hub (``hf:SetFit/20_newsgroups``, which needs internet) or a
folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read offline).
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "hf:"


class HubDatasetError(ValueError):
    """An ``hf:`` source that cannot be loaded (with the reason)."""


def load_hf_dataset(name: str, split: str):
    """The ``split`` of dataset ``name``: a saved folder if ``name`` is one, else from the Hub."""
    try:
        import datasets
    except ImportError as error:  # a dependency, but an environment may lack it
        raise HubDatasetError(f"reading hf:{name} needs the 'datasets' package: pip install datasets") from error
    if not name:
        raise HubDatasetError("hf: needs a dataset name or a saved dataset folder, e.g. hf:SetFit/20_newsgroups")
    if Path(name).is_dir():
        return _saved_split(datasets, Path(name), split)
    try:
        return datasets.load_dataset(name, split=split)
    except Exception as error:  # network, missing dataset, bad split: all fatal for this source
        raise HubDatasetError(f"cannot load hf:{name} split {split!r}: {error}") from error


def _saved_split(datasets, folder: Path, split: str):
    try:
        saved = datasets.load_from_disk(str(folder))
    except Exception as error:  # not a saved dataset, or a damaged one
        raise HubDatasetError(f"cannot load hf:{folder} as a saved dataset: {error}") from error
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise HubDatasetError(f"hf:{folder} has no split {split!r} (splits: {sorted(saved)})")
        return saved[split]
    return saved  # one split was saved: it is the dataset whatever split is asked for
