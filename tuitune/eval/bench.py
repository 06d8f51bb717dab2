"""General ability: lm-evaluation-harness tasks on the tuned model and on its base (``tuitune eval --bench``).

Did fine-tuning cost the model what it knew? lm-evaluation-harness (the well-kept library that
Axolotl and Oumi call) scores each task; tuitune hands it the model it loaded itself (the one
loader: the base with the run's adapter, switched off for the base, or a merged model) through
lm-eval's HF model class, so both sides share one base in memory as the held-out evaluation does.

:func:`plan` resolves ``--bench`` (lm-eval task and group names, a local task's YAML file or
folder, or a local task's name: the shipped ``sample_data/bench/common.yaml`` is ``common``) and
loads each task's data before any model loads, so a task whose data cannot be fetched, an unknown
name or a task file that does not parse is one line. :func:`score` runs the tasks on one side.
:func:`compare` puts the sides together: each task's score and standard error, the change, and
``worse`` where the tuned score is more than two of the base's standard errors below the base's
(``kept`` otherwise).

Prompts are scored as lm-eval's tasks define them, without a chat template (its default; the
same for both sides, so the comparison is like for like).
Light to import: lm_eval, torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tuitune.errors import FIELD, TuituneError, first_line

#: The common sets, for the screen's list and the help (each is one lm-eval task or group name).
COMMON = {"English": ("mmlu", "arc_easy", "hellaswag"), "Chinese": ("cmmlu", "ceval-valid")}
#: The shipped local set (sample_data/bench/common.yaml): 60 questions, half Chinese, four options.
LOCAL = "common"


def choices() -> list[tuple[str, str]]:
    """The Evaluate screen's short list: (label, --bench value): the offline set, then the common sets."""
    return [(f"{LOCAL} (60 questions, offline)", LOCAL),
            *[(f"{lang}: {', '.join(names)}", ",".join(names)) for lang, names in COMMON.items()],
            *[(name, name) for names in COMMON.values() for name in names]]
#: Questions per task (per subtask of a group such as mmlu's 57): minutes on one GPU for a 7B model.
DEFAULT_LIMIT = 100
#: The score a task is judged on: the first of these it reports with a standard error.
METRICS = ("acc_norm", "acc", "exact_match", "mc2", "f1", "bleu")
#: How many of the base's standard errors the tuned score may fall before it reads "worse".
WORSE_AT = 2.0
BENCH_DIRS = ("data/bench",)   # a workspace's local tasks (the demo copies sample_data/bench there)


@dataclass
class BenchTask:
    name: str                    # lm-eval's task or group name
    spec: str | dict             # what lm-eval's TaskManager.load takes: the name, or a local task's config
    source: str = "lm-eval"      # "lm-eval", or the local task file (as the user reads it)


@dataclass
class BenchPlan:
    tasks: list[BenchTask]
    limit: int | None = DEFAULT_LIMIT    # None: every question
    shots: int | None = None             # None: each task's own default (0 for most)
    loaded: dict | None = field(default=None, repr=False)   # TaskManager.load's result, data checked

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]


def parse_limit(text: str | int | None) -> int | None:
    """``--limit``: a whole number of 1 or more, or ``all``."""
    if text is None:
        return DEFAULT_LIMIT
    if str(text).strip().lower() == "all":
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise TuituneError(f"{FIELD} {text}: give a whole number of questions per task, or all",
                           field="limit") from None
    if value < 1:
        raise TuituneError(f"{FIELD} {value}: give 1 or more questions per task (or all for every question)",
                           field="limit")
    return value


def _shown(path: Path, base) -> str:
    from tuitune.eval.heldout import shown

    return shown(path, base)


def _task_name(path: Path) -> str | None:
    """The ``task:`` line of a task file, read without parsing the rest (listing local tasks)."""
    try:
        m = re.search(r"^task:\s*['\"]?([^'\"\s#]+)", path.read_text(encoding="utf-8"), re.M)
    except (OSError, UnicodeDecodeError):
        return None
    return m.group(1) if m else None


def local_tasks(workspace: str | Path = ".") -> dict[str, Path]:
    """Local task files by task name: the workspace's data/bench/, then the shipped sample_data/bench/."""
    from tuitune.sample import sample_data_dir

    found: dict[str, Path] = {}
    dirs = [Path(workspace) / d for d in BENCH_DIRS]
    try:
        dirs.append(sample_data_dir() / "bench")
    except TuituneError:
        pass
    for d in dirs:
        for f in sorted(d.glob("*.y*ml")) if d.is_dir() else []:
            name = _task_name(f)
            if name and name not in found:
                found[name] = f
    return found


