"""The project's fuzzer: mutated GGUF files (text and mmproj), malformed images and API misuse, each case
in its own child process with a memory cap and a timeout.

    python fuzz/run.py --cases 10000 [--kinds gguf-text,gguf-mmproj,image,api] [--seed 0] [--jobs 2]
                       [--mem-mb 1536] [--timeout 30] [--keep DIR] [--json REPORT]

Outcomes: `ok` (the input was accepted and used), `clean` (a clear error: AutoGLMError, ValueError, and
for API misuse TypeError), and the failures: `crash` (killed by a signal: abort, segfault...),
`hang` (past the timeout), `oom` (MemoryError past the cap), `error` (any other Python exception).
Exit status 1 if any case failed; with --keep each failing input is saved with its description.

Children are forked from this process after autoglm_gguf is imported (no threads run here yet), so a
case costs milliseconds of start-up. Seed files are tiny random-weight models converted on the spot.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases
from gguf_mutator import GGUFLayout, mutate

KINDS = ("gguf-text", "gguf-mmproj", "image", "api")
EXIT_OK, EXIT_CLEAN, EXIT_ERROR, EXIT_OOM = 0, 10, 11, 12


SEED_TYPES = (("f32", "f32"), ("q4_0", "f16"), ("f16", "q8_0"))


def make_seeds(directory: Path) -> dict[str, list[Path]]:
    """Tiny text GGUFs (f32, q4_0, f16) and mmprojs (f32, f16, q8_0) to mutate. Converted in a child
    process: native code that starts worker threads (the quantizer) must not run in the process that
    forks the cases."""
    seeds = {"gguf-text": [directory / f"text-{t}.gguf" for t, _ in SEED_TYPES],
             "gguf-mmproj": [directory / f"mmproj-{m}.gguf" for _, m in SEED_TYPES]}
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from autoglm_gguf._tiny.checkpoint import write_checkpoint
            from autoglm_gguf.convert import ConvertOptions, convert_checkpoint

            ckpt = write_checkpoint(directory / "ckpt")
            for (t, m), text, mm in zip(SEED_TYPES, seeds["gguf-text"], seeds["gguf-mmproj"]):
                convert_checkpoint(ckpt, ConvertOptions(outfile=text, outtype=t, mmproj_outfile=mm,
                                                        mmproj_outtype=m, force=True, progress=False))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise SystemExit("fuzz: could not make the seed files")
    return seeds


def _child(kind: str, payload, mem_mb: int, seeds, detail_path: Path) -> None:
    """In the forked child: cap memory, run the case, exit with its outcome code."""
    if mem_mb > 0:  # 0: no cap (AddressSanitizer reserves terabytes of address space for its shadow)
        resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    from autoglm_gguf.errors import AutoGLMError

    clean = (AutoGLMError, ValueError) + ((TypeError,) if kind == "api" else ())
    try:
        if kind == "gguf-text":
            cases.run_text(payload)
        elif kind == "gguf-mmproj":
            cases.run_mmproj(payload)
        elif kind == "image":
            cases.run_image(payload, str(seeds["gguf-mmproj"][0]))
        else:
            cases.run_api(payload, str(seeds["gguf-text"][0]))
        code = EXIT_OK
    except MemoryError:
        code = EXIT_OOM
    except clean:
        code = EXIT_CLEAN
    except KeyboardInterrupt:  # "progress raises" and friends may surface as interrupts: still clean
        code = EXIT_CLEAN
    except BaseException as e:
        code = EXIT_ERROR
        detail_path.write_text(f"{type(e).__name__}: {e}"[:2000])
    os._exit(code)


def _outcome(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "crash"
    code = os.WEXITSTATUS(status)
    return {EXIT_OK: "ok", EXIT_CLEAN: "clean", EXIT_OOM: "oom"}.get(code, "error")


def build_case(kind: str, i: int, rng: random.Random, seeds, layouts, work: Path):
    """(payload for the child, description, input bytes or None)."""
    if kind in ("gguf-text", "gguf-mmproj"):
        src = seeds[kind][i % len(seeds[kind])]
        data, what = mutate(layouts[src][0], layouts[src][1], rng)
        path = work / f"case-{i}.gguf"
        path.write_bytes(data)
        return str(path), f"{src.name}: {what}", data
    if kind == "image":
        data, what = cases.image_case(rng)
        return data, what, data
    return i, cases.MISUSES[i % len(cases.MISUSES)][0], None


def run_campaign(n_cases: int, kinds=KINDS, seed: int = 0, jobs: int = 2, mem_mb: int = 1536,
                 timeout: float = 30.0, keep: Path | None = None, log=print) -> dict:
    import autoglm_gguf._core  # noqa: F401 - imported before forking, so children start warm

    os.environ.setdefault("MALLOC_ARENA_MAX", "2")  # per-thread arenas would eat the address-space cap
    with tempfile.TemporaryDirectory(prefix="autoglm-fuzz-") as tmp:
        work = Path(tmp)
        (work / "seeds").mkdir()
        seeds = make_seeds(work / "seeds")
        layouts = {p: (p.read_bytes(), GGUFLayout(p.read_bytes())) for ps in seeds.values() for p in ps}
        rng = random.Random(seed)
        counts: dict[str, Counter] = {k: Counter() for k in kinds}
        findings: list[dict] = []
        running: dict[int, tuple] = {}
        t_start = time.monotonic()

        def reap() -> None:
            """Collect finished children; kill the ones past the timeout."""
            for pid, (kind, i, what, data, started) in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    if time.monotonic() - started > timeout:
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                        outcome = "hang"
                    else:
                        continue
                else:
                    outcome = _outcome(status)
                del running[pid]
                (work / f"case-{i}.gguf").unlink(missing_ok=True)  # thousands of cases: keep the disk free
                counts[kind][outcome] += 1
                err = work / f"case-{i}.err"
                detail = err.read_text() if err.exists() else ""
                err.unlink(missing_ok=True)
                if outcome in ("crash", "hang", "oom", "error"):
                    findings.append({"kind": kind, "case": i, "outcome": outcome, "what": what, "detail": detail})
                    log(f"FINDING {kind} case {i}: {outcome}: {what}" + (f" -> {detail}" if detail else ""))
                    if keep is not None and data is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        (keep / f"{kind}-{seed}-{i}.bin").write_bytes(data)
                        (keep / f"{kind}-{seed}-{i}.txt").write_text(f"{outcome}: {what}\n")

        for i in range(n_cases):
            kind = kinds[i % len(kinds)]
            payload, what, data = build_case(kind, i, rng, seeds, layouts, work)
            while len(running) >= jobs:
                reap()
                if len(running) >= jobs:
                    time.sleep(0.005)
            pid = os.fork()
            if pid == 0:
                _child(kind, payload, mem_mb, seeds, work / f"case-{i}.err")
            running[pid] = (kind, i, what, data, time.monotonic())
        while running:
            reap()
            time.sleep(0.005)
        elapsed = time.monotonic() - t_start
    report = {"cases": n_cases, "seed": seed, "mem_mb": mem_mb, "timeout_s": timeout, "seconds": round(elapsed, 1),
              "outcomes": {k: dict(v) for k, v in counts.items()}, "findings": findings}
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--mem-mb", type=int, default=1536, help="address-space cap per case (0: none, for ASan)")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        ap.error(f"unknown kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    report = run_campaign(args.cases, kinds, args.seed, args.jobs, args.mem_mb, args.timeout, args.keep)
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text)
    print(json.dumps({k: v for k, v in report.items() if k != "findings"}, indent=1))
    print(f"{len(report['findings'])} finding(s)")
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
