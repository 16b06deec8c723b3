"""A real Kubernetes control plane for tests: etcd + kube-apiserver (+ controller-manager and scheduler) on
127.0.0.1, random ports, no node.

What it gives: the API server's own validation (OpenAPI schemas, server-side apply dry-run, admission,
Pod Security) and storage, so a Helm chart's manifests are checked by the component that would check them in a
cluster, and ``helm install`` / ``uninstall`` really create and delete objects. With ``with_controllers`` (and
the binaries built), kube-controller-manager makes the workloads' pods and kube-scheduler, finding no node,
leaves them Pending with its reason -- what the k8s target's ``status`` must report. No kubelet: no pod runs.

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
    "kube-apiserver": "bash scripts/k8s-deps.sh with CKBPOOL_K8S_APISERVER=1 (a Go build of k8s.io/kubernetes)",
    "helm": "bash scripts/k8s-deps.sh",
    "kubectl": "a kubectl client on PATH (or CKBPOOL_KUBECTL)",
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
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2.0) as response:
        return bool(response.status == 200)
