"""The project's container images, built with podman without any registry, cached by content.

``python -m testground.images build`` (what ``make images`` runs) builds ``localhost/voicefleet-{operator,agent,
offline}:<content hash>`` (and ``:dev``) from ``Dockerfile.*``. The content hash covers the Dockerfile, every file
its COPY lines take from the repository and the base image, so an unchanged tree builds nothing. The base is a build
argument: the official ``python:3.11.7-slim-bookworm`` for users, here by default a Debian bookworm base made with
mmdebstrap (no registry needed), itself cached by its recipe.

``python -m testground.images load --address SOCK`` imports them into containerd's ``k8s.io`` namespace.

podman runs with a private ``containers.conf`` (no CAP_SYS_RESOURCE here: ulimits at most the inherited ones; runc,
since crun refuses the hybrid cgroup layout) and ``--network=host`` for every build, so it never creates its
``cni-podman0`` bridge or iptables chains. Everything lives in podman's storage and ``<cache>/images``, outside the
repository.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testground import binaries
from testground.process import ComponentError

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_BASE = "python:3.11.7-slim-bookworm"
LOCAL = "local"  # --base value: the mmdebstrap base
REPOSITORY = "localhost/voicefleet-{name}"
DEV_TAG = "dev"
KEEP_BUILDS = 3  # content-addressed builds kept per image (worktrees sharing the machine each need theirs)
NAMES = ("operator", "agent", "offline")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CONTAINERS_CONF = """\
# voicefleet's podman: no CAP_SYS_RESOURCE on this machine, so rlimits may not exceed the inherited hard limits;
# crun 1.8 refuses hybrid cgroups (hugetlb on cgroup2): runc. No systemd: cgroupfs, events to a file.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
# The Debian base: python in /usr/local/bin and site-packages under /usr/local like the official slim image (`python3
# -m venv /usr/local`, without pip: the build stages bootstrap it with ensurepip, the images do not carry it); only
# the Essential packages (no apt: the operator and agent never install packages); merged /usr without usrmerge (it
# drags perl in); no docs, man pages, locales, glibc charset converters (gconv: Python and our libraries do their own
# encodings) or the stdlib parts nothing imports at run time (pydoc topics, lib2to3, test). libstdc++ for the wheels'
# C++ extensions (numpy, onnxruntime, livekit); apt brought it in minbase. The "apt" flavour adds apt for images that
# apt-get install.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libstdc++6")
BASE_FLAVOURS: dict[str, tuple[str, ...]] = {"slim": (), "apt": ("apt",)}
IMAGE_FLAVOURS = {"operator": "slim", "agent": "slim", "offline": "apt"}
MMDEBSTRAP_ARGS = (
    "--variant=essential",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*",
    '--customize-hook=chroot "$1" python3 -m venv --without-pip /usr/local',
    # after python3.11's postinst, which byte-compiles them
    '--customize-hook=cd "$1"/usr/lib/python3.11 && rm -rf pydoc_data lib2to3 test',
    '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log',
)
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)


@dataclass(frozen=True)
class Built:
    name: str
    ref: str  # localhost/voicefleet-NAME:HASH
    size: int  # bytes, as podman reports it
    seconds: float
    cached: bool

    @property
    def dev_ref(self) -> str:
        return f"{REPOSITORY.format(name=self.name)}:{DEV_TAG}"


def cache_dir() -> Path:
    return binaries.bin_dir().parent / "images"


def dockerfile(name: str) -> Path:
    return ROOT / f"Dockerfile.{name}"


def repository(name: str) -> str:
    return REPOSITORY.format(name=name)


