"""A real Kubernetes control plane for tests: etcd + kube-apiserver (+ controller-manager and scheduler) on
127.0.0.1, random ports, no node.

What it gives: the API server's own validation (OpenAPI schemas, server-side apply dry-run, admission,
Pod Security) and storage, so a Helm chart's manifests are checked by the component that would check them in a
cluster, and ``helm install`` / ``uninstall`` really create and delete objects. With ``with_controllers`` (and
the binaries built), kube-controller-manager makes the workloads' pods and kube-scheduler, finding no node,
leaves them Pending with its reason -- what the k8s target's ``status`` must report. No kubelet: no pod runs
-- unless a :class:`KubeNode` joins (containerd, kubelet, kube-proxy, CoreDNS on this machine; the e2e test).

Binaries: ``etcd`` (Debian's etcd-server), ``kube-apiserver``, ``kube-controller-manager``, ``kube-scheduler``
and ``helm`` (built by ``scripts/k8s-deps.sh`` into ``$CKBPOOL_CACHE/bin``), ``kubectl`` (the machine's). A
missing one makes :func:`require_tools` skip with the step that provides it.

Certificates are made here with ``cryptography``: a CA, the server's certificate for 127.0.0.1, an admin client
certificate (``O=system:masters``: every RBAC check passes) and the service-account signing key. The kubeconfig
carries the client certificate; nothing listens on anything but loopback, every wait is bounded, and every
process dies with the test process (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .kafka import child_guard, free_port

CACHE_BIN = Path(os.environ.get("CKBPOOL_CACHE", str(Path.home() / ".cache" / "ckbpool"))) / "bin"
#: what provides each tool (the skip message names it)
PROVIDERS = {
    "etcd": "apt-get install etcd-server (scripts/k8s-deps.sh does it as root)",
    "kube-apiserver": "make deps (scripts/k8s-deps.sh, unless CKBPOOL_K8S_APISERVER=0; Go-built k8s.io/kubernetes)",
    "helm": "bash scripts/k8s-deps.sh",
    "kubectl": "a kubectl client on PATH (or CKBPOOL_KUBECTL)",
    "kube-controller-manager": "make deps (scripts/k8s-deps.sh, unless CKBPOOL_K8S_APISERVER=0)",
    "kube-scheduler": "make deps (scripts/k8s-deps.sh, unless CKBPOOL_K8S_APISERVER=0)",
    "kubelet": "make deps (scripts/k8s-deps.sh, unless CKBPOOL_K8S_APISERVER=0; beside kube-apiserver)",
    "kube-proxy": "make deps (scripts/k8s-deps.sh, unless CKBPOOL_K8S_APISERVER=0; beside kube-apiserver)",
    "coredns": "make deps (scripts/k8s-deps.sh, unless CKBPOOL_K8S_APISERVER=0; CoreDNS, kubernetes plugin)",
    "containerd": "apt-get install containerd (Debian's 1.6, with its CRI plugin)",
    "ctr": "apt-get install containerd",
    "runc": "apt-get install runc",
    "iptables": "apt-get install iptables (kube-proxy's iptables mode)",
    "gcc": "apt-get install gcc libc6-dev (compiles docker/local/pause.c)",
}
START_TIMEOUT = 180.0  # kube-apiserver's first start installs its bootstrap objects; slow on a loaded machine


def find_tool(name: str) -> str | None:
    explicit = os.environ.get(f"CKBPOOL_{name.upper().replace('-', '_')}")
    if explicit:
        return explicit
    return shutil.which(name) or (str(CACHE_BIN / name) if (CACHE_BIN / name).exists() else None)


def require_tools(*names: str) -> dict[str, str]:
    """name -> path of each tool, or skip the test naming the first missing one and how to get it."""
    found: dict[str, str] = {}
    for name in names:
        path = find_tool(name)
        if path is None:
            pytest.skip(f"{name} is not installed: {PROVIDERS[name]}")
        found[name] = path
    return found


# ------------------------------------------------------------------------------------------------ PKI


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server_ips: tuple[str, ...] = (),
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usages = [x509.ExtendedKeyUsageOID.CLIENT_AUTH] if client else [x509.ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_ips:
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
        names.append(x509.DNSName("localhost"))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(common: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


# ------------------------------------------------------------------------------------------- the server


class KubeApiServer:
    HOST = "127.0.0.1"

    def __init__(self) -> None:
        tools = require_tools("etcd", "kube-apiserver", "kubectl")
        self.etcd_bin, self.apiserver_bin, self.kubectl_bin = tools["etcd"], tools["kube-apiserver"], tools["kubectl"]
        self.dir = Path(tempfile.mkdtemp(prefix="ckbpool-k8s-"))
        self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
        self.kubeconfig = self.dir / "kubeconfig"
        self.etcd: subprocess.Popen[bytes] | None = None
        self.apiserver: subprocess.Popen[bytes] | None = None
        self.controllers: list[subprocess.Popen[bytes]] = []
        self._write_pki()

    @property
    def url(self) -> str:
        return f"https://{self.HOST}:{self.port}"

    def _write_pki(self) -> None:
        pki = self.dir / "pki"
        pki.mkdir(mode=0o700)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate(_name("ckbpool-test-ca"), ca_key, None, ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _certificate(_name("kube-apiserver"), server_key, (ca.subject, ca_key), server_ips=(self.HOST,))
        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin = _certificate(
            _name("ckbpool-test-admin", "system:masters"), admin_key, (ca.subject, ca_key), client=True
        )
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = serialization.Encoding.PEM
        files = {
            "ca.crt": ca.public_bytes(pem),
            "server.crt": server.public_bytes(pem),
            "server.key": _pem_key(server_key),
            "admin.crt": admin.public_bytes(pem),
            "admin.key": _pem_key(admin_key),
            "sa.key": _pem_key(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo),
        }
        for name, data in files.items():
            (pki / name).write_bytes(data)
            (pki / name).chmod(0o600)
        b64 = {name: base64.b64encode(data).decode() for name, data in files.items()}
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "test", "cluster": {"server": self.url, "certificate-authority-data": b64["ca.crt"]}}
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {"client-certificate-data": b64["admin.crt"], "client-key-data": b64["admin.key"]},
                }
            ],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        }
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig))
        self.kubeconfig.chmod(0o600)

    def _ssl(self) -> ssl.SSLContext:
        pki = self.dir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return context

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout, context=self._ssl()) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def start(self, *, with_controllers: bool = False) -> KubeApiServer:
        etcd_url = f"http://{self.HOST}:{self.etcd_port}"
        peer_url = f"http://{self.HOST}:{self.etcd_peer_port}"
        self.etcd = subprocess.Popen(
            [
                self.etcd_bin, "--name", "test", "--data-dir", str(self.dir / "etcd"),
                "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"test={peer_url}", "--log-level", "warn",
                "--quota-backend-bytes", str(512 << 20),
            ],
            stdout=(self.dir / "etcd.log").open("wb"), stderr=subprocess.STDOUT, preexec_fn=child_guard(),
        )  # fmt: skip
        self._wait(lambda: _http_ok(f"{etcd_url}/health"), "etcd", self.etcd, self.dir / "etcd.log", 60.0)
        pki = self.dir / "pki"
        self.apiserver = subprocess.Popen(
            [
                self.apiserver_bin,
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.HOST}", f"--advertise-address={self.HOST}", f"--secure-port={self.port}",
                f"--cert-dir={self.dir / 'certs'}",
                f"--tls-cert-file={pki / 'server.crt'}", f"--tls-private-key-file={pki / 'server.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--service-node-port-range=30000-32767",
                "--storage-backend=etcd3",
                # the kubernetes Service's endpoints would be 127.0.0.1, which the reconciler refuses
                "--endpoint-reconciler-type=none",
                # `kubectl logs` through a kubelet (KubeNode): the API server presents the admin certificate
                f"--kubelet-client-certificate={pki / 'admin.crt'}", f"--kubelet-client-key={pki / 'admin.key'}",
                "--kubelet-preferred-address-types=InternalIP",  # the node's name resolves nowhere
                "--v=1",
            ],
            stdout=(self.dir / "apiserver.log").open("wb"), stderr=subprocess.STDOUT, preexec_fn=child_guard(),
        )  # fmt: skip
        self._wait(
            lambda: self.get("/readyz", timeout=3.0)[0] == 200,
            "kube-apiserver",
            self.apiserver,
            self.dir / "apiserver.log",
            START_TIMEOUT,
        )
        # the bootstrap controller makes `default` shortly after /readyz: wait for it, tests create in it
        self._wait(lambda: self.get("/api/v1/namespaces/default")[0] == 200, "namespace default", self.apiserver,
                   self.dir / "apiserver.log", 60.0)  # fmt: skip
        if with_controllers:
            self._start_controllers()
        return self

    @property
    def has_controllers(self) -> bool:
        return bool(self.controllers)

    def _start_controllers(self) -> None:
        """kube-controller-manager (Deployments -> ReplicaSets -> pods, StatefulSets -> pods, the namespaces'
        default ServiceAccount) and kube-scheduler (which finds no node and says so on each pod), when
        scripts/k8s-deps.sh built them; without them the workloads are stored but make no pods."""
        manager, scheduler = find_tool("kube-controller-manager"), find_tool("kube-scheduler")
        if manager is None or scheduler is None:
            return
        pki = self.dir / "pki"
        common = [f"--kubeconfig={self.kubeconfig}", f"--bind-address={self.HOST}", "--leader-elect=false", "--v=1"]
        for binary, args in (
            (manager, [
                f"--secure-port={free_port()}", f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}", "--controllers=*",
            ]),
            (scheduler, [f"--secure-port={free_port()}"]),
        ):  # fmt: skip
            log = self.dir / f"{Path(binary).name}.log"
            process = subprocess.Popen(
                [binary, *common, *args], stdout=log.open("wb"), stderr=subprocess.STDOUT, preexec_fn=child_guard()
            )
            self.controllers.append(process)
        # ready when the namespace controllers act: the default ServiceAccount of `default` exists
        self._wait(
            lambda: self.get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            "kube-controller-manager",
            self.controllers[0],
            self.dir / f"{Path(manager).name}.log",
            START_TIMEOUT,
        )

    def _wait(self, ready: object, what: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
        assert callable(ready)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log.read_text(errors="replace").splitlines()[-20:]
                raise RuntimeError(f"{what} exited ({process.returncode}):\n" + "\n".join(tail))
            with contextlib.suppress(OSError, ValueError):
                if ready():
                    return
            time.sleep(0.5)
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"{what} not ready within {timeout:.0f}s:\n" + "\n".join(tail))

    def kubectl(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def stop(self) -> None:
        for process in (*self.controllers, self.apiserver, self.etcd):
            _terminate(process, grace=20)
        shutil.rmtree(self.dir, ignore_errors=True)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2.0) as response:
        return bool(response.status == 200)


# ------------------------------------------------------------------------------------------------ a node

POD_SUBNET = "10.244.77.0/24"  # the bridge's pods; the Service range is the API server's 10.96.0.0/16
BRIDGE = "ckbk8s0"
NODE_NAME = "ckbpool-test-node"
#: the pod sandbox image containerd's CRI runs (docker/local/pause.Dockerfile), in place of registry.k8s.io/pause
PAUSE_IMAGE = "local/ckbpool-pause:e2e"


def node_problem() -> str | None:
    """Why this machine cannot run a kubelet node, or None: the tools, root (containerd, iptables and mounts
    need it) and a writable cgroup tree."""
    for name in ("kubelet", "kube-proxy", "coredns", "containerd", "ctr", "runc", "iptables", "gcc"):
        if find_tool(name) is None:
            return f"{name} is not installed: {PROVIDERS[name]}"
    if not Path("/usr/lib/cni/bridge").exists():
        return "no CNI plugins in /usr/lib/cni: apt-get install containernetworking-plugins"
    if os.geteuid() != 0:
        return "a kubelet node needs root (containerd, mounts, iptables, the pods' network)"
    if not os.access("/sys/fs/cgroup/memory", os.W_OK) and not os.access("/sys/fs/cgroup/cgroup.procs", os.W_OK):
        return "the cgroup tree is not writable: containerd cannot make the pods' cgroups"
    return None


class KubeNode:
    """A one-node cluster's node on this machine, for :class:`KubeApiServer`: Debian's containerd (CRI plugin,
    bridge CNI), a kubelet, kube-proxy in iptables mode and CoreDNS -- what a kubeadm node runs, minus the
    images a registry would give it (they are imported from the Docker engine instead).

    Shapes chosen for a container on cgroup v1 (kubelet 1.37 refuses v1 unless ``failCgroupV1: false``; no QoS
    cgroups, no node-allocatable enforcement) and for loopback-only testing: the pods' bridge ``ckbk8s0``
    (10.244.77.0/24) is host-internal; its gateway address is the node's address, where the kubelet, CoreDNS
    (the pods' cluster DNS, reading Services from the API like the in-cluster CoreDNS) and the NodePorts listen.
    kube-proxy masquerades all Service traffic (``masqueradeAll``), so a pod reaching a Service backed by a pod
    on the same bridge -- or by itself -- gets its replies back through the host's conntrack.

    Everything lives under one temporary directory (containerd's root and state, the kubelet's root and pod
    logs, the CNI IP allocations, hostPath PersistentVolumes); :meth:`stop` stops the pods through the kubelet,
    then the daemons, removes kube-proxy's iptables rules, unmounts what is left under that directory, deletes
    the bridge and the directory."""

    def __init__(self, cluster: KubeApiServer) -> None:
        problem = node_problem()
        if problem:
            pytest.skip(problem)
        self.cluster = cluster
        self.tools = {n: str(find_tool(n)) for n in ("kubelet", "kube-proxy", "coredns", "containerd", "ctr")}
        self.dir = Path(tempfile.mkdtemp(prefix="ckbpool-node-", dir="/tmp"))
        network = ipaddress.ip_network(POD_SUBNET)
        self.ip = str(network.network_address + 1)  # the bridge's (gateway) address: the node's address
        self.socket = self.dir / "containerd.sock"
        self.kubelet_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.bridge_made = False
        self.netns_before: set[str] = set()

    # -- start ---------------------------------------------------------------------------------------
    def start(self, images: list[str]) -> KubeNode:
        """containerd (with ``images`` imported from the Docker engine), the bridge, CoreDNS, kube-proxy and
        the kubelet; returns once the node is Ready and CoreDNS has synced with the API."""
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            raise RuntimeError(f"the bridge {BRIDGE} exists already: another test node runs on this machine")
        self.netns_before = set(_cni_netns())
        self._start_containerd()
        self.import_images([*images, self.pause_image()])
        self._make_bridge()
        self._start_coredns()
        self._start_kube_proxy()
        self._start_kubelet()
        self._wait(self._node_ready, "the kubelet (node Ready)", "kubelet", START_TIMEOUT)
        return self

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.dir / f"{name}.log"
        self.processes[name] = subprocess.Popen(
            args, stdout=log.open("wb"), stderr=subprocess.STDOUT, preexec_fn=child_guard(), cwd=self.dir
        )

    def _wait(self, ready: object, what: str, name: str, timeout: float) -> None:
        self.cluster._wait(ready, what, self.processes[name], self.dir / f"{name}.log", timeout)

    def _start_containerd(self) -> None:
        cni = self.dir / "cni"
        cni.mkdir()
        # one network: the bridge with the node's address as gateway, hairpin (a pod reaching itself through a
        # Service), host-local IPs stored here rather than in /var/lib/cni
        (cni / "10-ckbpool.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0",
            "name": "ckbpool-test",
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                "ipam": {
                    "type": "host-local", "dataDir": str(self.dir / "cni-ipam"),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": self.ip}]], "routes": [{"dst": "0.0.0.0/0"}],
                },
            }],
        }))  # fmt: skip
        config = self.dir / "containerd.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.dir / "containerd" / "root"}"\n'
            f'state = "{self.dir / "containerd" / "state"}"\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
            '[plugins."io.containerd.grpc.v1.cri"]\n'
            f'  sandbox_image = "{PAUSE_IMAGE}"\n'
            # this machine refuses a lower oom_score_adj than ours (the pause container's -998 makes runc's
            # init fail: "can't get final child's PID from pipe"); clamp to containerd's own, as rootless does
            "  restrict_oom_score_adj = true\n"
            '  [plugins."io.containerd.grpc.v1.cri".containerd]\n'
            '    snapshotter = "overlayfs"\n'
            '    default_runtime_name = "runc"\n'
            '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
            '      runtime_type = "io.containerd.runc.v2"\n'
            '  [plugins."io.containerd.grpc.v1.cri".cni]\n'
            '    bin_dir = "/usr/lib/cni"\n'
            f'    conf_dir = "{cni}"\n'
        )
        self._spawn("containerd", [self.tools["containerd"], "--config", str(config), "--log-level", "warn"])
        self._wait(lambda: self.ctr("version", check=False).returncode == 0, "containerd", "containerd", 60.0)

    def ctr(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.tools["ctr"], "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    @staticmethod
    def pause_image() -> str:
        """Build :data:`PAUSE_IMAGE` in the Docker engine from docker/local/pause.c (a static binary, compiled
        here: the image holds nothing else)."""
        from ckbpool.deploy.image import docker_binary

        root = Path(__file__).resolve().parents[2] / "docker" / "local"
        with tempfile.TemporaryDirectory(prefix="ckbpool-pause-") as ctx:
            subprocess.run(
                ["gcc", "-Os", "-static", "-o", f"{ctx}/pause", str(root / "pause.c")], check=True, timeout=120
            )
            shutil.copy2(root / "pause.Dockerfile", f"{ctx}/Dockerfile")
            result = subprocess.run(
                [docker_binary(), "build", "-q", "-t", PAUSE_IMAGE, ctx], capture_output=True, text=True, timeout=300
            )
            if result.returncode != 0:
                raise RuntimeError(f"docker build of {PAUSE_IMAGE} failed: {result.stderr.strip()}")
        return PAUSE_IMAGE

    def import_images(self, images: list[str]) -> None:
        """``docker save`` | ``ctr -n k8s.io images import``: the node then has them as a registry pull would
        leave them (unpacked for the overlayfs snapshotter), and the chart's ``IfNotPresent`` never pulls."""
        from ckbpool.deploy.image import docker_binary

        save = subprocess.Popen([docker_binary(), "save", *images], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert save.stdout is not None
        imported = subprocess.run(
            [self.tools["ctr"], "--address", str(self.socket), "--namespace", "k8s.io", "images", "import", "-"],
            stdin=save.stdout, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        save.stdout.close()
        saved = save.wait(timeout=60)
        if saved != 0 or imported.returncode != 0:
            error = (save.stderr.read().decode() if save.stderr else "") + imported.stderr
            raise RuntimeError(f"importing {images} into containerd failed: {error.strip()}")

    def _make_bridge(self) -> None:
        """The pods' bridge, made before any pod so that CoreDNS can listen on its address (the bridge CNI
        plugin adopts it)."""
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True, timeout=30)
        self.bridge_made = True
        prefix = ipaddress.ip_network(POD_SUBNET).prefixlen
        subprocess.run(["ip", "addr", "add", f"{self.ip}/{prefix}", "dev", BRIDGE], check=True, timeout=30)
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True, timeout=30)

    def _start_coredns(self) -> None:
        ready = free_port()
        corefile = self.dir / "Corefile"
        corefile.write_text(
            f".:53 {{\n  bind {self.ip}\n  errors\n  ready 127.0.0.1:{ready}\n"
            "  kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
            f"    kubeconfig {self.cluster.kubeconfig} test\n    pods insecure\n"
            "    fallthrough in-addr.arpa ip6.arpa\n  }\n  cache 5\n}\n"
        )
        self._spawn("coredns", [self.tools["coredns"], "-conf", str(corefile)])
        self._wait(lambda: _http_ok(f"http://127.0.0.1:{ready}/ready"), "CoreDNS", "coredns", 60.0)

    def _start_kube_proxy(self) -> None:
        config = self.dir / "kube-proxy.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.cluster.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": POD_SUBNET,
            "bindAddress": self.ip,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "iptables": {"masqueradeAll": True, "localhostNodePorts": False},
            # NodePorts on the node's (bridge) address only, never on the machine's real interfaces
            "nodePortAddresses": [f"{self.ip}/32"],
            # leave the host's conntrack sysctls alone (read-only in a container; nothing here needs them)
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }))  # fmt: skip
        self._spawn("kube-proxy", [self.tools["kube-proxy"], f"--config={config}", "--v=1"])

    def _start_kubelet(self) -> None:
        config = self.dir / "kubelet.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "authentication": {
                "anonymous": {"enabled": False}, "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.cluster.dir / "pki" / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},  # only the API server (admin certificate) reaches it
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            # cgroup v1 in a container: accepted explicitly, no QoS cgroups, nothing enforced on allocatable
            "failCgroupV1": False,
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "clusterDNS": [self.ip],
            "clusterDomain": "cluster.local",
            "podLogsDir": str(self.dir / "pod-logs"),
            # a shared test machine's disk is not this node's to guard: evict only when nearly full
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%", "imagefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
        }))  # fmt: skip
        self._spawn("kubelet", [
            self.tools["kubelet"], f"--config={config}", f"--kubeconfig={self.cluster.kubeconfig}",
            f"--root-dir={self.dir / 'kubelet'}", f"--cert-dir={self.dir / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={self.ip}", "--v=1",
        ])  # fmt: skip

    def _node_ready(self) -> bool:
        code, body = self.cluster.get(f"/api/v1/nodes/{NODE_NAME}")
        if code != 200:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    # -- storage -------------------------------------------------------------------------------------
    def persistent_volumes(self, claims: dict[str, int], *, namespace: str, storage_class: str) -> None:
        """Pre-made hostPath PersistentVolumes, one per StatefulSet claim (``namespace/name`` -> the uid of the
        pod that writes it): what a cluster without a provisioner needs. Each PV is bound ahead to its claim
        (``claimRef``) and its directory belongs to the pod's uid -- a hostPath is not chown'ed by ``fsGroup``."""
        for claim, uid in claims.items():
            path = self.dir / "volumes" / claim
            path.mkdir(parents=True)
            os.chown(path, uid, uid)
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"ckbpool-test-{claim}", "labels": {"ckbpool.dev/test-node": NODE_NAME}},
                "spec": {
                    "capacity": {"storage": "1Ti"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": storage_class,
                    "claimRef": {"namespace": namespace, "name": claim},
                    "hostPath": {"path": str(path), "type": "Directory"},
                },
            }
            manifest = self.dir / f"pv-{claim}.json"
            manifest.write_text(json.dumps(pv))
            self.cluster.kubectl("apply", "-f", str(manifest))

    # -- stop ----------------------------------------------------------------------------------------
    def _running_tasks(self) -> list[str]:
        result = self.ctr("tasks", "ls", "-q", check=False, timeout=30)
        return result.stdout.split() if result.returncode == 0 else []

    def stop(self) -> None:
        """Pods first (deleted through the API, so the kubelet stops them and the CNI releases their network),
        then the daemons; whatever is left is killed and unmounted, and the directory removed."""
        kubelet = self.processes.get("kubelet")
        if kubelet is not None and kubelet.poll() is None:
            for controller in self.cluster.controllers:  # else the ReplicaSets would make the pods again
                _terminate(controller)
            self.cluster.kubectl("delete", "pods", "--all", "--all-namespaces", "--wait=false", check=False)
            deadline = time.monotonic() + 90
            while self._running_tasks() and time.monotonic() < deadline:
                time.sleep(1)
        for name in ("kubelet", "kube-proxy", "coredns"):
            _terminate(self.processes.get(name))
        if self.processes.get("containerd") is not None and self.processes["containerd"].poll() is None:
            for task in self._running_tasks():  # what the kubelet did not stop in time
                self.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
            _terminate(self.processes.get("containerd"))
        _kill_shims(self.socket)
        if "kube-proxy" in self.processes:  # its KUBE-* chains and rules
            subprocess.run([self.tools["kube-proxy"], "--cleanup"], capture_output=True, timeout=60, check=False)
        _remove_kubelet_chains()
        # network namespaces of sandboxes the kubelet could not stop in time (the CRI names them cni-*)
        for netns in sorted(set(_cni_netns()) - self.netns_before):
            subprocess.run(["ip", "netns", "delete", netns], capture_output=True, timeout=30, check=False)
        _unmount_under(self.dir)
        if self.bridge_made:
            subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, timeout=30, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def _cni_netns() -> list[str]:
    netns = Path("/run/netns")
    return [p.name for p in netns.iterdir() if p.name.startswith("cni-")] if netns.is_dir() else []


