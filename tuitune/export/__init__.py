"""Export: a run, adapter or model folder → a GGUF file (llama.cpp), an Ollama folder, or any format declared here.

Each format is one module in this package that declares itself (``FORMAT``, see
:mod:`tuitune.export.registry`): ``gguf.py``, ``ollama.py``. The steps they share (resolve the
source, merge a run or adapter first, publish with ``--force`` semantics, clean up on a failure)
are :mod:`tuitune.export.pipeline`; llama.cpp's converter and the GGUF read-back check are
:mod:`tuitune.export.llamacpp`. The CLI's ``--format``, the Merge screen's format choice and the
error for an unknown format list :data:`FORMATS`.

Light to import: nothing here loads torch or transformers until an export runs.
"""

from __future__ import annotations

from tuitune.export.llamacpp import LLAMA_CPP_PYTHON, OUTTYPES, check_gguf, find_converter
from tuitune.export.ollama import default_system_prompt, modelfile, ollama_modelfile, ollama_template
from tuitune.export.pipeline import ExportJob, ExportResult, export
from tuitune.export.registry import (DEFAULT_FORMAT, FORMATS, ExportFormat, Written, discover, format_for_output,
                                     get_format, register)

discover()   # every format module in this folder

__all__ = ["export", "find_converter", "check_gguf", "ollama_template", "default_system_prompt", "modelfile",
           "ollama_modelfile", "ExportResult", "ExportJob", "ExportFormat", "Written", "FORMATS", "DEFAULT_FORMAT",
           "OUTTYPES", "LLAMA_CPP_PYTHON", "register", "get_format", "format_for_output"]
