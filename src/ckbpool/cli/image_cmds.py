"""``ckbpool image build|push``: the pool's container image, built by the product from the installed package.

The image name and base come from ``ckbpool.yaml`` (``images.pool``, ``images.pool_base``) when it exists, else
the defaults; ``CKBPOOL_IMAGE_POOL`` / ``CKBPOOL_IMAGE_POOL_BASE`` override them as they do for compose. The last
line on stdout is the machine-readable result (the image id, or the pushed ``name@sha256:...``), so scripts and CI
can capture it; progress goes to stderr.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..deploy.config import CONFIG_FILE_NAME, Images, load_config
from ..deploy.errors import DeployError
from ..deploy.image import BuiltImage, build_pool_image, build_step, push_image
from .deploy_cmds import ConfigOption, report_error

image_app = typer.Typer(no_args_is_help=True, help="The pool's container image (built locally, never pulled).")
console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def pool_image_settings(config_file: Path) -> tuple[str, str]:
    """(image name, base image): the environment overrides, else ckbpool.yaml when it exists, else defaults."""
    images = load_config(config_file).images if config_file.exists() else Images()
    name = os.environ.get("CKBPOOL_IMAGE_POOL") or images.pool
    base = os.environ.get("CKBPOOL_IMAGE_POOL_BASE") or images.pool_base
    return name, base


def build_with_progress(name: str, base: str, *, ca_bundle: Path | None = None, force: bool = False) -> BuiltImage:
    """Build (or reuse) the pool image, showing BuildKit's current step on a Rich status line."""
    with console.status(f"building {name} on {base}", spinner="dots") as status:

        def on_line(line: str) -> None:
            step = build_step(line, 90)
            if step:
                status.update(f"building {name}: {step}")

        built = build_pool_image(name, base=base, ca_bundle=ca_bundle, force=force, on_line=on_line)
    verb = "built" if built.built else "up to date"
    console.print(f"[green]{name}[/green] {verb}: {built.id}")
    return built


@image_app.command("build")
def build(
    config: ConfigOption = Path(CONFIG_FILE_NAME),
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="image name (default: images.pool)")] = None,
    base: Annotated[str | None, typer.Option(help="base image (default: images.pool_base)")] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(help="CA bundle for pip in the build (a BuildKit secret, never in a layer; default $PIP_CERT)"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="rebuild even when the image is up to date")] = False,
) -> None:
    """Build the pool image from this installed ckbpool (multi-stage: compiled on the image's own Python)."""
    try:
        name, default_base = pool_image_settings(config)
        built = build_with_progress(tag or name, base or default_base, ca_bundle=ca_bundle, force=force)
    except DeployError as exc:
        raise report_error(exc) from None
    out.print(built.id)


@image_app.command("push")
def push(
    to: Annotated[str, typer.Option("--to", help="your registry repository, e.g. registry.example.com/pool[:tag]")],
    config: ConfigOption = Path(CONFIG_FILE_NAME),
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="local image to push (default: images.pool)")] = None,
) -> None:
    """Push the built pool image to your registry; prints the reference by digest that hosts deploy."""
    try:
        name = tag or pool_image_settings(config)[0]
        with console.status(f"pushing {name} to {to}"):
            ref = push_image(name, to)
    except DeployError as exc:
        raise report_error(exc) from None
    console.print(f"[green]pushed[/green] {name} as {ref}")
    out.print(ref)