def _terminate(process: subprocess.Popen[bytes] | None, grace: float = 30) -> None:
    """SIGTERM, ``grace`` seconds to exit, then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _kill_shims(socket: Path) -> None:
    """containerd-shim-runc-v2 processes of *this* containerd (their command line names its socket): they
    outlive containerd when a task was still running."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and str(socket).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), 9)


#: the chains a kubelet makes for itself (table -> chains), which no ``--cleanup`` removes
KUBELET_CHAINS = {
    "filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"),
    "nat": ("KUBE-KUBELET-CANARY",),
    "mangle": ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"),
}


def _remove_kubelet_chains() -> None:
    """Unhook and delete the kubelet's own chains (IPv4 and IPv6): its KUBE-FIREWALL would otherwise keep
    dropping non-loopback traffic to 127.0.0.0/8 on this machine after the test."""
    for tool in ("iptables", "ip6tables"):
        for hook in ("INPUT", "OUTPUT"):
            while subprocess.run([tool, "-t", "filter", "-D", hook, "-j", "KUBE-FIREWALL"],
                                 capture_output=True, timeout=30).returncode == 0:  # fmt: skip
                pass
        for table, chains in KUBELET_CHAINS.items():
            for chain in chains:
                subprocess.run([tool, "-t", table, "-F", chain], capture_output=True, timeout=30, check=False)
                subprocess.run([tool, "-t", table, "-X", chain], capture_output=True, timeout=30, check=False)


