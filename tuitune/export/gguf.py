"""``--format gguf``: one ``.gguf`` file, written by llama.cpp's converter and read back."""

from __future__ import annotations

from tuitune.export.registry import ExportFormat, Written


def write(job) -> Written:
    path = job.gguf(job.tmp / job.out.name)
    return Written(path=path, gguf=path, command=f"llama-cli -m {job.out} -cnv")


FORMAT = ExportFormat(name="gguf", label="GGUF", kind="file", output="{stem}-{outtype}.gguf",
                      description="one .gguf file for llama.cpp", write=write)
