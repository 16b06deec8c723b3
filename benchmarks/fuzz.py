"""`make fuzz`: run every fuzz target of tests/fuzz/targets.py under atheris (libFuzzer) for a while.

    python -m benchmarks.fuzz --seconds 60                 # every target, 60 s each, one after the other
    python -m benchmarks.fuzz --seconds 10 --jobs 2        # CI: 10 s each, two targets at a time
    python -m benchmarks.fuzz --seconds 30 --target noise_transport --target frame_decoder
    python -m benchmarks.fuzz --target template_parser --reproduce build/fuzz/artifacts/template_parser-crash-...

Each target runs in its own process (atheris never returns from Fuzz()), instrumented over ``ckbpool`` and the
harness, with libFuzzer's guards: ``-timeout`` (one input taking longer is a hang), ``-rss_limit_mb`` (a frame
header announcing 16 MiB must not make us allocate it) and ``-max_total_time``. A corpus per target is kept in
``build/fuzz/corpus/<target>`` (seeded from ``targets.seeds``), crashing inputs land in ``build/fuzz/artifacts``.
The exit status is non-zero if any target crashed, hung, ran out of memory or did not run.

When atheris is not installed (or with ``--engine hypothesis``), each target is driven by hypothesis instead:
random and structured byte strings for the same number of seconds, without coverage feedback -- weaker, and the
summary says which engine ran.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
DEFAULT_OUT = ROOT / "build" / "fuzz"
TARGET_NAMES = (
    "frame_decoder",
    "message_decode",
    "noise_handshake",
    "noise_transport",
    "server_connection",
    "pool_session",
    "template_parser",
    "share_tlv_decode",
)


def _import_targets() -> Any:
    """tests/fuzz/targets.py, imported as ``fuzz.targets`` (the name the unit tests use)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from fuzz import targets

    return targets


def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


# --- worker: one target in this process ---------------------------------------------------------------------------


