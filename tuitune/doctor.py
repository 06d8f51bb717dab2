"""Environment diagnosis: each check is data (name, status, detail, fix).

A check says what it found and, when that is not ok, what to do about it. Nothing
here raises for a broken machine: a check that crashes becomes a ``fail`` with the
exception's text. Heavy imports (torch, bitsandbytes) happen inside the checks.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tuitune.fsutil import python_cmd
# The GPU inventory lives in tuitune.gpus (shared with the dashboard and the config checks).
from tuitune.gpus import GPU, gpu_inventory, nvml

OK, WARN, FAIL = "ok", "warn", "fail"
GIB = 1024 ** 3

# Versions below which a package is known not to work with tuitune.
MIN_VERSIONS = {
    "transformers": "4.51",
    "peft": "0.14",
    "accelerate": "1.0",
    "datasets": "3.0",
}


#: What a box without a GPU cannot do, said once (the cuda and cpu rows).
NEEDS_GPU = "7B LoRA/QLoRA, bitsandbytes 4-bit and DeepSpeed"
#: Seconds the hub gets to answer the hf-cache row's one HEAD request.
HUB_PROBE_S = 2.0
@dataclass
class Check:
    name: str
    status: str          # ok | warn | fail
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    gpus: list[GPU] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"checks": [c.to_dict() for c in self.checks], "gpus": [g.to_dict() for g in self.gpus]}

    @classmethod
    def from_dict(cls, d: dict) -> "Report":
        return cls([Check(**c) for c in d.get("checks", [])], [GPU(**g) for g in d.get("gpus", [])])

    @property
    def worst(self) -> str:
        statuses = {c.status for c in self.checks}
        return FAIL if FAIL in statuses else WARN if WARN in statuses else OK


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _vtuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


# --- individual checks -------------------------------------------------------------------

def check_python() -> list[Check]:
    v = platform.python_version()
    if sys.version_info < (3, 10):
        return [Check("python", FAIL, f"Python {v}", "use Python 3.10 or newer")]
    return [Check("python", OK, f"Python {v} ({sys.executable})")]


def check_torch_and_gpus(report: Report) -> list[Check]:
    out: list[Check] = []
    try:
        import torch
    except Exception as exc:
        return [Check("torch", FAIL, f"torch does not import: {exc}",
                      "install a CUDA build of torch that matches your driver (pytorch.org's selector)")]
    cuda_build = torch.version.cuda
    if cuda_build:
        out.append(Check("torch", OK, f"torch {torch.__version__}, CUDA {cuda_build} build"))
    else:
        out.append(Check("torch", WARN, f"torch {torch.__version__} is a CPU-only build",
                         "on a GPU box, install a CUDA build of torch that matches the driver "
                         "(pytorch.org's install selector); the CPU build is fine for `tuitune demo`"))

    nv = nvml()
    driver = None
    driver_cuda = None
    if nv is not None:
        try:
            driver = nv.nvmlSystemGetDriverVersion()
            driver = driver.decode() if isinstance(driver, bytes) else driver
            cv = nv.nvmlSystemGetCudaDriverVersion()
            driver_cuda = f"{cv // 1000}.{(cv % 1000) // 10}"
        except Exception:
            pass
    if driver:
        if cuda_build and driver_cuda and _vtuple(driver_cuda) < _vtuple(cuda_build)[:2]:
            out.append(Check("driver", FAIL,
                             f"NVIDIA driver {driver} supports CUDA up to {driver_cuda}, torch needs {cuda_build}",
                             f"update the NVIDIA driver, or install a torch build for CUDA {driver_cuda} or older"))
        else:
            out.append(Check("driver", OK, f"NVIDIA driver {driver} (CUDA {driver_cuda or '?'})"))
    else:
        out.append(Check("driver", WARN, "no NVIDIA driver found (NVML is not available)",
                         "on a GPU box, install the NVIDIA driver and check that `nvidia-smi` lists the GPUs"))

    available = False
    try:
        available = bool(torch.cuda.is_available())
    except Exception:
        available = False
    report.gpus = gpu_inventory() if (available or driver) else []
    if available and report.gpus:
        out.append(Check("cuda", OK, f"CUDA {cuda_build} available, {len(report.gpus)} GPU(s)"))
        for g in report.gpus:
            status, fix = OK, ""
            if _vtuple(g.capability) < (7, 0):
                status, fix = WARN, "compute capability below 7.0: no fast fp16 kernels; expect slow training"
            elif g.free_gib < 0.5 * g.total_gib:
                status, fix = WARN, "over half of its memory is in use: find the process with `nvidia-smi` and stop it"
            out.append(Check(f"gpu{g.index}", status,
                             f"{g.name}: {g.free_gib:.1f} of {g.total_gib:.1f} GiB free, compute {g.capability}", fix))
        try:
            bf16 = torch.cuda.is_bf16_supported()
        except Exception:
            bf16 = False
        if bf16:
            out.append(Check("bf16", OK, "bf16 supported"))
        else:
            out.append(Check("bf16", WARN, "this GPU has no bf16",
                             "use `precision: fp16` in the run config (`auto` picks it)"))
    else:
        if driver:  # a GPU box whose GPU torch cannot use: that is broken
            why = "torch is a CPU-only build" if not cuda_build else "torch cannot use CUDA"
            out.append(Check("cuda", FAIL, f"an NVIDIA driver is here but {why}: training would run on the CPU",
                             "install a torch build for this driver's CUDA (pytorch.org's selector); check "
                             "`nvidia-smi` and CUDA_VISIBLE_DEVICES"))
        else:  # a CPU box: small models train here (the cpu row says how fast), big ones need a GPU
            why = "torch is a CPU-only build" if not cuda_build else "no NVIDIA GPU or driver"
            out.append(Check("cuda", WARN, f"no CUDA GPU ({why}): training runs on the CPU, fine for small models "
                             f"such as the demo's SmolLM2-135M (see the cpu row); {NEEDS_GPU} need a GPU",
                             "for a 7B model, run tuitune on a GPU box (over SSH); there check `nvidia-smi`, "
                             "CUDA_VISIBLE_DEVICES and that torch is a CUDA build"))
        from tuitune.hardware import cpu_bf16_evidence

        cpu_bf16 = cpu_bf16_evidence()
        if cpu_bf16:
            out.append(Check("bf16", OK, f"no GPU; this CPU computes bf16 natively: {cpu_bf16}"))
        else:
            out.append(Check("bf16", WARN, "no GPU, and this CPU has no native bf16 (neither AMX nor AVX-512 bf16)",
                             "nothing to do for the demo; on a GPU box Ampere or newer has bf16"))
    return out


def check_precision() -> list[Check]:
    """What ``precision: auto`` picks on this machine, with the reason (the same function training uses)."""
    from tuitune.hardware import auto_precision

    precision, why = auto_precision()
    held = "" if precision == "fp32" else f" (a LoRA base is held in {precision}, trainable weights in fp32)"
    return [Check("precision", OK, f"auto picks {precision}: {why}{held}")]


def check_cpu_training(report: Report) -> list[Check]:
    """On a box without a usable GPU: how fast LoRA trains the demo's real model here, and what needs a GPU."""
    import torch

    if report.gpus or torch.cuda.is_available():
        return []
    from tuitune.hardware import auto_precision
    from tuitune.config.presets import get_preset
    from tuitune.vram.speed import cpu_lora_rate

    precision = auto_precision()[0]
    demo = get_preset("smol-demo")
    rate = cpu_lora_rate(precision, demo.data.max_length)
    tokens = demo.training.max_steps * demo.training.batch_size * demo.training.grad_accum * demo.data.max_length
    seconds = tokens / rate.tokens_per_s
    took = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    busy = f"; load average {load:.1f} on {cores} cores: other processes slow this down" if load > cores / 2 else ""
    detail = (f"LoRA trains the demo's SmolLM2-135M at about {rate.tokens_per_s:.0f} tokens/s here in {precision} "
              f"(estimated from its layers' matmuls, timed just now at {rate.gflops:.0f} GFLOP/s on "
              f"{torch.get_num_threads()} threads{busy}), so the smol-demo run ({tokens:,} tokens) takes about "
              f"{took}; a 7B model's LoRA would go at about {rate.tokens_per_s_7b:.1f} tokens/s: use a GPU for it")
    if seconds > 30 * 60:
        return [Check("cpu", WARN, detail, "this CPU is slow for training (or busy: another process may hold its "
                      "cores); the tiny demo model trains in seconds, bigger models need a GPU box")]
    return [Check("cpu", OK, detail)]


