"""The CLI's verbs, one module each with ``register(subparsers)``, and the words they share.

One vocabulary (tests/test_cli.py walks the parser and holds it): an argument that
:func:`tuitune.sources.resolve` reads is ``MODEL_OR_RUN`` everywhere, with the forms below in
its verb's help; ``--force`` replaces an existing output and keeps the old one beside it
(:func:`tuitune.fsutil.kept_aside`). Light: argparse-level text only.
"""

from __future__ import annotations

import argparse
import sys

#: The metavar of every argument the one resolver (tuitune/sources.py) reads.
MODEL_OR_RUN = "MODEL_OR_RUN"

MODEL_OR_RUN_HELP = "a model or adapter folder, a run id, RUN:checkpoint-N or RUN:base (the forms below)"

MODEL_OR_RUN_FORMS = """\
MODEL_OR_RUN is one of:
  models/qwen2-0.5b           a model folder (config.json): base, merged or fully fine-tuned
  runs/RUN/adapter            an adapter folder (adapter_config.json), on the base of its run,
                              else on its adapter_config.json's base_model_name_or_path
  RUN                         a run id (or a unique part of it): its final adapter on the base model
                              of its config.yaml; a run still training: its latest checkpoint
  RUN:checkpoint-N, RUN:N     that checkpoint of the run
  RUN:base                    the run's base model alone
  org/name                    a hub id (downloaded by transformers if not cached)
"""


def model_or_run_forms(hub: bool = True) -> str:
    """:data:`MODEL_OR_RUN_FORMS` for a verb's epilog; ``hub=False`` where only local folders will do."""
    if hub:
        return MODEL_OR_RUN_FORMS
    rows = MODEL_OR_RUN_FORMS.splitlines(keepends=True)
    return "".join(r for r in rows if not r.lstrip().startswith("org/name")) + \
        "  (a hub id: download the model first; only a local folder is read)\n"


class FormsHelpFormatter(argparse.HelpFormatter):
    """A paragraph is wrapped to the terminal; a text with line breaks (the forms above) stays as written."""

    def _fill_text(self, text, width, indent):
        if "\n" in text.strip("\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def replacing(args, *outputs):
    """``--force`` as every verb does it: ``with replacing(args, OUT): write OUT``. What an existing
    OUT held is kept as OUT.replaced-<time>, said on stdout (stderr under ``--json``)."""
    from tuitune.fsutil import kept_aside

    stream = sys.stderr if getattr(args, "json", False) else sys.stdout
    return kept_aside(*outputs, force=bool(getattr(args, "force", False)),
                      note=lambda line: print(line, file=stream, flush=True))
