"""``tuitune config list | new --preset P -o FILE | check FILE | show FILE``.

Layer twin: ``screens/config.py`` is the same step's screen (one name, two layers).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    from tuitune.fsutil import force_help

    p = sub.add_parser("config", help="run configs: list presets, create, check, show",
                       description="A run config is one YAML file, checked by a schema and never executed. "
                       "Start from a preset, edit it (or use the Config screen), check it, train it.")
    verbs = p.add_subparsers(dest="config_verb", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])

    ls = verbs.add_parser("list", help="the presets", description="List the presets.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=run_list)

    new = verbs.add_parser("new", help="write a config from a preset",
                           description="Write a config file from a preset (every field, each described).")
    new.add_argument("--preset", required=True, metavar="NAME", help="preset name (see `tuitune config list`)")
    new.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write, e.g. configs/my-run.yaml")
    new.add_argument("--force", action="store_true", help=force_help("FILE"))
    new.set_defaults(func=run_new)

    check = verbs.add_parser("check", help="validate a config against the schema and this machine",
                             description="Validate FILE: schema, files, GPUs, bitsandbytes, DeepSpeed, template. "
                             "Exits 2 with one error line for the first problem.")
    check.add_argument("file", metavar="FILE", help="the run config (YAML), e.g. configs/my-run.yaml")
    check.add_argument("--json", action="store_true", help="print the issues as JSON")
    check.add_argument("--no-machine", action="store_true",
                       help="skip the checks of this machine (GPUs, bitsandbytes, DeepSpeed); files still checked")
    check.set_defaults(func=run_check)

    show = verbs.add_parser("show", help="resolved values, descriptions and the diff against the preset",
                            description="Every field with its resolved value and description, the effective "
                            "batch size, and what differs from the preset the file started from.")
    show.add_argument("file", metavar="FILE", help="the run config (YAML), e.g. configs/my-run.yaml")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=run_show)


def _workspace(args, path: Path):
    """-w when given explicitly, else the folder holding the file's configs/, else the current folder."""
    from tuitune.config.loader import default_workspace_for

    ws = getattr(args, "workspace", ".")
    return Path(ws) if ws not in (None, ".") else default_workspace_for(path)


def run_list(args) -> int:
    from tuitune.config import PRESETS

    if args.json:
        print(json.dumps([{"name": p.name, "summary": p.summary} for p in PRESETS.values()],
                         ensure_ascii=False, indent=2))
        return 0
    width = max(len(n) for n in PRESETS)
    for p in PRESETS.values():
        print(f"{p.name:<{width}}  {p.summary}")
    print("\ncreate one with: tuitune config new --preset NAME -o configs/NAME.yaml")
    return 0


def run_new(args) -> int:
    from tuitune.commands import replacing
    from tuitune.config import get_preset, save_config
    from tuitune.errors import TuituneError

    from tuitune.fsutil import refuse_existing

    cfg = get_preset(args.preset)
    out = Path(args.output)
    refuse_existing(out, args.force)
    if out.suffix not in (".yaml", ".yml"):
        raise TuituneError(f"{out}: a config file name ends in .yaml; e.g. -o configs/{args.preset}.yaml")
    with replacing(args, out):
        save_config(cfg, out)
    print(f"wrote {out} from preset {args.preset}")
    print(f"edit it, then: tuitune config check {out}")
    return 0


def run_check(args) -> int:
    from tuitune.config import ERROR, check_config, load_config, summary

    path = Path(args.file)
    cfg = load_config(path, workspace=_workspace(args, path))
    issues = check_config(cfg, machine=not args.no_machine)
    errors = [i for i in issues if i.level == ERROR]
    mix = []
    if not errors and len(cfg.data.sources()) > 1:
        # The mix, as the run will take it: each file tokenized once into the cache the run reuses.
        from tuitune.train.build import describe_mix

        mix = describe_mix(cfg)
    if args.json:
        from dataclasses import asdict

        print(json.dumps({"file": str(path), "ok": not errors, "effective_batch_size": cfg.effective_batch_size,
                          "issues": [i.to_dict() for i in issues], "mix": [asdict(r) for r in mix]},
                         ensure_ascii=False, indent=2))
    else:
        for i in issues:
            if i.level != ERROR:
                print(f"warn: {i.format(path)}")
    if errors:
        # One error line (the first problem), then the others as context lines.
        print(f"error: {errors[0].format(path)}", file=sys.stderr)
        for extra in errors[1:]:
            print(f"  also: {extra.format(path)}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"ok: {path}: {summary(cfg)}")
        for row in mix:
            print(f"mix: {row.line()}")
        vram = _vram_line(cfg)
        if vram:
            print(vram)
    return 0


def _vram_line(cfg) -> str | None:
    """The VRAM estimate for this config's settings, as the Config step shows it (None where the
    model's config.json cannot be read here: the errors above say why)."""
    from tuitune.errors import TuituneError
    from tuitune.vram import estimate_for_config

    try:
        est = estimate_for_config(cfg)
    except TuituneError:
        return None
    return f"vram: ≈ {est.total_gib:.2f} GiB per GPU for training (`tuitune env --estimate` for the parts and advice)"


PATH_FIELDS = ("model", "data.train", "data.eval")


def _short(value, width: int = 44) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def run_show(args) -> int:
    from tuitune.config import diff_against, flatten, iter_fields, load_config, summary

    path = Path(args.file)
    cfg = load_config(path, workspace=_workspace(args, path))
    values = flatten(cfg.model_dump(mode="json"))
    # Resolved: paths made absolute against the workspace.
    values["model"] = cfg.model_path()
    values["data.train"] = (str(cfg.resolve(cfg.data.train)) if isinstance(cfg.data.train, str) else
                            [{**s.model_dump(exclude_none=True), "path": str(cfg.resolve(s.path))}
                             for s in cfg.data.sources()])
    if cfg.data.eval:
        values["data.eval"] = str(cfg.resolve(cfg.data.eval))
    diff = diff_against(cfg)
    base = cfg.preset or "defaults"
    if args.json:
        print(json.dumps({
            "file": str(path), "workspace": str(cfg.workspace), "preset": cfg.preset,
            "effective_batch_size": cfg.effective_batch_size,
            "fields": [{"field": n, "value": values.get(n), "description": info.description}
                       for n, info in iter_fields()],
            "diff": [{"field": f, "preset": a, "value": b} for f, a, b in diff],
        }, ensure_ascii=False, indent=2))
        return 0
    print(f"{path}  (workspace {cfg.workspace}, preset {base})")
    names = [n for n, _ in iter_fields()]
    w = max(map(len, names))
    section = ""
    for n, info in iter_fields():
        sec = n.split(".")[0] if "." in n else ""
        if sec != section:
            section = sec
            print(f"\n[{sec}]")
        v = values.get(n)
        shown = str(v) if n in PATH_FIELDS and v is not None else _short(v)  # paths in full: they are what to check
        print(f"  {n:<{w}}  {shown:<44}  {info.description}")
    print(f"\neffective batch size: {summary(cfg).split('effective batch ', 1)[1]}")
    if diff:
        print(f"\nchanged from {base}:")
        for f, a, b in diff:
            print(f"  {f}: {_short(a, 60)} -> {_short(b, 60)}")
    else:
        print(f"\nsame as {base}")
    return 0