def check_bitsandbytes() -> list[Check]:
    """bitsandbytes' 4-bit round trip on each device (``tuitune.hardware.probe_bitsandbytes``)."""
    from tuitune.hardware import probe_bitsandbytes

    return [Check("bitsandbytes", *probe_bitsandbytes())]


def check_optional() -> list[Check]:
    out = []
    ds = _version("deepspeed")
    if ds:
        out.append(Check("deepspeed", OK, f"deepspeed {ds}"))
    else:
        out.append(Check("deepspeed", WARN, "not installed: ZeRO-2/3 and offload are unavailable",
                         "pip install 'tuitune[deepspeed]' (needed only for `distributed.deepspeed`)"))
    fa = _version("flash-attn") or _version("flash_attn")
    if fa:
        out.append(Check("flash-attn", OK, f"flash-attn {fa}"))
    else:
        out.append(Check("flash-attn", WARN, "not installed: attention uses torch's SDPA (works, uses more memory)",
                         "optional, on an Ampere+ GPU: pip install flash-attn --no-build-isolation"))
    return out


def check_libraries() -> list[Check]:
    out = []
    for dist, minimum in MIN_VERSIONS.items():
        v = _version(dist)
        if v is None:
            out.append(Check(dist, FAIL, "not installed", f"pip install '{dist}>={minimum}'"))
        elif _vtuple(v) < _vtuple(minimum):
            out.append(Check(dist, FAIL, f"{dist} {v} is older than {minimum}", f"pip install -U '{dist}>={minimum}'"))
        else:
            out.append(Check(dist, OK, f"{dist} {v}"))
    return out


