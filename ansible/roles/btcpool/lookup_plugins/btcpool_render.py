"""btcpool_render: what one host of the inventory gets, rendered on the controller by the ckbpool package.

The role has no templates of its own: this lookup calls ``ckbpool.deploy.hostfiles``, which renders the same
jinja2 templates with the same context builders as ``ckbpool render``. The ckbpool package must be importable by
the Python that runs Ansible (``pip install ckbpool`` next to ansible-core).
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: btcpool_render
author: ckbpool maintainers
short_description: Render one host's ckbpool files (compose stack, configs, firewall) on the controller
description:
  - Returns one dictionary with C(ok); when ok, C(files) (path relative to the install directory -> text),
    C(services), C(profiles), C(secrets) (file names in btcpool_secrets_dir), C(published) (host ports),
    C(firewall) (nftables ruleset text), C(images) (each image the host's services run, with those services,
    as compose resolves it), C(pool_image) (btcpool_images.pool), C(kafka_admin) (on the broker's host of a
    secured bus, its bootstrap, processes and exporter, what the controller creates topics and ACLs for) and
    C(ckbpool_version); when not ok,
    C(problems), one line each,
    naming the btcpool_* variable or inventory group at fault.
options:
  settings:
    description: The btcpool_* variables that are keys of ckbpool.yaml.
    type: dict
    required: true
  secrets_dir:
    description: btcpool_secrets_dir (on the controller).
    type: path
    required: true
  groups:
    description: Inventory groups (name -> hosts).
    type: dict
    required: true
  addresses:
    description: Host -> btcpool_private_address.
    type: dict
    required: true
  inventory_addresses:
    description: Host -> private_ip, for hosts without btcpool_private_address (outside the play).
    type: dict
    default: {}
  ssh_addresses:
    description: >-
      Host -> ansible_host. Used only when one host carries everything; with more hosts each needs a private
      address and the lookup reports those without one.
    type: dict
    default: {}
  host:
    description: The host to render for.
    type: str
    required: true
  install_dir:
    description: btcpool_install_dir on that host.
    type: str
    required: true
  public_sources:
    description: btcpool_firewall_public_sources.
    type: list
    default: []
  admin_sources:
    description: btcpool_firewall_admin_sources.
    type: list
    default: []
  min_version:
    description: Least ckbpool version the controller must have.
    type: str
    default: "0"
"""

RETURN = r"""
_raw:
  description: One dictionary, see the description.
  type: list
  elements: dict
"""

import re

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

try:  # ansible-core >= 2.19 marks trust explicitly; before, lookup results were wrapped as unsafe
    from ansible.utils.unsafe_proxy import wrap_var
except ImportError:  # pragma: no cover
    wrap_var = None


def _plain(value):
    """Tagged Ansible containers -> plain Python (the ckbpool side validates with pydantic)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-([^}]*))?\}")


def host_images(files, services):
    """[{name, services}] of the images the host's compose services run, in compose.yaml's order.

    Resolved as compose resolves ``${CKBPOOL_IMAGE_X:-default}`` on the host: the role's environment sets no
    image variable, so the rendered ``.env`` decides, else the default. The role uses this to have every image
    on the host before ``up`` (so compose never pulls, and a failed pull names its image)."""
    import yaml

    env = {}
    for line in files.get("compose/.env", "").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            env[key.strip()] = value.strip()
    doc = yaml.safe_load(files["compose/compose.yaml"]) or {}
    found = {}
    for service in services:
        raw = str(((doc.get("services") or {}).get(service) or {}).get("image") or "")
        name = _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(3) or ""), raw)
        if name:
            found.setdefault(name, []).append(service)
    return [{"name": name, "services": users} for name, users in found.items()]


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        try:
            from pathlib import Path

            from ckbpool import __version__
            from ckbpool.deploy import hostfiles
            from ckbpool.deploy.errors import DeployError, SecretsError
        except ImportError as exc:
            raise AnsibleLookupError(
                "the btcpool role renders its files with the ckbpool Python package on the controller, "
                f"which this Ansible's Python cannot import ({exc}): pip install ckbpool next to ansible-core"
            ) from None
        result = {"ckbpool_version": __version__}
        problems = []
        from packaging.version import Version

        if Version(__version__) < Version(str(self.get_option("min_version"))):
            problems.append(
                f"btcpool_ckbpool_version: the controller has ckbpool {__version__}, "
                f"older than {self.get_option('min_version')} (pip install -U ckbpool)"
            )
        host = str(self.get_option("host"))
        try:
            config = hostfiles.config_from_role_vars(_plain(self.get_option("settings")))
            groups = {str(g): [str(h) for h in hs] for g, hs in _plain(self.get_option("groups")).items()}
            fallback = _plain(self.get_option("inventory_addresses"))
            given = _plain(self.get_option("addresses"))
            ssh = _plain(self.get_option("ssh_addresses"))
            addresses = {h: given.get(h) or fallback.get(h) or "" for h in {*given, *fallback}}
            placement = hostfiles.Placement.from_inventory(
                config, groups, addresses, fallback={h: ssh.get(h) or h for h in {*ssh, *addresses}}
            )
            secrets_dir = Path(str(self.get_option("secrets_dir"))).expanduser()
            # the certificates of what crosses hosts (Kafka, Redis, the RPC filter) name the addresses the
            # inventory gives: issued here on the controller when missing (under a lock: hosts render in parallel)
            hostfiles.ensure_host_secrets(config, placement, secrets_dir)
            plan = hostfiles.host_plan(
                config, placement, host, install_dir=str(self.get_option("install_dir")),
                controller_secrets_dir=secrets_dir,
            )
            firewall = hostfiles.render_firewall(
                config, plan, [str(s) for s in self.get_option("public_sources")],
                [str(s) for s in self.get_option("admin_sources")],
            )
            missing = [f for f in plan.secrets if not (secrets_dir / f).is_file()]
            if missing:
                problems.append(
                    f"btcpool_secrets_dir: {secrets_dir} lacks {', '.join(missing)} "
                    "(generate them with `ckbpool init`)"
                )
        except SecretsError as exc:
            problems.append(f"btcpool_secrets_dir: {exc}")
        except DeployError as exc:
            problems.extend(getattr(exc, "problems", None) or [str(exc)])
        except ValueError as exc:  # a firewall source that is not a network
            problems.append(f"btcpool_firewall_*_sources: {exc}")
        if problems:
            result.update(ok=False, problems=problems)
            return [result]
        result.update(
            ok=True,
            host=host,
            files=plan.files,
            services=plan.services,
            profiles=plan.profiles,
            secrets=plan.secrets,
            published=plan.published,
            firewall=firewall,
            images=host_images(plan.files, plan.services),
            pool_image=config.images.pool,
            pool_http=(
                {"address": config.bind.private, "port": config.ports.pool_http} if "pool" in plan.services else None
            ),
            # the Kafka host of a secured bus: topics and ACLs the controller creates as admin (no secret here)
            kafka_admin=plan.kafka_admin,
        )
        # the files hold `{{ ... }}` of their own (Prometheus alert templates): never template them again
        return [wrap_var(result) if wrap_var else result]