def local_config(path: Path, base=None) -> dict:
    """A local task file as lm-eval's config, its data files made absolute (lm-eval reads a relative
    ``data_files`` from the current folder, not the YAML's: FACTS.md)."""
    from lm_eval.tasks._yaml_loader import load_yaml   # lm-eval's own loader: !function and include

    where = _shown(path, base)
    try:
        cfg = load_yaml(path)
    except Exception as exc:  # noqa: BLE001 - yaml errors, a bad include or !function
        mark = getattr(exc, "problem_mark", None)   # a YAML error knows its line
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise TuituneError(f"{where}: not a task file lm-eval can read ({at}{' '.join(first_line(exc).split())}); "
                           "fix the YAML (sample_data/bench/common.yaml is one that works)", field="bench") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("task"), str):
        raise TuituneError(f"{where}: no `task: NAME` line; a task file names its task (see "
                           "sample_data/bench/common.yaml)", field="bench")
    folder = path.parent

    def fix(p):
        q = Path(os.path.expanduser(str(p)))
        q = q if q.is_absolute() else folder / q
        if not q.exists():
            raise TuituneError(f"{where}: its data file {_shown(q, base)} is not there (data_files are read "
                               f"from the task file's folder)", field="bench")
        return str(q)

    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if files is not None:
        if isinstance(files, dict):
            files = {k: [fix(x) for x in v] if isinstance(v, list) else fix(v) for k, v in files.items()}
        else:
            files = [fix(x) for x in files] if isinstance(files, list) else fix(files)
        cfg["dataset_kwargs"] = {**cfg["dataset_kwargs"], "data_files": files}
    return cfg


def _is_path(item: str) -> bool:
    return item.endswith((".yaml", ".yml")) or "/" in item or os.sep in item


def plan(spec: str, workspace: str | Path = ".", *, limit: str | int | None = None, shots: int | None = None,
         base=None) -> BenchPlan:
    """``--bench`` resolved and every task's data loaded (before any model); TuituneError says what is wrong."""
    items = [s.strip() for s in str(spec or "").split(",") if s.strip()]
    if not items:
        raise TuituneError(f"{FIELD}: give a task: an lm-eval task name (mmlu, arc_easy, cmmlu, ...), a local "
                           f"task file, or {LOCAL} (the shipped 60-question set)", field="bench")
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise TuituneError(f"{FIELD} runs lm-evaluation-harness, which is not installed here: pip install "
                           "'tuitune[bench]' (or pip install lm-eval)", field="bench") from None
    if shots is not None and shots < 0:
        raise TuituneError(f"{FIELD} {shots}: give 0 or more examples", field="shots")
    bp = BenchPlan([], limit=parse_limit(limit), shots=shots)
    workspace = Path(workspace)
    local = local_tasks(workspace)
    hub: list[str] = []
    for item in items:
        if _is_path(item) or Path(item).exists():
            path = Path(item).expanduser()
            if not path.is_absolute() and not path.exists() and (workspace / path).exists():
                path = workspace / path
            files = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
            if not path.exists() or not files:
                raise TuituneError(f"{FIELD} {item}: no such task file" if not path.exists() else
                                   f"{FIELD} {item}: the folder holds no task YAML", field="bench")
            for f in files:
                cfg = local_config(f, base)
                bp.tasks.append(BenchTask(cfg["task"], cfg, _shown(f, base)))
        elif item in local:
            cfg = local_config(local[item], base)
            bp.tasks.append(BenchTask(item, cfg, _shown(local[item], base)))
        else:
            hub.append(item)
            bp.tasks.append(BenchTask(item, item))
    seen = set()
    for t in bp.tasks:
        if t.name in seen:
            raise TuituneError(f"{FIELD}: task {t.name} is named twice", field="bench")
        seen.add(t.name)
    _load(bp, hub, local)
    return bp


def _quiet_lm_eval() -> None:
    """lm-eval's logging and progress bars off: tuitune shows its own progress and ETA."""
    import logging

    import functools

    import lm_eval.api.task as task_module
    from datasets.utils.logging import disable_progress_bar
    from tqdm import tqdm

    disable_progress_bar()
    # lm-eval draws a bar while it builds each task's prompts, with no switch to turn it off
    # (its request bars take disable_tqdm, which tuitune's model class passes).
    task_module.tqdm = functools.partial(tqdm, disable=True)

    for name in ("lm-eval", "lm_eval", "lm_eval.evaluator", "lm_eval.models.huggingface"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _load(bp: BenchPlan, hub: list[str], local: dict[str, Path]) -> None:
    """Each task built by lm-eval, which loads its data: here, before the model, one line per failure."""
    _quiet_lm_eval()
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=bool(hub))
    if hub:
        import difflib

        known = set(manager.all_tasks)
        for name in hub:
            if name not in known:
                close = difflib.get_close_matches(name, [*local, *known], n=4, cutoff=0.6)
                hint = f"closest: {', '.join(close)}" if close else "`lm-eval ls tasks` lists them"
                raise TuituneError(f"{FIELD} {name}: no lm-eval task or local task of that name; {hint}",
                                   field="bench")
    loaded = {"tasks": {}, "groups": {}, "group_map": {}}
    for t in bp.tasks:
        try:
            one = manager.load([t.spec])
        except TuituneError:
            raise
        except Exception as exc:  # noqa: BLE001 - datasets/hub errors, a task config lm-eval refuses
            raise TuituneError(_load_error(t, exc), field="bench") from None
        for key in loaded:
            loaded[key].update(one.get(key) or {})
    bp.loaded = loaded


