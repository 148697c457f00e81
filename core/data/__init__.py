"""Datasets for the training engine: upload loaders, converted storage, built-ins.

load_upload(path, name=..., format=None, ...) -> Dataset   # csv | npz | image_zip
save_converted(dataset, directory); open_converted(directory) -> Dataset
load_builtin(name) -> Dataset; list_builtins() -> list[DatasetInfo]
"""

from core.data.builtin import BUILDERS, list_builtins, load_builtin
from core.data.dataset import Dataset, DatasetInfo, Task
from core.data.limits import DEFAULT_LIMITS, Limits, LoadRequest
from core.data.storage import open_converted, save_converted
from core.data.upload import LOADERS, infer_format, load_upload

__all__ = [
    "BUILDERS",
    "DEFAULT_LIMITS",
    "LOADERS",
    "Dataset",
    "DatasetInfo",
    "Limits",
    "LoadRequest",
    "Task",
    "infer_format",
    "list_builtins",
    "load_builtin",
    "load_upload",
    "open_converted",
    "save_converted",
]
