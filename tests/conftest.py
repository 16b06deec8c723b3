"""Shared fixtures: a real ckb dev node provisioned by the product's own code (ckbpool.ckb.node)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ckbpool.ckb.devwallet import DEV_GENESIS_PRIVATE_KEY, DevKey
from ckbpool.ckb.install import CKB_VERSION, find_or_install_ckb
from ckbpool.ckb.node import CkbNode, NodeConfig
from support.redis import RedisServer

# This machine has two docker clients: Debian's engine client (/usr/bin/docker, builds with BuildKit on its own) and
# a newer one first on PATH without the buildx plugin. Every ckbpool command (and the tests' own docker calls, via
# ckbpool.deploy.image.docker_binary) then uses Debian's; an operator's machine picks its own with CKBPOOL_DOCKER.
if Path("/usr/bin/docker").exists():
    os.environ.setdefault("CKBPOOL_DOCKER", "/usr/bin/docker")


@pytest.fixture(scope="session")
def ckb_binary() -> Path:
    """The pinned ckb binary (built by `make deps`; built here on a cold cache, which takes long)."""
    explicit = os.environ.get("CKBPOOL_CKB_BINARY")
    return find_or_install_ckb(CKB_VERSION, Path(explicit) if explicit else None, allow_download=False)


@pytest.fixture(scope="session")
def dev_key() -> DevKey:
    return DevKey(DEV_GENESIS_PRIVATE_KEY)


def start_dev_node(binary: Path, data_dir: Path, key: DevKey, **overrides: object) -> CkbNode:
    config = NodeConfig.for_tests(data_dir, key.lock, die_with_parent=True, **overrides)
    node = CkbNode(config, binary)
    node.init(force=True)
    node.start()
    # own thread + loop, so this also works from inside an async test
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, node.wait_ready(timeout=60)).result()
    return node


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway redis-server of the test's own (a module that needs AOF or a wider scope defines its own)."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="module")
def dev_node(ckb_binary: Path, tmp_path_factory: pytest.TempPathFactory, dev_key: DevKey) -> Iterator[CkbNode]:
    """A fresh dev chain (Eaglesong PoW, difficulty 256) on free loopback ports, one per test module."""
    node = start_dev_node(ckb_binary, tmp_path_factory.mktemp("ckb"), dev_key)
    try:
        yield node
    finally:
        node.stop()


#: test files that use one machine-wide thing, by that thing: under ``pytest -n`` (make test) the files of one group
#: run one after another on one worker, beside the other files and the other group
MACHINE_WIDE = {
    # the docker engine and its images, the checkout's build/ for a wheel, a kubelet's iptables chains, nftables
    "engine": (
        "tests/e2e/",
        "tests/integration/test_hosts_images_engine.py",
        "tests/integration/test_wheel_ships_role_and_modules.py",
        "tests/unit/test_circleci.py",
        "tests/unit/test_image_contracts.py",
        "tests/unit/test_ansible_hostfiles.py",
    ),
    # terraform's and tofu's plugin cache
    "terraform": ("tests/integration/test_terraform_",),
}


def xdist_scope(nodeid: str) -> str:
    """The unit of work one xdist worker takes: a test file (module fixtures such as ``dev_node`` start once), or
    all the files of one :data:`MACHINE_WIDE` group together (they never overlap)."""
    path = nodeid.split("::", 1)[0]
    for group, prefixes in MACHINE_WIDE.items():
        if path.startswith(prefixes):
            return group
    return path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``pytest -n N`` (make test): xdist's scope scheduling with :func:`xdist_scope` as the scope, handed out
    in collection order: the machine-wide groups first (the longest units), then the files. (xdist's own ``--dist
    loadgroup`` marks do nothing with pytest 9.2, whose node ids are no longer the attribute it rewrites.)"""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # hand scopes out in collection order (see below), not by test count

    class FileScopeScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return FileScopeScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist (every worker collects the same order): the machine-wide groups' files first, in their group
    order, so the scheduler starts the longest units at once; a file's own order is kept (a stable sort)."""
    if not hasattr(config, "workerinput"):
        return
    rank = {group: i for i, group in enumerate(MACHINE_WIDE)}
    items.sort(key=lambda item: rank.get(xdist_scope(item.nodeid), len(rank)))
