"""Benchmark registry, user data files and downloads."""

from mosr.data.files import column_values, read_records
from mosr.data.registry import (
    ALIASES,
    DATASETS,
    Sample,
    default_data_dir,
    expand_names,
    load_dataset,
    load_prompt_file,
    resolve_data_dir,
)

__all__ = [
    "ALIASES",
    "DATASETS",
    "Sample",
    "column_values",
    "default_data_dir",
    "expand_names",
    "load_dataset",
    "load_prompt_file",
    "read_records",
    "resolve_data_dir",
]