def _load_error(t: BenchTask, exc: Exception) -> str:
    why = " ".join(first_line(exc).split())[:300]
    if t.source != "lm-eval":
        return f"{t.source}: lm-eval could not build task {t.name} ({why}); fix the task file"
    return (f"{FIELD} {t.name}: its data cannot be fetched ({why}); connect to the Hugging Face Hub (or set "
            "HF_ENDPOINT to a mirror), or point it at local files: a task YAML with `task: NAME`, `dataset_path: "
            "json`, `dataset_kwargs: {data_files: {test: FILE.jsonl}}` and the task's doc_to_text/doc_to_choice, "
            "given as --bench FILE.yaml (sample_data/bench/common.yaml is one)")


class Clock:
    """Progress over both sides and an ETA: each side runs the same requests, so the first side's pace
    says how long the rest takes."""

    def __init__(self, sides: int, tell: Callable[[str, int, int], None]):
        self.sides, self.tell, self.side = sides, tell, 0
        self.total = self.done = 0
        self.t0 = None
        self.label = ""
        self.seconds = 0.0   # the time spent scoring, both sides (what the report says)

    def start_side(self, label: str) -> None:
        self.label = label

    def requests(self, n: int) -> None:
        if self.t0 is None:
            self.t0 = time.time()
        self.total += n if self.side == 0 else 0

    def finish_side(self) -> None:
        """A side's requests all scored (lm-eval may score several options of one question in one row)."""
        self.side += 1
        self.done = self.total * self.side
        self.step(0)

    def step(self, n: int) -> None:
        self.done = min(self.done + n, self.total * (self.side + 1))
        whole = self.total * self.sides
        done = min(self.done, whole)
        left = ""
        if done and self.t0 is not None:
            rest = (time.time() - self.t0) / done * (whole - done)
            left = f", about {int(rest) // 60}:{int(rest) % 60:02d} left"
        self.tell(f"general ability ({self.label}{left})", done, whole)


