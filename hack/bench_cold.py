"""`make bench-cold`: `make test` as a fresh machine runs it — a clean clone of HEAD with every cache empty.

Every cache outside the repository is redirected into a scratch directory for the run: pip's, npm's, Go's module
and build caches, voicefleet's binaries/images cache (HOME) and podman's image storage (CONTAINERS_STORAGE_CONF), so
nothing built or downloaded before is reused and the machine's own caches are left untouched. Debian packages cannot
be un-installed for the run: hack/system-deps.sh finds them present (its cold cost is a download of the packages it
lists). The phases of `make test` run one after the other (each make target once, as `make test` would) and are
timed; `--setup-only` stops before the suite (the setup phases are what a cold machine adds to a warm run). Prints
a table; the last line is JSON. Run it alone: it is minutes of CPU-bound builds.

    python3 hack/bench_cold.py [--setup-only] [--keep DIR] [--out bench-results/cold.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# In `make test`'s order; the last one runs the suite (its own prerequisites are then already made).
SETUP = ("venv", "system-deps", "bins", "page", "images", "crds-check", "lint", "typecheck")
STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{root}/storage"
runroot = "{root}/run"
"""


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cold_env(scratch: Path) -> dict[str, str]:
    home = scratch / "home"
    (home / ".config").mkdir(parents=True, exist_ok=True)  # --keep DIR may be a scratch directory used before
    # the machine's Go settings (GOFLAGS, GOTOOLCHAIN), not a cache
    user_go_env = Path.home() / ".config" / "go" / "env"
    if user_go_env.is_file():
        (home / ".config" / "go").mkdir(exist_ok=True)
        shutil.copy2(user_go_env, home / ".config" / "go" / "env")
    conf = scratch / "storage.conf"
    conf.write_text(STORAGE_CONF.format(root=scratch))
    # `make bench-cold ARGS=...` puts ARGS in MAKEFLAGS and the environment: the clone's own makes must not see it
    # (its `make test` passes ARGS to pytest)
    outer = ("VOICEFLEET_CACHE", "XDG_CACHE_HOME", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
             "ARGS")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in outer}
    env.update(
        HOME=str(home),
        GOPATH=str(home / "go"),
        GOMODCACHE=str(home / "go" / "pkg" / "mod"),
        GOCACHE=str(home / ".cache" / "go-build"),
        npm_config_cache=str(home / ".npm"),
        PIP_CACHE_DIR=str(home / ".cache" / "pip"),
        CONTAINERS_STORAGE_CONF=str(conf),
        CI="true",
    )
    return env


def run_phase(target: str, repo: Path, env: dict[str, str], log: Path) -> tuple[float, int, str, str]:
    before = load()
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"\n=== make {target} ({time.strftime('%H:%M:%S')}, load {before})\n")
        out.flush()
        rc = subprocess.run(["make", target], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    return time.monotonic() - started, rc, before, load()


def cleanup(scratch: Path) -> None:
    """Nothing of the run stays: unmount what a build left mounted under the scratch directory, then remove it."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(scratch))), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup-only", action="store_true", help="time the setup phases, not the suite")
    parser.add_argument("--keep", type=Path, help="scratch directory to use and keep (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "cold.json")
    args = parser.parse_args()

    scratch = args.keep or Path(tempfile.mkdtemp(prefix="voicefleet-cold-", dir="/var/tmp"))
    scratch.mkdir(parents=True, exist_ok=True)
    env = cold_env(scratch)
    repo = scratch / "repo"
    log = scratch / "make.log" if args.keep else ROOT / "bench-results" / "cold-make.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    phases: list[dict[str, object]] = []
    try:
        started = time.monotonic()
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
        phases.append({"phase": "git clone", "seconds": round(time.monotonic() - started, 1), "rc": 0})
        for target in (*SETUP, *(() if args.setup_only else ("test",))):
            seconds, rc, before, after = run_phase(target, repo, env, log)
            phases.append({"phase": f"make {target}", "seconds": round(seconds, 1), "rc": rc, "load": [before, after]})
            print(f"{'make ' + target:<18} {seconds:8.1f} s  rc={rc}  load {before} → {after}", flush=True)
            if rc:
                break
        total = time.monotonic() - started
    finally:
        if args.keep is None:
            cleanup(scratch)
    failed = [p["phase"] for p in phases if p["rc"]]
    print(f"\n{'phase':<18} {'seconds':>9}")
    for p in phases:
        print(f"{p['phase']:<18} {p['seconds']:>9}")
    print(f"{'total':<18} {total:9.1f}   ({total / 60:.1f} min; log: {log})")
    result = {
        "commit": head.strip(),
        "setup_only": args.setup_only,
        "total_s": round(total, 1),
        "setup_s": round(sum(float(str(p["seconds"])) for p in phases if p["phase"] != "make test"), 1),
        "phases": phases,
        "failed": failed,
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
