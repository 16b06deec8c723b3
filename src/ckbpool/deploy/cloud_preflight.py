"""Cloud preflight: before Terraform creates anything, ask the cloud whether the deploy can succeed.

Checks, in order, each stopping the rest when it fails (a later check cannot run without the earlier one):
credentials valid -> region exists (and is enabled) -> image found -> instance types offered -> quota.
AWS through boto3, Alibaba Cloud through aliyun-python-sdk-core + aliyun-python-sdk-ecs. Both SDKs are imported
lazily, so the rest of ckbpool works without them.

``endpoint_url`` (AWS) points boto3 at another endpoint, e.g. a local moto server in tests; the Alibaba
checks take an injectable client for the same reason (no emulator exists for it).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import DeployError

#: EC2 "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances" vCPU quota.
AWS_STANDARD_VCPU_QUOTA = "L-1216C47A"
AWS_VPC_QUOTA = "L-F678F1CE"  # VPCs per region
AWS_STANDARD_FAMILIES = set("acdhimrtz")


@dataclass(frozen=True)
class Check:
    name: str  # credentials | region | image | instance_type | quota
    ok: bool | None  # None: could not be checked (shown, not fatal)
    detail: str


class PreflightFailed(DeployError):
    """A preflight check failed: nothing was created. ``str()`` is that check's one-line message."""

    exit_code = 2

    def __init__(self, cloud: str, check: Check, checks: Sequence[Check]) -> None:
        self.cloud = cloud
        self.check = check
        self.checks = list(checks)
        super().__init__(f"{cloud} preflight: {check.name}: {check.detail}")


@dataclass(frozen=True)
class AwsRequest:
    """What the deployment needs from AWS."""

    region: str
    instance_types: Mapping[str, int]  # type -> how many instances of it
    ami_id: str | None = None
    ami_owners: Sequence[str] = ("099720109477",)
    ami_name_filter: str = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
    endpoint_url: str | None = None


@dataclass
class PreflightReport:
    cloud: str
    checks: list[Check] = field(default_factory=list)
    account: str | None = None
    image_id: str | None = None

    def add(self, name: str, ok: bool | None, detail: str) -> Check:
        check = Check(name, ok, detail)
        self.checks.append(check)
        return check

    def fail(self, name: str, detail: str) -> PreflightFailed:
        return PreflightFailed(self.cloud, self.add(name, False, detail), self.checks)


# ------------------------------------------------------------------------------------------------------ AWS