def check_disk(workspace: Path) -> list[Check]:
    path = workspace
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free / GIB
    detail = f"{free:.0f} GiB free in {workspace}"
    if free < 5:
        return [Check("disk", FAIL, detail, "free space: checkpoints of a 7B LoRA run need ~5 GiB, a merge ~15 GiB")]
    if free < 50:
        return [Check("disk", WARN, detail, "a 7B run with merge needs ~30-50 GiB; free space or use another workspace")]
    return [Check("disk", OK, detail)]


def check_ram() -> list[Check]:
    import psutil
    vm = psutil.virtual_memory()
    detail = f"{vm.available / GIB:.0f} of {vm.total / GIB:.0f} GiB RAM available"
    if vm.available / GIB < 8:
        return [Check("ram", WARN, detail,
                      "loading a 7B model needs ~16 GiB of RAM at start; close other programs")]
    return [Check("ram", OK, detail)]


def check_hf_cache(timeout: float = HUB_PROBE_S) -> list[Check]:
    """The hub cache, and whether the hub is there: "online" only after it answered a HEAD request."""
    from tuitune.vram import hub_cache_dir, hub_offline, hub_unreachable

    cache = hub_cache_dir()
    if hub_offline():
        return [Check("hf-cache", OK, f"Hugging Face cache {cache}; hub offline as asked (HF_HUB_OFFLINE): "
                                      "models must be local or cached")]
    why = hub_unreachable(timeout)
    if why:
        return [Check("hf-cache", WARN, f"Hugging Face cache {cache}; hub not reachable (offline): models must be "
                                        f"local or cached ({why})",
                       "to download models, check the network, HF_ENDPOINT or a proxy (HTTPS_PROXY); or bring "
                       "model folders here by hand (`hf download ID --local-dir DIR` on a machine that reaches "
                       "the hub)")]
    from huggingface_hub import constants

    return [Check("hf-cache", OK, f"Hugging Face cache {cache}; hub online ({constants.ENDPOINT} answered)")]