def _unmount_under(directory: Path) -> None:
    """Lazily unmount every mount point under ``directory`` (deepest first): the kubelet's Secret tmpfs and
    the containers' overlay roots when something was killed before it could clean up."""
    prefix = str(directory) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)


def stack_values_file(base: Path, name: str) -> Path:
    """values.yaml of a fresh ``init`` with every chart part on (proxy, Kafka, payouts, a registry), its secrets
    generated: what the chart tests render and install."""
    from typer.testing import CliRunner

    from ckbpool.cli.app import app
    from ckbpool.deploy.config import load_config
    from ckbpool.deploy.k8s import chart_values, dump_values
    from ckbpool.deploy.secrets import generate_secrets
    from ckbpool.deploy.target import Paths

    config = base / "ckbpool.yaml"
    result = CliRunner().invoke(
        app, ["init", "-c", str(config), "--non-interactive", "--name", name, "--network", "dev", "--no-miner"]
    )
    assert result.exit_code == 0, result.output
    cfg = load_config(config)
    cfg = cfg.model_copy(
        update={
            "services": cfg.services.model_copy(update={"proxy": True, "kafka": True}),
            "payouts": cfg.payouts.model_copy(update={"enabled": True}),
            "images": cfg.images.model_copy(update={"registry": "registry.example.com/ckbpool/pool"}),
        }
    )
    paths = Paths.of(config, cfg)
    generate_secrets(cfg, paths.secrets_dir)
    path = base / "values.yaml"
    path.write_text(dump_values(chart_values(cfg, paths)))
    return path
