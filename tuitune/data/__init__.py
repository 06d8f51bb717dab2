"""Data: readers (xlsx, csv, json, jsonl, txt), format mappers to conversations,
validation, the train/test split and the self-cognition generator.

Light to import: openpyxl and friends load inside the functions that need them.
"""

from tuitune.data.convert import MEDQA_SYSTEM, PRESETS, Report, convert, preview
from tuitune.data.formats import FORMAT_NAMES, Detection, detect_format
from tuitune.data.io import iter_records, load_records, write_records
from tuitune.data.selfcog import generate as self_cognition, write_self_cognition
from tuitune.data.split import SplitResult, split_file, split_records

__all__ = [
    "MEDQA_SYSTEM", "PRESETS", "Report", "convert", "preview", "FORMAT_NAMES", "Detection", "detect_format",
    "iter_records", "load_records", "write_records", "self_cognition", "write_self_cognition",
    "SplitResult", "split_file", "split_records",
]