def check_tmux() -> list[Check]:
    if shutil.which("tmux"):
        return [Check("tmux", OK, "tmux found (not needed: tuitune runs outlive the terminal by themselves)")]
    return [Check("tmux", WARN, "tmux not found; not needed, runs survive SSH drops on their own",
                  "optional: apt-get install tmux to keep your own shell across disconnects")]


def _workspace_configs(workspace: Path) -> list:
    """The workspace's run configs that load (configs/*.yaml); one that does not is `config check`'s business."""
    from tuitune.config import load_config
    from tuitune.errors import TuituneError

    out = []
    for path in sorted((workspace / "configs").glob("*.y*ml")):
        try:
            out.append((path.relative_to(workspace), load_config(path, workspace=workspace)))
        except (TuituneError, OSError):
            continue
    return out


def check_sends(workspace: Path) -> list[Check]:
    """What a run may send out of this machine, and whether each is on (issue 23: nothing leaves unasked):
    hub downloads, trackers that report to a hosted service, notifications, the libraries' telemetry."""
    from tuitune.train.tracking import tracking_env
    from tuitune.vram import hub_offline

    configs = _workspace_configs(workspace)
    rows = [Check("sends: hub", OK, "off: HF_HUB_OFFLINE is set, models come from local folders or the cache"
                  if hub_offline() else "on: a model given as a hub id (org/name) is downloaded from the hub")]
    hosted = [f"{path}: {line.split(': ', 1)[1]}" for path, cfg in configs
              for line in tracking_env(cfg.training.report_to, workspace / "runs" / "_", os.environ).lines
              if "reports to" in line]
    rows.append(Check("sends: trackers", OK, "on: " + "; ".join(hosted) if hosted else
                      "off: no config reports to a hosted tracker (trackers write files in the run folder)"))
    told = [f"{path} tells {', '.join(cfg.notify.urls)} ({', '.join(cfg.notify.events)})"
            for path, cfg in configs if cfg.notify.urls]
    rows.append(Check("sends: notify", OK, "on: " + "; ".join(told) if told else
                      "off: no config in configs/ has notify.urls"))
    asked = [str(path) for path, cfg in configs if cfg.notify.telemetry]
    rows.append(Check("sends: telemetry", OK, f"on in {', '.join(asked)} (notify.telemetry: true)" if asked else
                      "off: runs set HF_HUB_DISABLE_TELEMETRY=1 (TRL's usage pings) unless notify.telemetry asks"))
    return rows


def run_checks(workspace: str | Path = ".") -> Report:
    """Run every check. Never raises: a crashing check becomes a ``fail``."""
    report = Report()
    steps: list[tuple[str, Callable[[], list[Check]]]] = [
        ("python", check_python),
        ("torch", lambda: check_torch_and_gpus(report)),
        ("precision", check_precision),
        ("cpu", lambda: check_cpu_training(report)),
        ("bitsandbytes", check_bitsandbytes),
        ("optional", check_optional),
        ("libraries", check_libraries),
        ("disk", lambda: check_disk(Path(workspace).resolve())),
        ("ram", check_ram),
        ("hf-cache", check_hf_cache),
        ("tmux", check_tmux),
        ("sends", lambda: check_sends(Path(workspace).resolve())),
    ]
    for name, fn in steps:
        try:
            report.checks.extend(fn())
        except Exception as exc:  # a check must never take the diagnosis down with it
            report.checks.append(Check(name, FAIL, f"the check itself failed: {exc}",
                                       "report this as a tuitune bug with `tuitune env --json`"))
    return report


def run_checks_subprocess(workspace: str | Path = ".", timeout: float = 180) -> Report:
    """``run_checks`` in a child process, so a UI never imports torch or bitsandbytes itself."""
    proc = subprocess.run(
        [*python_cmd(), "-m", "tuitune", "-w", str(workspace), "env", "--json"],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Report([Check("doctor", FAIL, f"`tuitune env` failed: {last}", "run `tuitune env` in a shell to see why")])
    return Report.from_dict(json.loads(proc.stdout))