def podman_env(base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for every podman call: the private containers.conf (written on first use)."""
    conf = cache_dir() / "containers.conf"
    if not conf.is_file() or conf.read_text() != CONTAINERS_CONF:
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(CONTAINERS_CONF)
    env = dict(os.environ if base_env is None else base_env)
    env["CONTAINERS_CONF"] = str(conf)
    return env


def podman(*args: str, capture: bool = True, timeout: float | None = None) -> str:
    """Run podman; a failure is a ComponentError carrying its output."""
    exe = shutil.which("podman")
    if exe is None:
        raise ComponentError("podman", "not on PATH: apt-get install podman (hack/system-deps.sh)")
    result = subprocess.run(
        [exe, *args],
        env=podman_env(),
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        text=True,
        timeout=timeout,
    )
    if result.returncode:
        detail = (result.stderr or "")[-4000:] if capture else "(output above)"
        raise ComponentError("podman", f"`podman {' '.join(args[:3])} …` exited {result.returncode}: {detail}")
    return result.stdout or ""


def exists(ref: str) -> bool:
    exe = shutil.which("podman") or "podman"
    return subprocess.run([exe, "image", "exists", ref], env=podman_env()).returncode == 0


def image_id(ref: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", ref).strip()


def image_size(ref: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", ref).strip())


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One build at a time on this machine (several test sessions may ask at once)."""
    path = cache_dir() / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _digest(parts: Sequence[str]) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def local_base(flavour: str = "slim") -> str:
    """The mmdebstrap base image of a flavour, built once per recipe (about a minute), then reused."""
    include = "--include=" + ",".join((*BASE_PACKAGES, *BASE_FLAVOURS[flavour]))
    recipe = _digest([BASE_SUITE, include, *MMDEBSTRAP_ARGS, *BASE_CHANGES])
    ref = f"localhost/voicefleet-base:{BASE_SUITE}-{flavour}-{recipe}"
    if exists(ref):
        return ref
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ComponentError("mmdebstrap", "not on PATH: apt-get install mmdebstrap (hack/system-deps.sh)")
    log = cache_dir() / f"mmdebstrap-{flavour}.log"
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="base-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        with log.open("w") as out:
            result = subprocess.run(
                [mmdebstrap, include, *MMDEBSTRAP_ARGS, BASE_SUITE, str(tar)], stdout=out, stderr=subprocess.STDOUT
            )
        if result.returncode:
            raise ComponentError("mmdebstrap", f"exited {result.returncode}", log)
        changes = [arg for change in BASE_CHANGES for arg in ("--change", change)]
        podman("import", *changes, str(tar), ref)
    return ref


def resolve_base(base: str, name: str) -> str:
    """The base image reference of image `name` for `base` (LOCAL or an image name), present in podman's storage."""
    if base == LOCAL:
        return local_base(IMAGE_FLAVOURS[name])
    if not exists(base):
        podman("pull", base, capture=False)
    return base


def copy_sources(name: str) -> list[str]:
    """Repository paths the Dockerfile's COPY lines take from the build context (not from another stage)."""
    sources: list[str] = []
    for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile(name).read_text(), re.M):
        *srcs, _dest = line.split()
        sources.extend(srcs)
    return sources


