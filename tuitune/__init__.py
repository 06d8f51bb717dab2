"""tuitune: fine-tune an LLM on a remote GPU box from the terminal.

This package is the headless engine and the CLI. It never imports textual, and
importing it (or ``tuitune.cli``) never imports torch, transformers, peft or
datasets: those load inside the functions that need them.
"""

__version__ = "0.1.0"
