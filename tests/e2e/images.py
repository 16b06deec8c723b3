"""Build the compose stack's images locally, FROM the debootstrap base image (no registry is reachable here).

    python -m tests.e2e.images [--base local/debian:bookworm] [name ...]

Each stand-in is tagged ``local/ckbpool-<name>:e2e`` and labelled with a digest of its inputs; an image whose label
matches is not rebuilt, so warm runs take a second. The stand-ins for the official images (docker/local/*.Dockerfile)
keep their interface: entrypoint, user, paths, healthcheck tools. The pool image is not a stand-in: it is built by
the product (``ckbpool.deploy.image``, what ``ckbpool image build`` and every deploy run) on the test base.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ckbpool.deploy.image import docker_binary

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("CKBPOOL_BASE_IMAGE", "local/debian:bookworm")
#: compose service variable -> image name
IMAGES = {
    "pool": "CKBPOOL_IMAGE_POOL",
    "ckb": "CKBPOOL_IMAGE_CKB",
    "redis": "CKBPOOL_IMAGE_REDIS",
    "prometheus": "CKBPOOL_IMAGE_PROMETHEUS",
    "node-exporter": "CKBPOOL_IMAGE_NODE_EXPORTER",
    "redis-exporter": "CKBPOOL_IMAGE_REDIS_EXPORTER",
    "kafka": "CKBPOOL_IMAGE_KAFKA",
    "postgres": "CKBPOOL_IMAGE_POSTGRES",
    "postgres-exporter": "CKBPOOL_IMAGE_POSTGRES_EXPORTER",
}
LABEL = "ckbpool.inputs"


def cache_dir() -> Path:
    return Path(os.environ.get("CKBPOOL_CACHE", Path.home() / ".cache" / "ckbpool"))


def tag(name: str) -> str:
    return f"local/ckbpool-{name}:e2e"


# run as a script (`python -m tests.e2e.images`) too: the same client choice as tests/conftest.py makes
if Path("/usr/bin/docker").exists():
    os.environ.setdefault("CKBPOOL_DOCKER", "/usr/bin/docker")


def docker() -> str:
    """The client the product itself runs (CKBPOOL_DOCKER, set by tests/conftest.py on this machine)."""
    return docker_binary()


def _digest(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if "__pycache__" in f.parts or f.suffix in (".so", ".pyc"):
                continue
            h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _current_label(image: str) -> str | None:
    out = subprocess.run(
        [docker(), "image", "inspect", "--format", f'{{{{ index .Config.Labels "{LABEL}" }}}}', image],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def _build(name: str, dockerfile: Path, context: Path, digest: str, base: str, log: Path) -> None:
    cmd = [
        docker(), "build", "-q", "-t", tag(name), "-f", str(dockerfile),
        "--build-arg", f"BASE={base}", "--label", f"{LABEL}={digest}", str(context),
    ]  # fmt: skip
    with log.open("w") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"docker build of {name} failed (log {log}):\n{tail}")


def kafka_libs() -> Path:
    """The broker jars scripts/kafka-deps.sh fetched, of the version deps/kafka/pom.xml pins (the pinned image's
    tag: tests/unit/test_pinned_versions.py), never whichever other version is still in the cache."""
    pom = (ROOT / "deps" / "kafka" / "pom.xml").read_text()
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    if not match:
        raise RuntimeError("no <kafka.version> in deps/kafka/pom.xml")
    libs = cache_dir() / f"kafka-{match.group(1).strip()}" / "libs"
    if not (libs / ".complete").is_file():
        raise RuntimeError(f"no complete Kafka jars in {libs}: run scripts/kafka-deps.sh (make deps does)")
    return libs


def build(names: list[str], base: str = BASE_IMAGE) -> dict[str, str]:
    """Build what is out of date; returns ``{compose variable: image}`` for the environment of compose."""
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {}
    for name in names:
        if name == "pool":
            # the product's own path (ckbpool.deploy.image): the image a deploy would build, on the test base;
            # deploy then finds it up to date. The variables point compose at it and at the same base.
            from ckbpool.deploy.image import DEFAULT_POOL_IMAGE, build_pool_image

            build_pool_image(DEFAULT_POOL_IMAGE, base=base)
            env["CKBPOOL_IMAGE_POOL_BASE"] = base
            env[IMAGES[name]] = DEFAULT_POOL_IMAGE
            continue
        dockerfile = ROOT / "docker" / "local" / f"{name}.Dockerfile"
        extra: list[Path] = []
        if name == "ckb":
            from ckbpool.ckb.install import find_or_install_ckb

            extra.append(find_or_install_ckb(allow_download=False))
        elif name == "kafka":
            # the jars and the scripts standing in for the image's (kafka-run.sh, kafka-run-class.sh, ...)
            extra += [kafka_libs(), *sorted(dockerfile.parent.glob("kafka-*.sh"))]
        elif name == "postgres":
            extra.append(dockerfile.parent / "postgres-entrypoint.sh")  # the official image's entrypoint, ours
        digest = _digest([dockerfile, *extra], base)
        if _current_label(tag(name)) != digest:
            with tempfile.TemporaryDirectory(prefix=f"ckbpool-{name}-image-") as ctx:
                for path in extra:
                    if path.is_dir():
                        shutil.copytree(path, Path(ctx) / path.name)
                    else:
                        shutil.copy2(path, Path(ctx) / path.name)
                _build(name, dockerfile, Path(ctx), digest, base, logs / f"image-{name}.log")
        env[IMAGES[name]] = tag(name)
    return env


def build_testing_image(image: str, dockerfile: Path) -> str:
    """An image of ansible/testing/ (test hosts), rebuilt only when its Dockerfile changed (label = its digest)."""
    digest = hashlib.sha256(dockerfile.read_bytes()).hexdigest()[:16]
    if _current_label(image) != digest:
        result = subprocess.run(
            [docker(), "build", "-q", "-t", image, "--label", f"{LABEL}={digest}", "-f", str(dockerfile),
             str(dockerfile.parent)],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"docker build of {image} failed:\n{result.stdout}{result.stderr}")
    return image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(IMAGES), help=f"images to build (default: {' '.join(IMAGES)})")
    parser.add_argument("--base", default=BASE_IMAGE)
    args = parser.parse_args()
    for key, image in build(args.names, args.base).items():
        print(f"{key}={image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