def _files(source: str) -> list[Path]:
    path = ROOT / source
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ComponentError(f"Dockerfile.{path.name}", f"COPY source {source} does not exist")
    return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def content_hash(name: str, base_id: str) -> str:
    """Hash of what goes into the image: the Dockerfile, the files its COPY lines take, the base image."""
    h = hashlib.sha256()
    h.update(dockerfile(name).read_bytes())
    h.update(base_id.encode())
    for source in copy_sources(name):
        for file in _files(source):
            h.update(str(file.relative_to(ROOT)).encode() + b"\0")
            h.update(file.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _stage_context(name: str, into: Path) -> None:
    """Only what the Dockerfile COPYs: the repository's .venv and test ground never reach the builder."""
    for source in copy_sources(name):
        for file in _files(source):
            target = into / file.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
    shutil.copy2(dockerfile(name), into / "Dockerfile")


def _build_args(name: str, base_ref: str, tags: Sequence[str], context: Path, target: str | None = None) -> list[str]:
    args = ["build", "--network=host", "--layers", "--pull=never", "--build-arg", f"BASE={base_ref}"]
    if HOST_CA_BUNDLE.is_file():
        # pip behind a TLS-intercepting proxy: the build sees the host's CA bundle, the image does not keep it
        args += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    if target:
        args += ["--target", target]
    for tag in tags:
        args += ["-t", tag]
    return [*args, "-f", str(context / "Dockerfile"), str(context)]


def _forget_older(name: str, keep: Sequence[str]) -> None:
    """Untag all but the newest KEEP_BUILDS builds of this image and of its dependency stage (their layers go with
    the prune). Several worktrees on one machine share podman's storage: each keeps its own recent builds."""
    for repo in (repository(name), f"{repository(name)}-deps"):
        listed = podman("images", "--sort", "created", "--format", "{{.Tag}}", "--filter", f"reference={repo}")
        tags = [tag for tag in listed.split() if tag not in (DEV_TAG, "<none>")]  # newest first
        stale = [f"{repo}:{tag}" for tag in tags[KEEP_BUILDS:] if f"{repo}:{tag}" not in keep]
        for ref in stale:  # one at a time: another worktree's build may untag the same old builds meanwhile
            try:
                podman("untag", ref)
            except ComponentError as error:
                if "tag not known" not in str(error):
                    raise


def _prune() -> None:
    """Remove dangling leftovers; another worktree's build in progress may hold some, which is not an error."""
    exe = shutil.which("podman") or "podman"
    subprocess.run([exe, "image", "prune", "--force"], env=podman_env(), capture_output=True)


def build_one(name: str, base_ref: str, *, verbose: bool = False) -> Built:
    started = time.monotonic()
    digest = content_hash(name, image_id(base_ref))
    ref = f"{repository(name)}:{digest}"
    dev = f"{repository(name)}:{DEV_TAG}"
    if exists(ref):
        podman("tag", ref, dev)
        return Built(name, ref, image_size(ref), time.monotonic() - started, cached=True)
    # The dependency stage is tagged so that the prune below keeps its layers: a source change re-runs only the
    # final COPY steps, not the dependency install (minutes for the agent).
    deps_key = [dockerfile(name).read_text(), (ROOT / "pyproject.toml").read_text(), image_id(base_ref)]
    deps = f"{repository(name)}-deps:{_digest(deps_key)}"
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=f"context-{name}-") as tmp:
        context = Path(tmp)
        _stage_context(name, context)
        quiet = [] if verbose else ["--quiet"]
        podman(*_build_args(name, base_ref, [deps], context, target="build"), *quiet, capture=not verbose)
        podman(*_build_args(name, base_ref, [ref, dev], context), *quiet, capture=not verbose)
    _forget_older(name, keep=[ref, dev, deps])
    return Built(name, ref, image_size(ref), time.monotonic() - started, cached=False)


def build(names: Sequence[str] = NAMES, base: str = LOCAL, *, verbose: bool = False) -> list[Built]:
    """Build (or find cached) the named images on `base`; returns them in order."""
    with _locked():
        built = [build_one(name, resolve_base(base, name), verbose=verbose) for name in names]
        if not all(b.cached for b in built):
            _prune()
    return built


def refs(names: Sequence[str] = NAMES, base: str = LOCAL) -> dict[str, str]:
    """name → content-addressed reference of each image for the current tree (builds what is missing)."""
    return {b.name: b.ref for b in build(names, base)}


def load(address: str | Path, images: Sequence[Built], namespace: str = "k8s.io") -> None:
    """Import the images into containerd at `address` under both their tags (for imagePullPolicy: Never)."""
    ctr = shutil.which("ctr")
    if ctr is None:
        raise ComponentError("ctr", "not on PATH: apt-get install containerd")
    for image in images:
        ref = image.ref
        save = subprocess.Popen(
            [shutil.which("podman") or "podman", "save", "--format", "docker-archive", ref],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=podman_env(),
        )
        imported = subprocess.run(
            [ctr, "-a", str(address), "-n", namespace, "images", "import", "-"],
            stdin=save.stdout,
            capture_output=True,
            text=True,
        )
        assert save.stdout is not None
        save.stdout.close()
        _out, save_err = save.communicate()
        if save.returncode:
            raise ComponentError("podman", f"save {ref} exited {save.returncode}: {save_err.decode()[-2000:]}")
        if imported.returncode:
            raise ComponentError("containerd", f"ctr import of {ref} exited {imported.returncode}: {imported.stderr}")
        tagged = subprocess.run(
            [ctr, "-a", str(address), "-n", namespace, "images", "tag", "--force", ref, image.dev_ref],
            capture_output=True,
            text=True,
        )
        if tagged.returncode:
            raise ComponentError("containerd", f"ctr tag {image.dev_ref} exited {tagged.returncode}: {tagged.stderr}")