def _lm(model, tokenizer, batch_size: int, clock: Clock, cancelled):
    """lm-eval's HF model class on a loaded model, counting what it scores (progress, ETA, cancel)."""
    from lm_eval.models.huggingface import HFLM

    class Counted(HFLM):
        def _counted(self, n):
            clock.requests(n)

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            self._counted(len(requests))
            return super().loglikelihood(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            self._counted(len(requests))
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests, disable_tqdm: bool = False):
            self._counted(len(requests))
            return super().generate_until(requests, disable_tqdm=True)

        def _model_call(self, inps, *args, **kwargs):
            if cancelled and cancelled():
                raise TuituneError("evaluation cancelled")
            out = super()._model_call(inps, *args, **kwargs)
            clock.step(int(inps.shape[0]))
            return out

        def _model_generate(self, context, *args, **kwargs):
            if cancelled and cancelled():
                raise TuituneError("evaluation cancelled")
            out = super()._model_generate(context, *args, **kwargs)
            clock.step(int(context.shape[0]))
            return out

    # HFLM ties the model's weights again when it is handed a model: the loader has tied them, and on a
    # peft model whose adapter carries the tied embeddings (modules_to_save) tying again raises.
    model.tie_weights = lambda *a, **k: None
    try:
        return Counted(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    finally:
        del model.tie_weights


def _pick(result: dict) -> tuple[str, float, float | None] | None:
    """(metric, score, standard error) of one task's lm-eval result."""
    for metric in METRICS:
        for key, value in result.items():
            if key.split(",")[0] == metric and isinstance(value, (int, float)):
                err = result.get(key.replace(metric, f"{metric}_stderr", 1))
                return metric, float(value), float(err) if isinstance(err, (int, float)) else None
    return None


def score(model, tokenizer, prepare, bp: BenchPlan, *, batch_size: int = 8, clock: Clock | None = None,
          cancelled=None) -> dict[str, dict]:
    """One side's scores: ``{task: {metric, score, stderr, n}}`` (``prepare``: its adapter, or none)."""
    _quiet_lm_eval()
    from lm_eval.evaluator import evaluate

    clock = clock or Clock(1, lambda *_a: None)
    for task in bp.loaded["tasks"].values():   # what simple_evaluate does to each task, done once
        if bp.shots is not None and task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=bp.shots)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=1234)
    start = time.time()
    try:
        lm = _lm(model, tokenizer, batch_size, clock, cancelled)
        with prepare():
            res = evaluate(lm=lm, task_dict=bp.loaded, limit=bp.limit, bootstrap_iters=1000, log_samples=False)
    except (TuituneError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - a model lm-eval's HF class cannot drive, a task that fails on it
        raise TuituneError(f"{FIELD} {', '.join(bp.names)}: lm-eval could not score this model "
                           f"({' '.join(first_line(exc).split())[:300]})", field="bench") from None
    counts = res.get("n-samples") or {}
    subtasks = res.get("group_subtasks") or {}

    def n_of(name):
        if name in counts:
            return counts[name].get("effective")
        return sum(n_of(s) or 0 for s in subtasks.get(name, [])) or None

    out = {}
    for t in bp.tasks:
        picked = _pick(res["results"].get(t.name) or {})
        if picked is None:
            raise TuituneError(f"{FIELD} {t.name}: lm-eval reported no score with a standard error "
                               f"({', '.join(METRICS)}) for it", field="bench")
        metric, value, err = picked
        out[t.name] = {"metric": metric, "score": value, "stderr": err, "n": n_of(t.name)}
    clock.seconds += time.time() - start
    clock.finish_side()
    return out


def verdict(base: dict, tuned: dict) -> str:
    """``worse`` where the tuned score is more than two of the base's standard errors below it."""
    err = base.get("stderr") or 0.0
    return "worse" if base["score"] - tuned["score"] > WORSE_AT * err else "kept"


def compare(bp: BenchPlan, sides: dict[str, dict[str, dict]], seconds: float) -> dict:
    """The report's ``bench`` section: each task on each side, the change and the verdict."""
    rows = []
    for t in bp.tasks:
        row = {"task": t.name, "source": t.source}
        for side, scores in sides.items():
            s = scores[t.name]
            row.update(metric=s["metric"], n=s["n"])
            row[side] = {"score": s["score"], "stderr": s["stderr"]}
        if "baseline" in row and "target" in row:
            row["change"] = row["target"]["score"] - row["baseline"]["score"]
            row["verdict"] = verdict(row["baseline"], row["target"])
        rows.append(row)
    return {"tasks": rows, "limit": bp.limit, "shots": bp.shots, "chat_template": False,
            "worse_at": WORSE_AT, "seconds": round(seconds, 1)}


def bench_line(bench: dict | None) -> str:
    """``general ability: common acc_norm 0.47 → 0.45 (kept)``; '' without a bench section."""
    if not bench or not bench.get("tasks"):
        return ""
    parts = []
    for r in bench["tasks"]:
        b, t = r.get("baseline"), r.get("target") or {}
        fig = (f"{b['score']:.2f} → {t['score']:.2f}" if b else f"{t['score']:.2f}")
        parts.append(f"{r['task']} {r['metric']} {fig}" + (f" ({r['verdict']})" if r.get("verdict") else ""))
    return "general ability: " + ", ".join(parts)


def markdown(bench: dict | None) -> list[str]:
    """report.md's "General ability" section."""
    if not bench or not bench.get("tasks"):
        return []
    two = any("baseline" in r for r in bench["tasks"])
    limit = "every question" if bench.get("limit") is None else f"at most {bench['limit']} questions a task"
    shots = "each task's own few-shot default" if bench.get("shots") is None else f"{bench['shots']}-shot"
    lines = ["", "## General ability", "",
             f"lm-evaluation-harness, {limit}, {shots}, no chat template. "
             + ("**worse**: the tuned score is more than two of the base's standard errors below the base's; "
                "**kept** otherwise." if two else ""), "",
             "| task | metric | questions | " + ("base | " if two else "") + "tuned | " + ("change | verdict |" if two else ""),
             "| --- | --- | --- | " + ("--- | " if two else "") + "--- | " + ("--- | --- |" if two else "")]

    def cell(s):
        return "" if not s else f"{s['score']:.3f} ± {s['stderr']:.3f}" if s.get("stderr") is not None \
            else f"{s['score']:.3f}"
    for r in bench["tasks"]:
        row = f"| {r['task']} | {r['metric']} | {r.get('n') or ''} | "
        if two:
            row += f"{cell(r.get('baseline'))} | {cell(r.get('target'))} | {r['change']:+.3f} | {r['verdict']} |"
        else:
            row += f"{cell(r.get('target'))} |"
        lines.append(row)
    return lines


__all__ = ["COMMON", "LOCAL", "choices", "DEFAULT_LIMIT", "BenchTask", "BenchPlan", "Clock", "parse_limit", "local_tasks",
           "local_config", "plan", "score", "verdict", "compare", "bench_line", "markdown"]