def preflight_aws(request: AwsRequest, *, session: Any = None) -> PreflightReport:
    """Run the AWS checks; raise :class:`PreflightFailed` at the first failing one."""
    try:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DeployError(f"aws preflight needs boto3 (pip install boto3): {exc}") from None

    report = PreflightReport("aws")
    session = session or boto3.session.Session()
    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=10, read_timeout=30)

    def client(service: str, region: str | None = None) -> Any:
        return session.client(
            service, region_name=region or request.region, endpoint_url=request.endpoint_url, config=config
        )

    def error_text(exc: Exception) -> str:
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip()
        return str(exc)

    # credentials: STS answers for any valid key, whatever its permissions
    try:
        identity = client("sts").get_caller_identity()
    except NoCredentialsError:
        raise report.fail(
            "credentials",
            "no AWS credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
        ) from None
    except (ClientError, BotoCoreError) as exc:
        raise report.fail("credentials", f"AWS rejected the credentials ({error_text(exc)})") from None
    report.account = str(identity.get("Account"))
    report.add("credentials", True, f"account {report.account} ({identity.get('Arn', '')})")

    # region: asked in a region that always exists, so an unknown region gives a clear answer
    if not re.fullmatch(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}", request.region):
        raise report.fail("region", f"{request.region!r} is not an AWS region code (e.g. us-east-1)")
    try:
        regions = client("ec2", "us-east-1").describe_regions(AllRegions=True)["Regions"]
    except (ClientError, BotoCoreError) as exc:
        raise report.fail("region", f"cannot list regions ({error_text(exc)})") from None
    by_name = {r["RegionName"]: r for r in regions}
    if request.region not in by_name:
        near = ", ".join(sorted(n for n in by_name if n.split("-")[0] == request.region.split("-")[0])[:6])
        raise report.fail(
            "region", f"unknown region {request.region!r}" + (f" (did you mean one of: {near})" if near else "")
        )
    if by_name[request.region].get("OptInStatus") == "not-opted-in":
        raise report.fail("region", f"region {request.region} is not enabled for account {report.account}")
    report.add("region", True, request.region)

    ec2 = client("ec2")
    # image
    try:
        if request.ami_id:
            images = ec2.describe_images(ImageIds=[request.ami_id])["Images"]
        else:
            images = ec2.describe_images(
                Owners=list(request.ami_owners), Filters=[{"Name": "name", "Values": [request.ami_name_filter]}]
            )["Images"]
    except (ClientError, BotoCoreError) as exc:
        raise report.fail("image", f"cannot look up the image ({error_text(exc)})") from None
    images = [i for i in images if i.get("State", "available") == "available"]
    if not images:
        wanted = request.ami_id or f"{request.ami_name_filter} from owner(s) {', '.join(request.ami_owners)}"
        raise report.fail("image", f"no available image {wanted} in {request.region}")
    newest = max(images, key=lambda i: i.get("CreationDate", ""))
    report.image_id = newest["ImageId"]
    report.add("image", True, f"{newest['ImageId']} ({newest.get('Name', '')})")

    # instance types offered in the region
    types = sorted(request.instance_types)
    try:
        offered = {
            o["InstanceType"]
            for o in ec2.describe_instance_type_offerings(
                LocationType="region", Filters=[{"Name": "instance-type", "Values": types}]
            )["InstanceTypeOfferings"]
        }
    except (ClientError, BotoCoreError) as exc:
        raise report.fail("instance_type", f"cannot list instance type offerings ({error_text(exc)})") from None
    missing = [t for t in types if t not in offered]
    if missing:
        raise report.fail("instance_type", f"{', '.join(missing)} not offered in {request.region}")
    report.add("instance_type", True, ", ".join(types))

    # quota: vCPUs of standard on-demand instances, and VPCs
    try:
        info = ec2.describe_instance_types(InstanceTypes=types)["InstanceTypes"]
        vcpus = {i["InstanceType"]: int(i["VCpuInfo"]["DefaultVCpus"]) for i in info}
    except (ClientError, BotoCoreError, KeyError) as exc:
        report.add("quota", None, f"vCPU counts unavailable ({exc})")
        return report
    standard = {t: n for t, n in request.instance_types.items() if t.split(".")[0][:1] in AWS_STANDARD_FAMILIES}
    needed = sum(vcpus.get(t, 0) * n for t, n in standard.items())
    limits = _aws_quotas(client("service-quotas"), (AWS_STANDARD_VCPU_QUOTA, AWS_VPC_QUOTA))
    vcpu_limit = limits.get(AWS_STANDARD_VCPU_QUOTA)
    details = []
    if vcpu_limit is not None and needed:
        used = _aws_running_vcpus(ec2, vcpus)
        if used is not None and used + needed > vcpu_limit:
            raise report.fail(
                "quota",
                f"needs {needed} on-demand standard vCPUs, {used} of {vcpu_limit:g} in use in {request.region}: "
                f"request a quota increase ({AWS_STANDARD_VCPU_QUOTA}) or use smaller instances",
            )
        details.append(f"vCPUs {needed} needed, {used if used is not None else '?'} of {vcpu_limit:g} used")
    vpc_limit = limits.get(AWS_VPC_QUOTA)
    if vpc_limit is not None:
        vpcs = len(ec2.describe_vpcs().get("Vpcs", []))
        if vpcs + 1 > vpc_limit:
            raise report.fail(
                "quota", f"{vpcs} of {vpc_limit:g} VPCs in use in {request.region}: the deploy needs one more"
            )
        details.append(f"VPCs {vpcs} of {vpc_limit:g} used")
    if details:
        report.add("quota", True, "; ".join(details))
    else:
        report.add("quota", None, "service quotas not readable with these credentials; not checked")
    return report