class Container:
    """`podman run` of an image the way a pod runs it: uid 10001, read-only root, no capabilities, host network
    (no podman bridge), a tmpfs on /tmp. Output goes to `log`; the exit status is the container's."""

    def __init__(
        self,
        ref: str,
        args: Sequence[str] = (),
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        mounts: Mapping[str | Path, str] | None = None,
        user: str = "10001:10001",
        entrypoint: Sequence[str] | None = None,
    ) -> None:
        self.ref = ref
        self.entrypoint = list(entrypoint) if entrypoint is not None else None  # a pod's `command`
        self.args = list(args)
        self.log = log
        self.env = dict(env or {})
        self.mounts = dict(mounts or {})
        self.user = user
        self.name = f"voicefleet-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def argv(self) -> list[str]:
        argv = ["run", "--rm", "--name", self.name, "--network=host", "--user", self.user, "--read-only"]
        argv += ["--tmpfs", "/tmp:rw,size=256m", "--cap-drop=ALL", "--security-opt", "no-new-privileges"]
        for key, value in self.env.items():
            argv += ["--env", f"{key}={value}"]
        for source, target in self.mounts.items():
            argv += ["--volume", f"{source}:{target}:ro"]
        if self.entrypoint is not None:
            argv += ["--entrypoint", json.dumps(self.entrypoint)]
        return [*argv, self.ref, *self.args]

    def start(self) -> Container:
        exe = shutil.which("podman")
        if exe is None:
            raise ComponentError("podman", "not on PATH: apt-get install podman (hack/system-deps.sh)")
        with self.log.open("ab") as out:
            self.started = time.monotonic()
            self.proc = subprocess.Popen([exe, *self.argv()], env=podman_env(), stdout=out, stderr=subprocess.STDOUT)
        return self

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, grace: int = 10) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            exe = shutil.which("podman") or "podman"
            subprocess.run([exe, "stop", "--time", str(grace), self.name], env=podman_env(), capture_output=True)
            try:
                self.proc.wait(timeout=grace + 30)
            except subprocess.TimeoutExpired:
                subprocess.run([exe, "rm", "--force", self.name], env=podman_env(), capture_output=True)
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> Container:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def table(built: Sequence[Built]) -> str:
    rows = [f"{'image':<10} {'size MB':>8} {'seconds':>8}  {'':<6}  reference"]
    for b in built:
        rows.append(
            f"{b.name:<10} {b.size / 1e6:>8.0f} {b.seconds:>8.1f}  {'cached' if b.cached else 'built':<6}  "
            f"{b.ref} (also :{DEV_TAG})"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testground.images", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base",
        default=os.environ.get("VOICEFLEET_IMAGE_BASE", LOCAL),
        help=f"base image: '{LOCAL}' (mmdebstrap, no registry; the default) or e.g. {OFFICIAL_BASE}",
    )
    parser.add_argument("--only", action="append", choices=NAMES, help="only these images (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build what changed; print the images and their sizes")
    p_build.add_argument("--verbose", action="store_true", help="show podman's build output")
    p_load = sub.add_parser("load", help="build what changed, then import into containerd (namespace k8s.io)")
    p_load.add_argument("--address", required=True, help="containerd socket path")
    p_load.add_argument("--namespace", default="k8s.io")
    sub.add_parser("refs", help="print {name: reference} as JSON (builds what changed)")
    args = parser.parse_args(argv)
    names = tuple(args.only or NAMES)
    try:
        if args.command == "build":
            print(table(build(names, args.base, verbose=args.verbose)))
        elif args.command == "load":
            built = build(names, args.base)
            started = time.monotonic()
            load(args.address, built, args.namespace)
            print(
                f"imported {', '.join(b.ref for b in built)} into {args.address} in {time.monotonic() - started:.1f} s"
            )
        else:
            print(json.dumps({b.name: b.ref for b in build(names, args.base)}))
    except ComponentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
