"""GRPO's rewards, in one place: a built-in reward is a row of :data:`BUILTINS` and a function here.

A reward scores each completion a number; the run's reward is the weighted sum of the rewards its
config lists (``grpo.rewards``), each logged on its own by TRL under its name. Built in:

* ``exact``: the final answer, extracted from the completion (``pattern``, default ``#### <number>``
  and else the last number), equals the record's reference ``answer`` after normalising case,
  spaces and numbers (``1,000`` = ``1000.0``): 1 or 0;
* ``contains``: the completion contains ``text`` (default: the reference answer), case and spaces
  normalised: 1 or 0;
* ``regex``: the completion matches ``pattern`` anywhere (``.`` spans lines): a format reward such as
  ``<answer>.*</answer>`` or ``#### -?\\d+``: 1 or 0;
* ``length``: 0 up to ``target_length`` tokens, then minus the share it runs past, down to -1.

The user's own: ``file.py:function`` from the workspace, called as TRL calls a reward function
(``prompts``, ``completions``, ``completion_ids`` and the dataset's columns as keyword lists, and
TRL's ``trainer_state``, ``log_extra``, ``log_metric``), returning one number (or None) per
completion. Only a file the config names is ever imported; ``tuitune config check`` and ``tuitune
train`` first import it in a separate process and call it on one record (:func:`check_user_reward`).

Light to import (``re`` only): the config schema validates reward names with it.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuitune.errors import TuituneError

#: A number as people write it: 1,000 or -3.5 or 1000.0 (no exponent).
NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
#: The default answer of ``exact``: what follows ``####`` (GSM8K's convention).
HASH_ANSWER = r"####\s*(" + NUMBER + r")"
#: A ``file.py:function`` reward name.
USER_REWARD = re.compile(r"^(?P<file>[^:]+\.py):(?P<func>[A-Za-z_]\w*)$")


def normalize(text: Any) -> str:
    """An answer compared as text: case, spaces, surrounding punctuation and number formats away
    (``" 1,000. "`` and ``"1000.0"`` are both ``"1000"``; ``"Paris!"`` is ``"paris"``)."""
    s = " ".join(str(text).split()).lower().strip(" .!?;:\"'`*$")
    if re.fullmatch(NUMBER, s):
        value = float(s.replace(",", ""))
        return str(int(value)) if value.is_integer() else repr(value)
    return s


def extract_answer(text: str, pattern: str | None = None) -> str | None:
    """The final answer in ``text``: the last match of ``pattern`` (its first group, if it has one);
    by default the number after ``####``, else the last number in the text. None: no answer."""
    regexes = [pattern] if pattern else [HASH_ANSWER, NUMBER]
    for rx in regexes:
        matches = list(re.finditer(rx, text, re.DOTALL))
        if matches:
            m = matches[-1]
            return m.group(1) if m.re.groups else m.group(0)
    return None


def exact(completion: str, *, answer: str | None = None, pattern: str | None = None, **_) -> float:
    """1 when the completion's final answer equals the reference (both normalised), else 0."""
    if answer is None or str(answer).strip() == "":
        return 0.0
    got = extract_answer(completion, pattern)
    if got is None:
        return 0.0
    ref = str(answer)
    ref = extract_answer(ref, pattern) or ref if "####" in ref else ref  # a raw GSM8K answer works too
    return float(normalize(got) == normalize(ref))


def contains(completion: str, *, answer: str | None = None, text: str | None = None, **_) -> float:
    """1 when the completion contains ``text`` (default: the reference answer), case and spaces aside."""
    want = text if text is not None else answer
    if want is None or not str(want).strip():
        return 0.0
    return float(" ".join(str(want).split()).lower() in " ".join(completion.split()).lower())


def regex(completion: str, *, pattern: str, **_) -> float:
    """1 when ``pattern`` matches somewhere in the completion (``.`` spans lines), else 0."""
    return float(re.search(pattern, completion, re.DOTALL) is not None)


def length(completion: str, *, target_length: int, tokens: int | None = None, **_) -> float:
    """0 up to ``target_length`` tokens (words when the token count is unknown), then minus the share
    it runs past the target: -0.5 at 1.5 times the target, at most -1."""
    n = tokens if tokens is not None else len(completion.split())
    return -min(1.0, max(0, n - target_length) / target_length)


@dataclass(frozen=True)
class Builtin:
    name: str
    summary: str
    score: Callable[..., float]
    options: tuple[str, ...] = ()      # the options it takes besides weight
    required: tuple[str, ...] = ()
    needs_answer: bool = False         # reads the record's reference answer (unless an option replaces it)


