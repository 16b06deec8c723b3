"""Directories that ship inside the package beside its code: the btcpool Ansible role (``ckbpool/ansible``) and the
Terraform modules (``ckbpool/terraform``). In a checkout they are links to the repository's ``ansible/`` and
``terraform/``; in a wheel they are copies, so an installed ckbpool deploys with the role and modules of its own
version. An environment variable points at another copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import TargetUnavailable

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def shipped_dir(name: str, env_var: str, markers: tuple[str, ...], missing: str) -> Path:
    """``$env_var`` when set, else ``ckbpool/<name>``: the first that holds every path in ``markers``.
    ``missing`` says what to do when neither does (the variable's name and what the directory must hold)."""
    explicit = os.environ.get(env_var)
    candidates = [Path(explicit)] if explicit else []
    candidates.append(PACKAGE_DIR / name)
    for candidate in candidates:
        if all((candidate / marker).exists() for marker in markers):
            return candidate.resolve()
    raise TargetUnavailable(f"{missing}; this ckbpool was installed without its ckbpool/{name} directory")