def _aws_quotas(quotas: Any, codes: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for code in codes:
        service = "vpc" if code == AWS_VPC_QUOTA else "ec2"
        for getter in ("get_service_quota", "get_aws_default_service_quota"):
            try:
                value = getattr(quotas, getter)(ServiceCode=service, QuotaCode=code)["Quota"]["Value"]
            except Exception:  # unsupported, denied, or unknown: quota checks are best effort
                continue
            out[code] = float(value)
            break
    return out


def _aws_running_vcpus(ec2: Any, vcpus: Mapping[str, int]) -> int | None:
    try:
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
        )
        total = 0
        for page in pages:
            for reservation in page.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    cpu = inst.get("CpuOptions") or {}
                    if cpu:
                        total += int(cpu.get("CoreCount", 1)) * int(cpu.get("ThreadsPerCore", 1))
                    else:
                        total += vcpus.get(inst.get("InstanceType", ""), 2)
        return total
    except Exception:
        return None


# ------------------------------------------------------------------------------------------- Alibaba Cloud


@dataclass(frozen=True)
class AlicloudRequest:
    region: str
    instance_types: Mapping[str, int]
    image_id: str | None = None
    image_name_regex: str = r"^ubuntu_24_04_x64"
    disk_category: str = "cloud_essd"


AlicloudCall = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]


def alicloud_credentials() -> tuple[str | None, str | None]:
    """Access key from the variables the Terraform provider also reads."""
    key = os.environ.get("ALICLOUD_ACCESS_KEY") or os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    secret = os.environ.get("ALICLOUD_SECRET_KEY") or os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    return key, secret


class AlicloudApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")