BUILTINS: dict[str, Builtin] = {b.name: b for b in [
    Builtin("exact", "the final answer (pattern, default #### <number>, else the last number) equals the "
            "record's answer", exact, ("pattern",), needs_answer=True),
    Builtin("contains", "the completion contains text (default: the record's answer)", contains, ("text",),
            needs_answer=True),
    Builtin("regex", "the completion matches pattern (a format reward)", regex, ("pattern",), ("pattern",)),
    Builtin("length", "a penalty past target_length tokens (down to -1 at twice the length)", length,
            ("target_length",), ("target_length",)),
]}
OPTIONS = ("pattern", "text", "target_length")


def names_help() -> str:
    return f"{', '.join(BUILTINS)}, or your own as file.py:function"


def check_spec(name: str, options: dict) -> str | None:
    """What is wrong with a reward's name and options (None: nothing); the schema's message."""
    user = USER_REWARD.match(name)
    if user is None and name not in BUILTINS:
        import difflib

        close = difflib.get_close_matches(name, list(BUILTINS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown reward {name!r}; {hint}built in: {names_help()}"
    given = [k for k, v in options.items() if v is not None]
    if user is not None:
        if given:
            return (f"{name}: {', '.join(given)} are options of the built-in rewards; your function gets the "
                    "data's columns instead")
        return None
    b = BUILTINS[name]
    wrong = [k for k in given if k not in b.options]
    if wrong:
        takes = ", ".join(("weight", *b.options))
        return f"reward {name} takes {takes}, not {', '.join(wrong)}"
    missing = [k for k in b.required if options.get(k) is None]
    if missing:
        return f"reward {name} needs {' and '.join(missing)}" + (
            " (a regular expression, e.g. '#### -?\\d+')" if "pattern" in missing else "")
    if options.get("pattern") is not None:
        try:
            re.compile(options["pattern"])
        except re.error as exc:
            return f"reward {name}: pattern {options['pattern']!r} is not a regular expression: {exc}"
    return None


def needs_answers(spec) -> bool:
    """Whether a reward reads the records' reference ``answer`` (exact; contains without text)."""
    b = BUILTINS.get(spec.name)
    return bool(b and b.needs_answer and not (b.name == "contains" and spec.text is not None))


# --- as TRL calls them -----------------------------------------------------------------------------

def labels(specs) -> list[str]:
    """The name each reward is logged under: its own (a function's name), numbered when repeated."""
    out, seen = [], {}
    for s in specs:
        m = USER_REWARD.match(s.name)
        base = m.group("func") if m else s.name
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _builtin_function(spec, label: str):
    b = BUILTINS[spec.name]
    opts = {k: getattr(spec, k) for k in b.options if getattr(spec, k) is not None}

    def reward(prompts=None, completions=None, completion_ids=None, answer=None, record=None, **_):
        out = []
        for i, completion in enumerate(completions):
            try:
                out.append(b.score(completion, answer=answer[i] if answer else None,
                                   tokens=len(completion_ids[i]) if completion_ids else None, **opts))
            except Exception as exc:  # a reward that fails ends the run, saying where
                where = record[i] if record else f"completion {i + 1}"
                raise TuituneError(f"reward {label} failed on {where}: {_first_line(exc)}") from exc
        return out

    reward.__name__ = label
    return reward


def load_user_function(workspace: Path, name: str):
    """The function ``file.py:function`` names, imported from the workspace (TuituneError if it cannot be)."""
    import importlib.util

    m = USER_REWARD.match(name)
    path = Path(m.group("file")).expanduser()
    path = path if path.is_absolute() else Path(workspace) / path
    if not path.is_file():
        raise TuituneError(f"reward {name}: {path} does not exist; write the file in the workspace, or fix "
                           "the name in grpo.rewards")
    module_name = f"tuitune_reward_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise TuituneError(f"reward {name}: {path} line {exc.lineno}: syntax error: {exc.msg}; fix the file") from None
    except Exception as exc:
        raise TuituneError(f"reward {name}: importing {path} raised {_first_line(exc)}; fix the file") from None
    func = getattr(module, m.group("func"), None)
    if not callable(func):
        have = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                and getattr(v, "__module__", None) == module_name]
        raise TuituneError(f"reward {name}: {path.name} has no function {m.group('func')!r}"
                           + (f" (it has {', '.join(have)})" if have else "") + "; fix the name after the colon")
    import inspect

    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        params = None
    if params is not None:
        names = {p.name for p in params}
        var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
        if "completions" not in names or not var_kw:
            raise TuituneError(f"reward {name}: {path.name}: write it as def {m.group('func')}(completions, "
                               "**kwargs) -> list[float]: TRL passes completions and the data's columns "
                               "(prompts, answer, ...) as keyword lists")
    return func


def _user_function(spec, label: str, workspace: Path):
    func = load_user_function(workspace, spec.name)

    def reward(prompts=None, completions=None, completion_ids=None, **columns):
        try:
            out = func(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
        except Exception as exc:
            # Called on a batch, the function does not say which record it failed on: the batch's
            # records are named (not tried again one by one: a judge that is down would time out on each).
            raise TuituneError(f"reward {spec.name} failed on {batch_records(columns.get('record'))}: "
                               f"{_first_line(exc)}") from exc
        problem = return_problem(out, len(completions))
        if problem:
            raise TuituneError(f"reward {spec.name}: {problem}")
        return list(out)

    reward.__name__ = label
    return reward


def batch_records(records: list[str] | None, most: int = 8) -> str:
    """The records of a batch as a reward's error names them: ``d.jsonl line 7``, or ``d.jsonl lines
    7, 12, 40 (one batch)`` when it held several (the first ``most``)."""
    uniq = list(dict.fromkeys(records or []))
    if not uniq:
        return "its batch"
    if len(uniq) == 1:
        return uniq[0]
    more = f" and {len(uniq) - most} more" if len(uniq) > most else ""
    files = {r.rsplit(" line ", 1)[0] for r in uniq}
    if len(files) == 1 and all(" line " in r for r in uniq):
        lines = ", ".join(r.rsplit(" line ", 1)[1] for r in uniq[:most])
        return f"{files.pop()} lines {lines}{more} (one batch)"
    return ", ".join(uniq[:most]) + f"{more} (one batch)"


def return_problem(out: Any, n: int) -> str | None:
    """What is wrong with a reward function's return value for ``n`` completions, or None."""
    if not isinstance(out, (list, tuple)):
        return f"returned {type(out).__name__}; return a list of numbers, one per completion"
    if len(out) != n:
        return f"returned {len(out)} values for {n} completions; return one number per completion"
    bad = next((v for v in out if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))), None)
    if bad is not None:
        return f"returned a {type(bad).__name__} ({bad!r:.40}) among its values; return numbers (or None to skip)"
    return None


