"""``tuitune chat``: talk to a model, an adapter, a run or a checkpoint; a REPL or one-shot answers.

Layer twin: ``screens/chat.py`` is the same step's screen (one name, two layers).

Light at import (argparse only): torch and transformers load when a model does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from tuitune.commands import MODEL_OR_RUN, MODEL_OR_RUN_FORMS, MODEL_OR_RUN_HELP

MODEL_FORMS = MODEL_OR_RUN_FORMS + """
The REPL (without --prompt/--prompts): Enter sends a line; end a line with \\ to go on
on the next one, or put text between two lines of \"\"\". Commands:
  /reset (or RESET)           forget the conversation
  /exit (or EXIT, ctrl+d)     leave
  /system TEXT                set the system prompt (empty: none)
  /set NAME VALUE             temperature, top_p, top_k, repetition_penalty, max_new_tokens, seed, stop
  /seed N                     the seed (random: a new one each answer)
  /save FILE                  append the conversation to FILE as one JSONL record (tuitune's data format)
  /settings, /help            show the settings, this help
ctrl+c stops the answer being written.
"""


def _checkpoint(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--checkpoint must be a whole number, 1 or more, got {text!r}")
    return int(text)


def register(sub) -> None:
    from tuitune.templates import TEMPLATE_NAMES

    p = sub.add_parser(
        "chat", help="chat with a model, an adapter, a run or a checkpoint (a REPL, or --prompt for one answer)",
        description="Chat with a model in the terminal, with every generation control and a seed:\n"
        "the same seed, settings, model and prompt give the same answer.\n"
        "Without --prompt/--prompts, an interactive REPL.", epilog=MODEL_FORMS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar=MODEL_OR_RUN, help=MODEL_OR_RUN_HELP)
    p.add_argument("--adapter", metavar="DIR", help="a LoRA adapter folder to apply on MODEL_OR_RUN (a model folder)")
    p.add_argument("--checkpoint", type=_checkpoint, metavar="N",
                   help="with a run: chat with its checkpoint-N instead of the final adapter")
    once = p.add_mutually_exclusive_group()
    once.add_argument("--prompt", metavar="TEXT", help="answer TEXT once and exit; only the answer goes to stdout")
    once.add_argument("--prompts", metavar="FILE",
                      help="answer each non-empty line of FILE (each on its own, without history); "
                      "prints one JSON object a line: prompt, answer, stats")
    from tuitune.generation.settings import add_arguments

    add_arguments(p.add_argument_group("generation"))
    m = p.add_argument_group("model")
    m.add_argument("--template", choices=TEMPLATE_NAMES, default=None, metavar="NAME",
                   help="prompt template: auto (the tokenizer's chat template) or one of "
                   f"{', '.join(n for n in TEMPLATE_NAMES if n != 'auto')} (default: the run's, else auto)")
    m.add_argument("--bits", type=int, choices=(4, 8), default=None,
                   help="load the weights in 4 or 8 bits with bitsandbytes (needs a CUDA GPU)")
    m.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="weights dtype (default: auto: bf16 on GPUs and CPUs that have it, fp16 on older GPUs, else fp32)")
    m.add_argument("--trust-remote-code", action="store_true",
                   help="run Python code shipped with the model (only for models you trust)")
    p.add_argument("--stats", action="store_true",
                   help="with --prompt: print tokens, time to first token and tokens/s to stderr")
    p.set_defaults(func=run)


def settings_from(args):
    from tuitune.generation.settings import from_arguments

    return from_arguments(args)


def run(args) -> int:
    from pathlib import Path

    from tuitune.chat import ChatSession
    from tuitune.sources import resolve
    from tuitune.errors import TuituneError

    settings = settings_from(args)
    lines = None
    if args.prompts:
        path = Path(args.prompts).expanduser()
        try:
            lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
        except FileNotFoundError:
            raise TuituneError(f"{path}: no such file; give a text file with one prompt a line") from None
        except UnicodeDecodeError:
            raise TuituneError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    source = resolve(args.model, args.workspace, adapter=args.adapter, checkpoint=args.checkpoint)
    if args.trust_remote_code:
        source.trust_remote_code = True
    interactive = args.prompt is None and lines is None
    for note in source.notes:
        print(f"note: {note}", file=sys.stderr)
    session = ChatSession(settings).load(
        source, template=args.template, dtype=args.dtype, bits=args.bits,
        progress=(lambda msg: print(f"{msg}…", file=sys.stderr)) if interactive else None)
    if args.prompt is not None:
        for piece in session.stream(args.prompt):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        _notes(session)
        if args.stats:
            print(session.last.stats.line(), file=sys.stderr)
        return 0
    if lines is not None:
        for line in lines:
            session.reset()
            answer = session.ask(line)
            st = session.last.stats
            print(json.dumps({"prompt": line, "answer": answer, "tokens": st.new_tokens, "seed": st.seed,
                              "finish": st.finish, "ttft_ms": round((st.ttft or 0) * 1000, 1),
                              "tokens_per_s": round(st.tokens_per_s, 1)}, ensure_ascii=False), flush=True)
        return 0
    return repl(session)


def _notes(session) -> None:
    st = session.last.stats if session.last else None
    if st and st.note:
        print(f"note: {st.note}", file=sys.stderr)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str) -> str:
    """Control characters (a model may write a bell or escape) as visible symbols."""
    return _CONTROL.sub(lambda m: chr(0x2400 + ord(m.group())) if m.group() != "\x7f" else "\u2421", text)


def read_message(read=input) -> str | None:
    """One message from the user: a line, lines joined by a trailing \\, or a \"\"\" block. None at EOF."""
    try:
        line = read(">>> ")
    except EOFError:
        return None
    if line.strip() == '"""':
        out = []
        while True:
            try:
                more = read("... ")
            except EOFError:
                break
            if more.strip() == '"""':
                break
            out.append(more)
        return "\n".join(out)
    out = []
    while line.endswith("\\"):
        out.append(line[:-1])
        try:
            line = read("... ")
        except EOFError:
            line = ""
            break
    out.append(line)
    return "\n".join(out)


def _ctrl_c_interrupts() -> None:
    """ctrl+c stops an answer: make sure SIGINT raises KeyboardInterrupt here, also where this process
    was started with it ignored (a background job of a script, some launchers) or blocked."""
    import signal

    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def repl(session) -> int:
    from tuitune.chat import save_conversations
    from tuitune.errors import TuituneError

    _ctrl_c_interrupts()
    print(f"{session.describe()} · context {session.context_length} tokens", file=sys.stderr)
    print("Enter sends; end a line with \\ for more lines. /help for commands, /exit to leave.", file=sys.stderr)
    while True:
        try:
            text = read_message()
        except KeyboardInterrupt:
            print()
            return 0
        if text is None:
            print()
            return 0
        cmd = text.strip()
        if not cmd:
            continue
        if cmd in ("EXIT", "/exit", "/quit"):
            return 0
        try:
            if cmd == "RESET" or cmd == "/reset":
                session.reset()
                print("(conversation reset)")
                continue
            if cmd.startswith("/"):
                _command(session, cmd, save_conversations)
                continue
            answer = session.stream(text)
            try:
                for piece in answer:
                    sys.stdout.write(printable(piece))
                    sys.stdout.flush()
            except KeyboardInterrupt:  # ctrl+c stops the answer, not the REPL
                session.stop()
                answer.close()
            print()
            _notes(session)
            if session.last:
                print(f"[{session.last.stats.line()}]", file=sys.stderr)
        except TuituneError as exc:
            print(f"error: {exc}", file=sys.stderr)


def _command(session, cmd: str, save_conversations) -> None:
    from tuitune.chat import SETTING_NAMES
    from tuitune.errors import TuituneError

    name, _, rest = cmd[1:].partition(" ")
    rest = rest.strip()
    if name == "help":
        print(MODEL_FORMS.split("The REPL", 1)[1].split("\n", 1)[1])
    elif name == "system":
        session.settings = session.settings.updated("system", rest)
        print(f"(system prompt {'set' if rest else 'cleared'})")
    elif name == "seed":
        session.settings = session.settings.updated("seed", rest)
        print(f"(seed {session.settings.seed if session.settings.seed is not None else 'random'})")
    elif name == "set":
        key, _, value = rest.partition(" ")
        if not key:
            raise TuituneError(f"/set NAME VALUE; names: {', '.join(SETTING_NAMES)}")
        session.settings = session.settings.updated(key, value)
        print(f"({key} = {value.strip()})")
    elif name in ("settings", "show"):
        for k, v in session.settings.to_dict().items():
            print(f"  {k}: {v!r}")
    elif name == "save":
        if not rest:
            raise TuituneError("/save FILE: give a file name, e.g. /save data/good-answers.jsonl")
        path = save_conversations(rest, [session])
        print(f"(saved the conversation to {path})")
    else:
        raise TuituneError(f"unknown command /{name}; commands: /reset /exit /system /set /seed /save /settings /help")