def alicloud_sdk_call(region: str, access_key: str, secret: str) -> AlicloudCall:
    """An ``(action, params) -> response`` function over aliyun-python-sdk-core's ECS RPC API."""
    try:
        from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException  # type: ignore[import-untyped]
        from aliyunsdkcore.client import AcsClient  # type: ignore[import-untyped]
        from aliyunsdkcore.request import CommonRequest  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DeployError(
            f"alicloud preflight needs aliyun-python-sdk-core (pip install aliyun-python-sdk-core): {exc}"
        ) from None

    client = AcsClient(access_key, secret, region, timeout=30, connect_timeout=10, max_retry_time=2)

    def call(action: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        req = CommonRequest(domain="ecs.aliyuncs.com", version="2014-05-26", action_name=action)
        req.set_accept_format("json")
        req.set_method("POST")
        for key, value in params.items():
            req.add_query_param(key, value)
        try:
            body = client.do_action_with_exception(req)
        except ServerException as exc:
            raise AlicloudApiError(exc.get_error_code(), exc.get_error_msg()) from None
        except ClientException as exc:
            raise AlicloudApiError(exc.get_error_code(), exc.get_error_msg()) from None
        result: Mapping[str, Any] = json.loads(body)
        return result

    return call


def preflight_alicloud(request: AlicloudRequest, *, call: AlicloudCall | None = None) -> PreflightReport:
    """Run the Alibaba Cloud checks; raise :class:`PreflightFailed` at the first failing one."""
    report = PreflightReport("alicloud")
    if call is None:
        key, secret = alicloud_credentials()
        if not key or not secret:
            raise report.fail(
                "credentials",
                "no Alibaba Cloud access key found (set ALICLOUD_ACCESS_KEY and ALICLOUD_SECRET_KEY)",
            )
        call = alicloud_sdk_call(request.region, key, secret)

    # credentials + region: DescribeRegions needs a valid key and lists every region
    try:
        regions = call("DescribeRegions", {"AcceptLanguage": "en-US"})["Regions"]["Region"]
    except AlicloudApiError as exc:
        if exc.code.startswith(("InvalidAccessKeyId", "SignatureDoesNotMatch", "IncompleteSignature", "Forbidden")):
            raise report.fail("credentials", f"Alibaba Cloud rejected the access key ({exc})") from None
        raise report.fail("credentials", f"cannot reach the ECS API ({exc})") from None
    report.add("credentials", True, "access key accepted")
    region_ids = {r["RegionId"] for r in regions}
    if request.region not in region_ids:
        near = ", ".join(sorted(r for r in region_ids if r.split("-")[0] == request.region.split("-")[0])[:6])
        raise report.fail(
            "region", f"unknown region {request.region!r}" + (f" (did you mean one of: {near})" if near else "")
        )
    report.add("region", True, request.region)

    # image
    params: dict[str, Any] = {"RegionId": request.region, "PageSize": 100, "Status": "Available"}
    if request.image_id:
        params["ImageId"] = request.image_id
    else:
        params["ImageOwnerAlias"] = "system"
        params["OSType"] = "linux"
    images = call("DescribeImages", params).get("Images", {}).get("Image", [])
    if not request.image_id:
        images = [
            i for i in images if re.search(request.image_name_regex, i.get("ImageId", "") or i.get("ImageName", ""))
        ]
    if not images:
        wanted = request.image_id or f"a system image matching {request.image_name_regex}"
        raise report.fail("image", f"no available image {wanted} in {request.region}")
    newest = max(images, key=lambda i: i.get("CreationTime", ""))
    report.image_id = newest["ImageId"]
    report.add("image", True, newest["ImageId"])

    # instance types with stock in some zone of the region
    available = call(
        "DescribeAvailableResource",
        {
            "RegionId": request.region,
            "DestinationResource": "InstanceType",
            "InstanceChargeType": "PostPaid",
            "IoOptimized": "optimized",
            "SystemDiskCategory": request.disk_category,
        },
    )
    offered: set[str] = set()
    for zone in available.get("AvailableZones", {}).get("AvailableZone", []):
        for resource in zone.get("AvailableResources", {}).get("AvailableResource", []):
            for supported in resource.get("SupportedResources", {}).get("SupportedResource", []):
                if supported.get("Status") == "Available":
                    offered.add(supported.get("Value", ""))
    missing = [t for t in sorted(request.instance_types) if not any(fnmatch.fnmatch(o, t) for o in offered)]
    if missing:
        raise report.fail(
            "instance_type",
            f"{', '.join(missing)} not available (with {request.disk_category} disks) in {request.region}",
        )
    report.add("instance_type", True, ", ".join(sorted(request.instance_types)))

    # quota: pay-as-you-go vCPUs
    attrs = call(
        "DescribeAccountAttributes",
        {
            "RegionId": request.region,
            "AttributeName.1": "max-postpaid-instance-vcpu-count",
            "AttributeName.2": "used-postpaid-instance-vcpu-count",
        },
    )
    values: dict[str, float] = {}
    for item in attrs.get("AccountAttributeItems", {}).get("AccountAttributeItem", []):
        for v in item.get("AttributeValues", {}).get("ValueItem", []):
            with contextlib.suppress(TypeError, ValueError):
                values[item["AttributeName"]] = float(v.get("Value"))
    types = call(
        "DescribeInstanceTypes", {f"InstanceTypes.{i + 1}": t for i, t in enumerate(sorted(request.instance_types))}
    )
    cores = {
        t["InstanceTypeId"]: int(t.get("CpuCoreCount", 0))
        for t in types.get("InstanceTypes", {}).get("InstanceType", [])
    }
    needed = sum(cores.get(t, 0) * n for t, n in request.instance_types.items())
    limit, used = values.get("max-postpaid-instance-vcpu-count"), values.get("used-postpaid-instance-vcpu-count", 0.0)
    if limit is not None and needed and used + needed > limit:
        raise report.fail(
            "quota",
            f"needs {needed} pay-as-you-go vCPUs, {used:g} of {limit:g} in use in {request.region}: raise the quota",
        )
    report.add(
        "quota",
        True if limit is not None else None,
        f"vCPUs {needed} needed, {used:g} of {limit:g} used" if limit is not None else "vCPU quota not reported",
    )
    return report