def reward_functions(specs, workspace: Path) -> tuple[list[Callable], list[float]]:
    """The run's rewards as TRL's reward functions (named for the logs) and their weights."""
    funcs = []
    for spec, label in zip(specs, labels(specs)):
        funcs.append(_user_function(spec, label, workspace) if USER_REWARD.match(spec.name)
                     else _builtin_function(spec, label))
    return funcs, [float(s.weight) for s in specs]


# --- the check before a run: the user's function, in a separate process ------------------------------

def sample_columns(record: dict, where: str) -> dict:
    """One record's columns as a reward function gets them (lists of one)."""
    return {"answer": [record.get("answer")], "record": [where]}


def check_user_reward(workspace: Path, name: str, record: dict | None, where: str = "line 1",
                      timeout: float = 60) -> str | None:
    """Import ``file.py:function`` in a separate process and call it on one record (the data's first, or a
    made-up one); None when it returns one number, else the line that says what to fix."""
    import subprocess

    payload = json.dumps({"workspace": str(workspace), "name": name, "record": record or {"prompt": "2+2?",
                                                                                            "answer": "4"},
                          "where": where})
    try:
        proc = subprocess.run([sys.executable, "-m", "tuitune.train.rewards"], input=payload, text=True,
                              capture_output=True, timeout=timeout, cwd=str(workspace))
    except subprocess.TimeoutExpired:
        return f"reward {name}: importing and calling it on one record took over {timeout:g} s; make it faster"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode == 0 and lines and lines[-1] == "ok":
        return None
    if lines:
        return lines[-1]
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return f"reward {name}: the check process failed: {err[-1] if err else proc.returncode}"


def _check_main() -> int:
    """Run by :func:`check_user_reward` (``python -m tuitune.train.rewards``, a JSON request on stdin)."""
    req = json.loads(sys.stdin.read())
    name, rec = req["name"], req["record"]
    try:
        func = load_user_function(Path(req["workspace"]), name)
        prompt = rec.get("prompt", "")
        completion = str(rec.get("answer") or "42")
        try:
            out = func(prompts=[prompt], completions=[completion], completion_ids=[[0]],
                       trainer_state=None, log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None,
                       **sample_columns(rec, req["where"]))
        except Exception as exc:
            raise TuituneError(f"reward {name} raised {_first_line(exc)} on {req['where']}; fix the "
                               "function") from None
        problem = return_problem(out, 1)
        if problem:
            raise TuituneError(f"reward {name}: {problem}")
    except TuituneError as exc:
        print(str(exc), flush=True)
        return 2
    print("ok", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_check_main())
