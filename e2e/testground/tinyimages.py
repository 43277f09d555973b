"""Single-layer images made from static binaries on this machine, as docker-archive tars `ctr images import` reads.

The real node needs its sandbox image without a registry: `pause`, compiled by build.sh from the kubernetes module's
build/pause/linux/pause.c. Tests get a busybox image from Debian's busybox-static. Neither needs podman.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from testground import binaries
from testground.process import ComponentError

PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"  # what kubelet 1.34 and containerd's sandbox_image name
BUSYBOX_IMAGE = "localhost/voicefleet-busybox:1.35"
TOOLBOX_IMAGE = "localhost/voicefleet-toolbox:1.34"  # busybox + the cached static kubectl: an in-cluster API client
BUSYBOX = Path("/bin/busybox")  # Debian busybox-static


@dataclass(frozen=True)
class Image:
    name: str
    files: dict[str, tuple[bytes | str, int]]  # path -> (content, mode), or (symlink target str, 0)
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()


def pause_image() -> Image:
    pause = binaries.binary("pause")
    if not pause.is_file():
        raise ComponentError("pause image", f"{pause} is missing; run `python -m testground build kubelet`")
    return Image(PAUSE_IMAGE, {"pause": (pause.read_bytes(), 0o755)}, user="65535:65535", entrypoint=("/pause",))


def busybox_image() -> Image:
    if not BUSYBOX.is_file():
        raise ComponentError("busybox image", f"{BUSYBOX} is missing: apt-get install busybox-static")
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True).stdout
    files: dict[str, tuple[bytes | str, int]] = {"bin/busybox": (BUSYBOX.read_bytes(), 0o755)}
    for applet in applets.split():
        if applet != "bin/busybox":
            files[applet] = ("/bin/busybox", 0)
    return Image(BUSYBOX_IMAGE, files, cmd=("/bin/sh",))


def toolbox_image() -> Image:
    """busybox with kubectl, which speaks TLS 1.3 to the apiserver with the pod's in-cluster config (busybox's
    wget cannot: its TLS offers no cipher suite the apiserver accepts)."""
    kubectl = binaries.binary("kubectl")
    if not kubectl.is_file():
        raise ComponentError("toolbox image", f"{kubectl} is missing; run `python -m testground build helm`")
    files = {**busybox_image().files, "usr/local/bin/kubectl": (kubectl.read_bytes(), 0o755)}
    return Image(TOOLBOX_IMAGE, files, cmd=("/bin/sh",))


def _layer(image: Image) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = {"tmp"} | {str(parent) for p in image.files for parent in Path(p).parents if parent != Path(".")}
        for directory in sorted(dirs):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        for path, (content, mode) in sorted(image.files.items()):
            info = tarfile.TarInfo(path)
            if isinstance(content, str):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, content, 0o777
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), mode
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def docker_archive(image: Image) -> bytes:
    """The image as `docker save` writes it (manifest.json with RepoTags), so ctr keeps its name."""
    layer = _layer(image)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": image.user,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": list(image.entrypoint) or None,
            "Cmd": list(image.cmd) or None,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "testground.tinyimages"}],
    }, sort_keys=True).encode()  # fmt: skip
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [image.name], "Layers": [layer_name]}]).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in ((layer_name, layer), (config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