def _seed_corpus(targets: Any, name: str, corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    for seed in targets.seeds(name):
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


def run_atheris_worker(args: argparse.Namespace) -> None:
    import atheris

    with atheris.instrument_imports(include=["ckbpool", "fuzz"]):
        targets = _import_targets()
    name = args.worker
    target = targets.TARGETS[name]
    out: Path = args.out
    corpus = out / "corpus" / name
    artifacts = out / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    _seed_corpus(targets, name, corpus)
    argv = [
        sys.argv[0],
        f"-max_total_time={args.seconds}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_limit_mb}",
        f"-max_len={args.max_len}",
        f"-artifact_prefix={artifacts}/{name}-",
        "-print_final_stats=1",
        str(corpus),
    ]
    atheris.Setup(argv, target)
    atheris.Fuzz()  # exits the process


class _Hang(Exception):
    pass


def run_hypothesis_worker(args: argparse.Namespace) -> None:
    """No atheris: hypothesis generates the bytes; same time, hang and memory guards, no coverage feedback."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    targets = _import_targets()
    name = args.worker
    target = targets.TARGETS[name]
    artifacts: Path = args.out / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.seconds
    runs = 0

    def on_alarm(signum: int, frame: object) -> None:
        raise _Hang(f"one input ran for more than {args.timeout} s")

    signal.signal(signal.SIGALRM, on_alarm)
    seeds = targets.seeds(name)
    inputs = st.one_of(
        st.binary(max_size=args.max_len),
        st.sampled_from(seeds),
        st.builds(lambda s, b: s + b, st.sampled_from(seeds), st.binary(max_size=64)),
    )

    class _TimeUp(Exception):
        pass

    @settings(
        max_examples=10**9,
        deadline=None,
        database=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def loop(data: bytes) -> None:
        nonlocal runs
        if time.monotonic() > deadline:
            raise _TimeUp
        runs += 1
        signal.alarm(int(args.timeout))
        try:
            target(data)
        except BaseException:
            path = artifacts / f"{name}-crash-{hashlib.sha1(data).hexdigest()}"
            path.write_bytes(data)
            print(f"==FINDING== artifact: {path}", file=sys.stderr)
            traceback.print_exc()
            raise
        finally:
            signal.alarm(0)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        if rss_mb > args.rss_limit_mb:
            raise MemoryError(f"rss {rss_mb} MB exceeds {args.rss_limit_mb} MB")

    started = time.monotonic()
    try:
        loop()
    except _TimeUp:
        pass
    except Exception:
        sys.exit(1)
    elapsed = max(time.monotonic() - started, 1e-9)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"stat::number_of_executed_units: {runs}", file=sys.stderr)
    print(f"stat::average_exec_per_sec:     {int(runs / elapsed)}", file=sys.stderr)
    print(f"stat::peak_rss_mb:              {rss_mb}", file=sys.stderr)
    sys.exit(0)


def reproduce(args: argparse.Namespace) -> int:
    """Run one target on one input, outside any fuzzer, and show what it raises."""
    targets = _import_targets()
    if not args.target or len(args.target) != 1:
        print("--reproduce needs exactly one --target", file=sys.stderr)
        return 2
    data = Path(args.reproduce).read_bytes()
    targets.TARGETS[args.target[0]](data)
    print(f"{args.target[0]}: {args.reproduce} ({len(data)} bytes) ran without a finding")
    return 0


# --- driver: every target in its own process ------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    engine: str
    returncode: int
    seconds: float
    runs: int | None = None
    execs_per_s: int | None = None
    coverage: int | None = None
    corpus: int | None = None
    peak_rss_mb: int | None = None
    finding: str = ""
    log: Path | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.runs is not None


# how a worker's log says what it found (atheris prints "=== Timeout", libFuzzer "libFuzzer: timeout")
FINDING_MARKERS = ("=== Timeout", "libFuzzer: timeout", "out-of-memory", "Uncaught Python exception", "==FINDING==")


def _stat(text: str, pattern: str) -> int | None:
    matches = re.findall(pattern, text)
    return int(matches[-1]) if matches else None


def run_target(name: str, engine: str, args: argparse.Namespace) -> Result:
    logs: Path = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.fuzz",
        "--worker",
        name,
        "--engine",
        engine,
        "--seconds",
        str(args.seconds),
        "--timeout",
        str(args.timeout),
        "--rss-limit-mb",
        str(args.rss_limit_mb),
        "--max-len",
        str(args.max_len),
        "--out",
        str(args.out),
    ]
    started = time.monotonic()
    with log.open("w") as sink:
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, timeout=args.seconds + 120, check=False
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = -9
    text = log.read_text(errors="replace")
    result = Result(name, engine, code, time.monotonic() - started, log=log)
    result.runs = _stat(text, r"stat::number_of_executed_units:\s*(\d+)")
    result.execs_per_s = _stat(text, r"stat::average_exec_per_sec:\s*(\d+)")
    result.peak_rss_mb = _stat(text, r"stat::peak_rss_mb:\s*(\d+)")
    result.coverage = _stat(text, r"\bcov: (\d+)")
    result.corpus = _stat(text, r"\bcorp: (\d+)")
    if code != 0:
        for marker in FINDING_MARKERS:
            if marker in text:
                result.finding = marker
                break
        artifact = re.findall(r"(?:Test unit written to|artifact:) (\S+)", text)
        if artifact:
            result.finding += f" -> {artifact[-1]}"
        result.finding = result.finding or f"exit status {code}"
    elif result.runs is None:
        result.finding = "no statistics: the target did not run"
    return result


def _fmt(value: int | None) -> str:
    return "-" if value is None else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target (default 60)")
    parser.add_argument("--target", action="append", choices=TARGET_NAMES, help="only these targets (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at the same time (default 1)")
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it is a hang")
    parser.add_argument("--rss-limit-mb", type=int, default=1024, help="memory ceiling of a fuzzing process")
    parser.add_argument("--max-len", type=int, default=4096, help="longest input libFuzzer generates")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus, artifacts and logs (build/fuzz)")
    parser.add_argument("--reproduce", type=Path, help="run --target on this input file and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out = args.out.resolve()

    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _atheris_available() else "hypothesis"
    if args.worker:
        if engine == "atheris":
            run_atheris_worker(args)
        else:
            run_hypothesis_worker(args)
        return 0  # not reached: the workers exit
    if args.reproduce:
        return reproduce(args)
    if engine == "hypothesis" and args.engine == "auto":
        print("atheris is not installed: falling back to hypothesis-generated inputs (no coverage feedback)")

    names = args.target or list(TARGET_NAMES)
    print(f"fuzzing {len(names)} target(s) for {args.seconds} s each with {engine}, {args.jobs} at a time ...")
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda n: run_target(n, engine, args), names))

    header = f"{'target':<18} {'engine':<10} {'runs':>9} {'exec/s':>7} {'cov':>6} {'corpus':>6} {'rss MB':>6}  result"
    print(header)
    print("-" * len(header))
    for r in results:
        outcome = "ok" if r.ok else f"FAIL: {r.finding} (log {r.log})"
        print(
            f"{r.name:<18} {r.engine:<10} {_fmt(r.runs):>9} {_fmt(r.execs_per_s):>7} {_fmt(r.coverage):>6} "
            f"{_fmt(r.corpus):>6} {_fmt(r.peak_rss_mb):>6}  {outcome}"
        )
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"{len(failed)} target(s) failed; reproduce: python -m benchmarks.fuzz --target NAME --reproduce FILE")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
