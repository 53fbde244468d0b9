"""The ECS substrate against moto's server mode (a real HTTP endpoint speaking the AWS APIs).

moto runs no containers and no ECS schedulers: it stores task definitions, services,
Cloud Map namespaces and registries, and tasks, and answers the APIs about them. So these
tests check what the substrate asks AWS for and how it reads the answers; they play the
parts AWS would play: ECS's service scheduler (a task placed for a service, with the
service's group and deployment id), a task that fails to pull its image (a StopTask with
ECS's reason). Run tasks stay where they are (moto's state machine frozen) unless a test
lets moto walk a task through its lifecycle (one status per DescribeTasks, to STOPPED with
exit code 0). The parts that need a real AWS account (containers starting, health checks
passing, DNS answering) are not tested here.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tether.launcher.errors import (
    CodeServerStartError,
    LauncherError,
    LocationRefusedError,
    RunLaunchError,
)
from tether.launcher.policy import LocationPolicy, PolicyContext
from tether.launcher.substrate import WorkerRecord
from tether.launcher.userenv import UserCode, UserEnv
from tether.shared.wire.base import new_id
from tether.shared.wire.locations import EcsConfig, LocationConfig, location_config_hash
from tether.shared.wire.process import ExecuteRunArgs, argv_args, argv_location
from tether.shared.wire.work import LaunchRunPayload
from tether.testing import free_port, skip_or_fail

pytestmark = pytest.mark.integration

REGION = "us-east-1"
CLUSTER = "tether"
NAMESPACE = "tether.local"
AGENT = "agent-1"

FULL = EcsConfig(
    cpu="1024",
    memory="2048",
    task_role_arn="arn:aws:iam::123456789012:role/sales-etl",
    execution_role_arn="arn:aws:iam::123456789012:role/sales-etl-execution",
    secrets={"WAREHOUSE_PASSWORD": "arn:aws:secretsmanager:us-east-1:123456789012:secret:wh"},
    log_group="/tether/sales",
    tags={"team": "data"},
)


#: The policy of the agent these tests play: FULL's image, roles and secret.
POLICY = LocationPolicy(
    images=["registry.example.com/"],
    ecs_task_roles=[FULL.task_role_arn or ""],
    ecs_execution_roles=[FULL.execution_role_arn or ""],
    aws_secrets=["arn:aws:secretsmanager:us-east-1:123456789012:secret:*"],
)


def user_code(policy: LocationPolicy = POLICY) -> UserCode:
    """The launcher's policy and env builder for the ecs substrate (no launcher env)."""
    return UserCode(policy, PolicyContext(substrate="ecs"), source_env={"SECRET": "launcher"})


def env_of(loc: LocationConfig) -> UserEnv:
    """The location's container env as the substrate builds it."""
    return user_code().container_env(loc, {})


def location(**updates: object) -> LocationConfig:
    base = LocationConfig(
        name="Sales ETL",
        module="sales.defs",
        working_directory="/code",
        substrate="ecs",
        image="registry.example.com/sales:1.2",
        env={"WAREHOUSE": "prod"},
        ecs=FULL,
    )
    return base.model_copy(update=updates)


def run_args(loc: LocationConfig, **run: Any) -> ExecuteRunArgs:
    return ExecuteRunArgs(
        location=loc,
        run=LaunchRunPayload(run_id=new_id(), job_name="daily", **run),
        nats_url="nats://nats.tether.local:4222",
        traceparent=None,
    )


# --- pure: task definitions, overrides, task states -------------------------------------


def test_task_definitions_carry_the_location_and_launcher_settings() -> None:
    from tether.launcher.ecs import EcsSettings
    from tether.launcher.ecs._taskdefs import (
        TAG_AGENT,
        code_server_name,
        code_server_task_definition,
        content_hash,
        network_configuration,
        run_overrides,
        run_task_definition,
    )

    settings = EcsSettings(
        subnets=["subnet-a"], security_groups=["sg-a"], log_group="/tether/default", cpu="256"
    )
    loc = location()
    cs = code_server_task_definition(
        loc, settings, env_of(loc), image="img:1", python="python3", agent_id=AGENT, region=REGION
    )
    assert cs["networkMode"] == "awsvpc" and cs["requiresCompatibilities"] == ["FARGATE"]
    assert (cs["cpu"], cs["memory"]) == ("1024", "2048")  # the location's, not the launcher's
    assert cs["taskRoleArn"] == FULL.task_role_arn
    assert cs["executionRoleArn"] == FULL.execution_role_arn
    [container] = cs["containerDefinitions"]
    assert container["command"][:5] == [
        "python3",
        "-m",
        "tether.shared.runtime.cli",
        "codeserver",
        "grpc",
    ]
    assert LocationConfig.model_validate_json(container["command"][6]) == argv_location(loc)
    assert "prod" not in " ".join(container["command"])  # env values only in "environment"
    assert container["command"][-4:] == ["--host", "0.0.0.0", "--port", "4000"]
    assert container["portMappings"] == [{"containerPort": 4000, "protocol": "tcp", "name": "grpc"}]
    assert container["healthCheck"]["command"][:2] == ["CMD", "python3"]
    assert {"name": "WAREHOUSE", "value": "prod"} in container["environment"]
    assert container["secrets"] == [
        {"name": "WAREHOUSE_PASSWORD", "valueFrom": FULL.secrets["WAREHOUSE_PASSWORD"]}
    ]
    assert container["workingDirectory"] == "/code"
    assert container["logConfiguration"]["options"] == {
        "awslogs-group": "/tether/sales",
        "awslogs-region": REGION,
        "awslogs-stream-prefix": "tether",
    }
    assert {"key": "team", "value": "data"} in cs["tags"]
    assert {"key": TAG_AGENT, "value": AGENT} in cs["tags"]

    run = run_task_definition(
        LocationConfig(name="bare", module="m"),
        settings,
        UserEnv(),
        image="img:1",
        agent_id=AGENT,
        region=REGION,
        stop_grace_s=500,
    )
    [run_container] = run["containerDefinitions"]
    assert "command" not in run_container  # each RunTask overrides it
    assert run_container["stopTimeout"] == 120  # Fargate's maximum
    assert (run["cpu"], run["memory"]) == ("256", "1024")  # the launcher's defaults
    assert "taskRoleArn" not in run and "secrets" not in run_container
    assert run_container["logConfiguration"]["options"]["awslogs-group"] == "/tether/default"

    # Same content, same digest (tags aside); any change of the config, another digest.
    again = code_server_task_definition(
        loc, settings, env_of(loc), image="img:1", python="python3", agent_id=AGENT, region=REGION
    )
    assert content_hash(again) == content_hash(cs)
    changed = location(env={"WAREHOUSE": "staging"})
    assert content_hash(
        code_server_task_definition(
            changed,
            settings,
            env_of(changed),
            image="img:1",
            python="python3",
            agent_id=AGENT,
            region=REGION,
        )
    ) != content_hash(cs)
    assert location_config_hash(changed) != location_config_hash(loc)

    name = code_server_name(loc, AGENT)
    assert name.startswith("tether-cs-sales-etl-") and len(name) <= 63
    assert name != code_server_name(loc, "agent-2") != code_server_name(changed, AGENT)

    network = network_configuration(loc, settings)["awsvpcConfiguration"]
    assert network == {
        "subnets": ["subnet-a"],
        "securityGroups": ["sg-a"],
        "assignPublicIp": "DISABLED",
    }
    own = location(ecs=EcsConfig(subnets=["subnet-b"], assign_public_ip=True))
    assert network_configuration(own, settings)["awsvpcConfiguration"]["subnets"] == ["subnet-b"]

    args = run_args(loc)
    [override] = run_overrides(args, {"TRACEPARENT": "00-x"}, "python3")["containerOverrides"]
    assert override["name"] == "run" and override["command"][3:5] == ["api", "execute-run"]
    assert ExecuteRunArgs.model_validate_json(override["command"][5]) == argv_args(args)
    assert "prod" not in json.dumps(override)
    assert override["environment"] == [{"name": "TRACEPARENT", "value": "00-x"}]


def test_aws_secret_references_become_ecs_secrets_and_no_value_is_in_a_command() -> None:
    from tether.launcher.ecs import EcsSettings
    from tether.launcher.ecs._taskdefs import (
        code_server_task_definition,
        run_overrides,
        run_task_definition,
    )

    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db"
    loc = location(env={"WAREHOUSE": "prod", "DB_PASSWORD": f"${{aws-secret:{arn}}}"})
    settings = EcsSettings(subnets=["subnet-a"])
    env = env_of(loc)
    cs = code_server_task_definition(
        loc, settings, env, image="i", python="python3", agent_id=AGENT, region=REGION
    )
    run = run_task_definition(
        loc, settings, env, image="i", agent_id=AGENT, region=REGION, stop_grace_s=5
    )
    for body in (cs, run):
        [container] = body["containerDefinitions"]
        assert {"name": "DB_PASSWORD", "valueFrom": arn} in container["secrets"]
        names = [e["name"] for e in container["environment"]]
        assert names == ["WAREHOUSE"]  # the reference is no plain value
        assert "launcher" not in json.dumps(body)  # nothing of the launcher's environment
    overrides = run_overrides(run_args(loc), {"TRACEPARENT": "00-x"}, "python3")
    text = json.dumps(overrides)
    assert "prod" not in text and arn not in text and "aws-secret" not in text


@pytest.mark.parametrize(
    ("updates", "reason"),
    [
        (
            {"ecs": FULL.model_copy(update={"task_role_arn": "arn:aws:iam::1:role/admin"})},
            "task role 'arn:aws:iam::1:role/admin' is not allowed",
        ),
        (
            {"ecs": FULL.model_copy(update={"execution_role_arn": "arn:aws:iam::1:role/x"})},
            "execution role",
        ),
        (
            {"ecs": FULL.model_copy(update={"secrets": {"T": "arn:aws:ssm:us-east-1:1:p/t"}})},
            "not in the policy's aws_secrets",
        ),
        (
            {"env": {"T": "${aws-secret:arn:aws:ssm:eu-west-1:1:parameter/tether/agent}"}},
            "aws_secrets",
        ),
        ({"env": {"T": "${env:SECRET}"}}, "needs the process or docker substrate"),
        ({"image": "docker.io/evil:1"}, "image 'docker.io/evil:1' is not allowed"),
    ],
)
async def test_a_location_outside_the_policy_is_refused_and_nothing_is_registered(
    aws: Aws, closing: list[Any], updates: dict[str, object], reason: str
) -> None:
    loc = location(**updates)
    substrate = aws.substrate()
    closing.append(substrate)
    with pytest.raises(LocationRefusedError, match=reason):
        await substrate.start_code_server(loc)
    with pytest.raises(RunLaunchError, match=reason):
        await substrate.launch_run(run_args(loc), {})
    listed = await aws.call(aws.ecs.list_task_definitions)
    assert listed["taskDefinitionArns"] == []
    assert await aws.services() == []
    # By default only the launcher's configured roles: FULL's own are refused.
    default = aws.substrate(user_code=user_code(LocationPolicy(images=["registry."])))
    closing.append(default)
    with pytest.raises(LocationRefusedError, match="task role"):
        await default.launch_run(run_args(location()), {})


def test_describe_tasks_answers_map_to_alive_and_exit_codes() -> None:
    from tether.launcher.ecs._tasks import NO_EXIT_CODE, failures_message, task_state

    def task(last: str, **fields: Any) -> dict[str, Any]:
        return {"lastStatus": last, "desiredStatus": "RUNNING", **fields}

    for status in ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING"):
        state = task_state(task(status), "run")
        assert state.alive and state.exit_code is None, status
    # Being stopped (desired STOPPED) but still running: alive until ECS says STOPPED.
    assert task_state(task("RUNNING", desiredStatus="STOPPED"), "run").alive

    ended = task_state(
        task(
            "STOPPED",
            stopCode="EssentialContainerExited",
            stoppedReason="Essential container in task exited",
            containers=[
                {"name": "sidecar", "exitCode": 0},
                {"name": "run", "exitCode": 3, "lastStatus": "STOPPED"},
            ],
        ),
        "run",
    )
    assert not ended.alive and ended.exit_code == 3
    assert "EssentialContainerExited" in ended.reason

    stopped = task_state(
        task(
            "STOPPED",
            stopCode="UserInitiated",
            stoppedReason="Tether: run r terminated",
            containers=[{"name": "run", "exitCode": 143}],
        ),
        "run",
    )
    assert stopped.exit_code == 143 and "Tether: run r terminated" in stopped.reason

    # The container never ran: no exit code, the pull error as the reason.
    never = task_state(
        task(
            "STOPPED",
            stopCode="TaskFailedToStart",
            stoppedReason="CannotPullContainerError: pull image manifest has been retried",
            containers=[{"name": "run", "lastStatus": "STOPPED", "reason": "CannotPull..."}],
        ),
        "run",
    )
    assert never.exit_code == NO_EXIT_CODE and "CannotPullContainerError" in never.reason

    message = failures_message(
        [{"arn": "arn:aws:ecs:us-east-1:1:container-instance/x", "reason": "RESOURCE:MEMORY"}]
    )
    assert message == "arn:aws:ecs:us-east-1:1:container-instance/x: RESOURCE:MEMORY"
    assert failures_message([{"reason": "AGENT", "detail": "agent disconnected"}]) == (
        "AGENT (agent disconnected)"
    )


# --- moto in server mode ------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        import boto3  # noqa: F401
        import moto  # noqa: F401
    except ImportError as err:
        skip_or_fail(f"boto3 and moto[server] (dev dependencies): {err}")
    binary = Path(sys.executable).with_name("moto_server")
    executable = str(binary) if binary.exists() else shutil.which("moto_server")
    if executable is None:
        skip_or_fail("moto_server (moto[server], a dev dependency)")
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60  # a busy machine takes its time importing moto
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                skip_or_fail(f"moto_server did not start (see {log.name})")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


class Aws:
    """moto's endpoint, clients to look at what the substrate did, and the parts AWS plays."""

    def __init__(self, url: str) -> None:
        import boto3

        self.url = url
        kwargs = {
            "endpoint_url": url,
            "region_name": REGION,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        self.ecs = boto3.client("ecs", **kwargs)
        self.ec2 = boto3.client("ec2", **kwargs)
        self.sd = boto3.client("servicediscovery", **kwargs)
        # Cloud Map private DNS needs DNS hostnames in the VPC (and moto's ENIs do too).
        self.vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.ec2.modify_vpc_attribute(VpcId=self.vpc, EnableDnsHostnames={"Value": True})
        self.subnet = self.ec2.create_subnet(VpcId=self.vpc, CidrBlock="10.0.1.0/24")["Subnet"][
            "SubnetId"
        ]
        self.security_group = self.ec2.create_security_group(
            GroupName="tether-code-servers", Description="launcher -> code servers", VpcId=self.vpc
        )["GroupId"]
        self.ecs.create_cluster(clusterName=CLUSTER)

    def moto_api(self, path: str, body: dict[str, Any] | None = None) -> None:
        request = urllib.request.Request(
            f"{self.url}/moto-api/{path}",
            data=json.dumps(body or {}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def freeze_tasks(self) -> None:
        """Tasks keep their status until StopTask (moto moves no task on its own)."""
        self.moto_api(
            "state-manager/set-transition",
            {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 10**9}},
        )

    def let_tasks_progress(self) -> None:
        """moto's lifecycle: one status further per DescribeTasks, to STOPPED (exit code 0)."""
        self.moto_api(
            "state-manager/set-transition",
            {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1}},
        )

    def settings(self, **updates: Any):
        from tether.launcher.ecs import EcsSettings

        values: dict[str, Any] = {
            "cluster": CLUSTER,
            "region": REGION,
            "endpoint_url": self.url,
            "subnets": [self.subnet],
            "security_groups": [self.security_group],
            "namespace": NAMESPACE,
            "vpc_id": self.vpc,
            "log_group": "/tether/agent",
            "poll_interval_s": 0.05,
            "health_interval_s": 0.1,
        }
        values.update(updates)
        return EcsSettings(**values)

    def substrate(self, agent: str = AGENT, *, start_timeout_s: float = 30, **updates: Any):
        from tether.launcher.ecs import EcsSubstrate

        names = ("failed_tasks_limit", "orphan_age_s", "missing_grace_s")
        tuning = {k: updates.pop(k) for k in names if k in updates}
        tuning.setdefault("user_code", updates.pop("user_code", user_code()))
        return EcsSubstrate(
            agent_id=agent,
            settings=self.settings(**updates),
            python="python3",
            start_timeout_s=start_timeout_s,
            stop_grace_s=5,
            **tuning,
        )

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def services(self) -> list[dict[str, Any]]:
        """ACTIVE services of the cluster, with their tags."""
        arns = (await self.call(self.ecs.list_services, cluster=CLUSTER))["serviceArns"]
        if not arns:
            return []
        described = await self.call(
            self.ecs.describe_services, cluster=CLUSTER, services=arns, include=["TAGS"]
        )
        return [s for s in described["services"] if s["status"] == "ACTIVE"]

    async def service_names(self) -> set[str]:
        return {s["serviceName"] for s in await self.services()}

    async def registries(self) -> dict[str, dict[str, Any]]:
        """Cloud Map services by name."""
        listed = await self.call(self.sd.list_services)
        return {s["Name"]: s for s in listed["Services"]}

    async def task(self, arn: str) -> dict[str, Any]:
        described = await self.call(
            self.ecs.describe_tasks, cluster=CLUSTER, tasks=[arn], include=["TAGS"]
        )
        [task] = described["tasks"]
        return task

    async def wait_for_service(self, name: str) -> dict[str, Any]:
        async with asyncio.timeout(30):
            while True:
                for svc in await self.services():
                    if svc["serviceName"] == name:
                        return svc
                await asyncio.sleep(0.05)

    async def place_task(self, name: str) -> str:
        """Play ECS's service scheduler: start a task for service ``name``."""
        svc = await self.wait_for_service(name)
        [deployment] = svc["deployments"]
        placed = await self.call(
            self.ecs.run_task,
            cluster=CLUSTER,
            taskDefinition=svc["taskDefinition"],
            launchType="FARGATE",
            networkConfiguration=svc["networkConfiguration"],
            group=f"service:{name}",
            startedBy=deployment["id"],
        )
        return placed["tasks"][0]["taskArn"]


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Aws:
    # The substrate takes credentials from the standard chain: the environment here.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    request = urllib.request.Request(f"{moto_url}/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    aws = Aws(moto_url)
    aws.freeze_tasks()
    return aws


@pytest.fixture
async def closing() -> AsyncIterator[list[Any]]:
    """Substrates to close after the test, whatever it did."""
    substrates: list[Any] = []
    yield substrates
    for substrate in substrates:
        await substrate.aclose()


async def test_task_definitions_are_registered_once_per_content(
    aws: Aws, closing: list[Any]
) -> None:
    from tether.launcher.ecs._taskdefs import (
        ROLE_RUN,
        TAG_CONTENT,
        content_hash,
        family,
        run_task_definition,
    )

    loc = location()
    first = aws.substrate()
    closing.append(first)
    await first.launch_run(run_args(loc), {})
    await first.launch_run(run_args(loc), {})
    name = family(ROLE_RUN, loc, AGENT)

    async def revisions() -> list[str]:
        listed = await aws.call(aws.ecs.list_task_definitions, familyPrefix=name)
        return listed["taskDefinitionArns"]

    assert len(await revisions()) == 1
    # A new launcher finds the same content by its digest tag instead of registering it.
    second = aws.substrate()
    closing.append(second)
    await second.launch_run(run_args(loc), {})
    assert len(await revisions()) == 1

    changed = location(env={"WAREHOUSE": "staging"})
    await second.launch_run(run_args(changed), {})
    arns = await revisions()
    assert len(arns) == 2 and arns[-1].endswith(":2")

    found = await aws.call(aws.ecs.describe_task_definition, taskDefinition=name, include=["TAGS"])
    definition = found["taskDefinition"]
    assert definition["networkMode"] == "awsvpc"
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    assert (definition["cpu"], definition["memory"]) == ("1024", "2048")
    assert definition["taskRoleArn"] == FULL.task_role_arn
    assert definition["executionRoleArn"] == FULL.execution_role_arn
    [container] = definition["containerDefinitions"]
    assert container["image"] == "registry.example.com/sales:1.2"
    assert {"name": "WAREHOUSE", "value": "staging"} in container["environment"]
    assert container["logConfiguration"]["options"]["awslogs-group"] == "/tether/sales"
    assert container["stopTimeout"] == 5
    expected = run_task_definition(
        changed,
        aws.settings(),
        env_of(changed),
        image=changed.image or "",
        agent_id=AGENT,
        region=REGION,
        stop_grace_s=5,
    )
    tags = {t["key"]: t["value"] for t in found["tags"]}
    assert tags[TAG_CONTENT] == content_hash(expected)
    assert tags["team"] == "data" and tags["tether:role"] == "run"


async def test_code_server_is_a_discovered_service_adopted_replaced_and_removed(
    aws: Aws, closing: list[Any]
) -> None:
    from tether.launcher.ecs._taskdefs import (
        TAG_AGENT,
        TAG_CONFIG,
        code_server_name,
    )

    loc = location()
    name = code_server_name(loc, AGENT)
    first = aws.substrate()
    closing.append(first)
    start = asyncio.create_task(first.start_code_server(loc))
    await aws.place_task(name)
    handle = await start
    assert handle.address == f"{name}.{NAMESPACE}:4000"
    assert first.code_server_alive(handle)

    [svc] = await aws.services()
    assert svc["serviceName"] == name and svc["desiredCount"] == 1
    tags = {t["key"]: t["value"] for t in svc["tags"]}
    assert tags[TAG_CONFIG] == location_config_hash(loc) and tags[TAG_AGENT] == AGENT
    assert svc["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == [aws.subnet]
    # Discovery: a Cloud Map service of the same name in the namespace, created in the VPC.
    registries = await aws.registries()
    assert svc["serviceRegistries"] == [{"registryArn": registries[name]["Arn"]}]
    [namespace] = (await aws.call(aws.sd.list_namespaces))["Namespaces"]
    assert namespace["Name"] == NAMESPACE and namespace["Type"] == "DNS_PRIVATE"
    definition = (
        await aws.call(aws.ecs.describe_task_definition, taskDefinition=svc["taskDefinition"])
    )["taskDefinition"]
    command = definition["containerDefinitions"][0]["command"]
    assert command[3:5] == ["codeserver", "grpc"] and command[-1] == "4000"
    await first.aclose()

    # A restarted launcher adopts the service of the same config: nothing new is created.
    second = aws.substrate()
    closing.append(second)
    adopted = await second.start_code_server(loc)
    assert adopted.address == handle.address
    assert await aws.service_names() == {name}
    assert list(await aws.registries()) == [name]

    # A changed config: the new service first; the old one goes once the new one is healthy.
    changed = location(env={"WAREHOUSE": "staging"})
    new_name = code_server_name(changed, AGENT)
    start = asyncio.create_task(second.start_code_server(changed))
    await aws.wait_for_service(new_name)
    await asyncio.sleep(0.3)  # the new service has no healthy task yet
    assert not start.done()
    assert await aws.service_names() == {name, new_name}
    await aws.place_task(new_name)
    replaced = await start
    assert replaced.address == f"{new_name}.{NAMESPACE}:4000"
    assert await aws.service_names() == {new_name}
    assert list(await aws.registries()) == [new_name]

    # Another agent's code servers are not ours to adopt or remove.
    other = aws.substrate(agent="agent-2")
    closing.append(other)
    start = asyncio.create_task(other.start_code_server(changed))
    theirs = code_server_name(changed, "agent-2")
    await aws.place_task(theirs)
    their_handle = await start
    assert await aws.service_names() == {new_name, theirs}
    await other.stop_code_server(their_handle)
    assert await aws.service_names() == {new_name}

    # Its task stops: the watcher sees no healthy task left.
    tasks = (await aws.call(aws.ecs.list_tasks, cluster=CLUSTER))["taskArns"]
    for arn in tasks:
        await aws.call(aws.ecs.stop_task, cluster=CLUSTER, task=arn, reason="Scaling activity")
    async with asyncio.timeout(10):
        while second.code_server_alive(replaced):
            await asyncio.sleep(0.05)

    # Removal: the service and its registry are deleted.
    await second.stop_code_server(replaced)
    assert not second.code_server_alive(replaced)
    assert await aws.services() == [] and await aws.registries() == {}


async def test_a_code_server_whose_tasks_keep_stopping_fails_with_their_reasons(
    aws: Aws, closing: list[Any]
) -> None:
    from tether.launcher.ecs._taskdefs import code_server_name

    loc = location()
    name = code_server_name(loc, AGENT)
    substrate = aws.substrate(failed_tasks_limit=2)
    closing.append(substrate)
    start = asyncio.create_task(substrate.start_code_server(loc))
    # Play ECS: each task the service scheduler places fails to pull the image.
    for _ in range(2):
        arn = await aws.place_task(name)
        await aws.call(
            aws.ecs.stop_task,
            cluster=CLUSTER,
            task=arn,
            reason="CannotPullContainerError: pull image manifest has been retried 5 time(s): "
            "registry.example.com/sales:1.2: not found",
        )
    with pytest.raises(CodeServerStartError) as raised:
        await start
    message = str(raised.value)
    assert name in message and "CannotPullContainerError" in message
    assert "Sales ETL" in message
    assert await aws.services() == [] and await aws.registries() == {}

    # The same config again: the old service's stopped tasks are not held against it, and
    # with no healthy task in time it is removed too.
    quick = aws.substrate(start_timeout_s=0.5, failed_tasks_limit=2)
    closing.append(quick)
    with pytest.raises(CodeServerStartError, match="no healthy task within"):
        await quick.start_code_server(loc)
    assert await aws.services() == [] and await aws.registries() == {}


async def test_registries_no_service_uses_are_swept_and_only_ours(
    aws: Aws, closing: list[Any]
) -> None:
    from tether.launcher.ecs._taskdefs import code_server_name

    loc = location()
    name = code_server_name(loc, AGENT)
    first = aws.substrate()
    closing.append(first)
    start = asyncio.create_task(first.start_code_server(loc))
    await aws.place_task(name)
    await start
    [namespace] = (await aws.call(aws.sd.list_namespaces))["Namespaces"]

    # Left behind by launchers that died before ECS let them delete these registries.
    def leftover(registry: str, agent: str) -> None:
        aws.sd.create_service(
            Name=registry,
            NamespaceId=namespace["Id"],
            DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 10}]},
            Tags=[
                {"Key": "tether:managed-by", "Value": "tether"},
                {"Key": "tether:agent", "Value": agent},
                {"Key": "tether:role", "Value": "codeserver"},
            ],
        )

    await asyncio.to_thread(leftover, "tether-cs-gone-0123456789ab", AGENT)
    await asyncio.to_thread(leftover, "tether-cs-theirs-0123456789ab", "agent-2")
    await asyncio.to_thread(aws.sd.create_service, Name="billing-api", NamespaceId=namespace["Id"])

    # A new launcher sweeps once its first code server is up: young registries (another
    # replica may be starting one) are kept; old enough, ours without a service go.
    young = aws.substrate()
    closing.append(young)
    await young.start_code_server(loc)
    assert await young._sweeping == []
    old = aws.substrate(orphan_age_s=0)
    closing.append(old)
    await old.start_code_server(loc)
    assert await old._sweeping == ["tether-cs-gone-0123456789ab"]
    assert set(await aws.registries()) == {
        name,
        "tether-cs-theirs-0123456789ab",
        "billing-api",
    }


async def test_runs_are_tasks_started_stopped_and_watched(aws: Aws, closing: list[Any]) -> None:
    from tether.launcher.ecs._taskdefs import TAG_RUN

    loc = location()
    substrate = aws.substrate()
    closing.append(substrate)
    args = run_args(loc)
    handle = await substrate.launch_run(args, {"TRACEPARENT": "00-abc-def-01"})
    assert handle.worker_id is not None and handle.worker_id.startswith("arn:aws:ecs:")

    task = await aws.task(handle.worker_id)
    tags = {t["key"]: t["value"] for t in task["tags"]}
    assert tags[TAG_RUN] == args.run.run_id and tags["tether:agent"] == AGENT
    assert task["startedBy"] == args.run.run_id
    [override] = task["overrides"]["containerOverrides"]
    assert override["command"][3:5] == ["api", "execute-run"]
    assert ExecuteRunArgs.model_validate_json(override["command"][5]) == argv_args(args)
    assert override["environment"] == [{"name": "TRACEPARENT", "value": "00-abc-def-01"}]
    assert await substrate.run_alive(handle)
    assert substrate.poll_run(handle) is None
    waiting = asyncio.create_task(substrate.wait_run(handle))
    await asyncio.sleep(0.3)
    assert not waiting.done()

    # Terminate from another launcher process, with the handle its claim rebuilds.
    other = aws.substrate()
    closing.append(other)
    rebuilt = other.recorded_run(WorkerRecord(handle.run_id, worker_id=handle.worker_id))
    assert rebuilt is not None and other.recorded_run(WorkerRecord(handle.run_id)) is None
    assert await other.terminate_run(rebuilt, 5) is True
    task = await aws.task(handle.worker_id)
    assert task["lastStatus"] == "STOPPED" and task["desiredStatus"] == "STOPPED"
    assert task["stoppedReason"] == f"Tether: run {args.run.run_id} terminated"
    assert await other.run_alive(rebuilt) is False
    assert await other.terminate_run(rebuilt, 5) is False  # stopped: nothing to stop
    # moto reports exit code 0 for every container (a real worker reports its own).
    assert await waiting == 0
    assert substrate.poll_run(handle) == 0

    # moto's own lifecycle: RUNNING, DEACTIVATING, STOPPING, DEPROVISIONING, STOPPED. Many
    # runs are awaited together: one DescribeTasks per round for all of them.
    aws.let_tasks_progress()
    many = [await substrate.launch_run(run_args(loc), {}) for _ in range(3)]
    assert await substrate.run_alive(many[0])  # DEACTIVATING: still alive
    describes: list[int] = []
    substrate._ecs.meta.events.register(
        "before-parameter-build.ecs.DescribeTasks",
        lambda params, **_: describes.append(len(params["tasks"])),
    )
    assert await asyncio.gather(*(substrate.wait_run(h) for h in many)) == [0, 0, 0]
    assert describes and max(describes) == 3
    assert not await substrate.run_alive(many[0])

    # A task ECS does not know: not alive, nothing to stop; waited for a grace (ECS shows
    # a new task with a delay), then no exit code.
    lost = aws.substrate(missing_grace_s=0.3)
    closing.append(lost)
    ghost = lost.recorded_run(
        WorkerRecord("ghost", worker_id=f"arn:aws:ecs:{REGION}:123456789012:task/x/0")
    )
    assert ghost is not None
    assert not await lost.run_alive(ghost)
    assert await lost.terminate_run(ghost, 1) is False
    began = asyncio.get_running_loop().time()
    assert await lost.wait_run(ghost) == -1
    assert asyncio.get_running_loop().time() - began >= 0.3


async def test_bad_settings_and_a_missing_cluster_fail_clearly(
    aws: Aws, closing: list[Any]
) -> None:
    loc = location()

    missing = aws.substrate(cluster="no-such-cluster")
    closing.append(missing)
    with pytest.raises(RunLaunchError, match="ClusterNotFoundException.*'no-such-cluster'"):
        await missing.launch_run(run_args(loc), {})
    with pytest.raises(CodeServerStartError, match="ClusterNotFoundException"):
        await missing.start_code_server(loc)

    no_subnets = aws.substrate(subnets=[])
    closing.append(no_subnets)
    with pytest.raises(RunLaunchError, match="no subnets"):
        await no_subnets.launch_run(run_args(location(ecs=None)), {})
    with pytest.raises(CodeServerStartError, match="no subnets"):
        await no_subnets.start_code_server(location(ecs=None))

    ok = aws.substrate()
    closing.append(ok)
    with pytest.raises(RunLaunchError, match="has no image"):
        await ok.launch_run(run_args(location(image=None)), {})
    with pytest.raises(CodeServerStartError, match="whole numbers"):
        await ok.start_code_server(location(ecs=EcsConfig(memory="2 GB")))
    huge = run_args(loc, run_config={"ops": {"load": {"config": {"rows": "x" * 9000}}}})
    with pytest.raises(RunLaunchError, match="limit of 8192"):
        await ok.launch_run(huge, {})
    # AWS's own refusal comes through with its message (moto: the subnet does not exist).
    with pytest.raises(RunLaunchError, match="AWS refused the task of run"):
        await ok.launch_run(run_args(location(ecs=EcsConfig(subnets=["subnet-0missing"]))), {})

    no_namespace = aws.substrate(vpc_id=None)
    closing.append(no_namespace)
    with pytest.raises(CodeServerStartError, match="namespace 'tether.local' does not exist"):
        await no_namespace.start_code_server(loc)
    assert await aws.services() == []


def test_the_launcher_builds_the_ecs_substrate_from_its_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    try:
        import boto3  # noqa: F401
    except ImportError as err:
        skip_or_fail(f"boto3 (tether-launcher[ecs]): {err}")
    import asyncio as _asyncio

    from tether.launcher import LauncherSettings, Substrate
    from tether.launcher.ecs import EcsSubstrate
    from tether.launcher.service import make_substrate

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("TETHER_LAUNCHER_SUBSTRATE", "ecs")
    monkeypatch.setenv("TETHER_LAUNCHER_ECS_CLUSTER", "prod")
    monkeypatch.setenv("TETHER_LAUNCHER_ECS_REGION", "eu-west-1")
    monkeypatch.setenv("TETHER_LAUNCHER_ECS_SUBNETS", "subnet-a, subnet-b")
    monkeypatch.setenv("TETHER_LAUNCHER_ECS_SECURITY_GROUPS", '["sg-a"]')
    settings = LauncherSettings()
    assert settings.ecs.cluster == "prod" and settings.ecs.subnets == ["subnet-a", "subnet-b"]
    assert settings.ecs.security_groups == ["sg-a"]
    substrate = make_substrate(settings)
    assert isinstance(substrate, EcsSubstrate) and isinstance(substrate, Substrate)
    assert substrate.name == "ecs" and substrate.code_servers_outlive_launcher
    _asyncio.run(substrate.aclose())

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "TETHER_LAUNCHER_ECS_REGION"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(LauncherError, match="no AWS region"):
        make_substrate(LauncherSettings())


# --- deploy/ecs ---------------------------------------------------------------------------

DEPLOY_ECS = Path(__file__).resolve().parents[2] / "deploy" / "ecs"


async def test_the_deploy_files_register_and_name_real_settings(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tomllib

    from tether.launcher import LauncherSettings
    from tether.launcher.ecs import EcsSettings

    definition = json.loads((DEPLOY_ECS / "launcher-task-definition.json").read_text())
    registered = await aws.call(aws.ecs.register_task_definition, **definition)
    assert registered["taskDefinition"]["family"] == "tether-launcher"
    service = json.loads((DEPLOY_ECS / "launcher-service.json").read_text())
    # moto checks that the subnets and security groups exist: use the test VPC's.
    service["networkConfiguration"]["awsvpcConfiguration"].update(
        subnets=[aws.subnet], securityGroups=[aws.security_group]
    )
    created = await aws.call(aws.ecs.create_service, **service)
    assert created["service"]["serviceName"] == "tether-launcher"

    [container] = definition["containerDefinitions"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    env |= {s["name"]: "from-secrets-manager" for s in container["secrets"]}
    for name in env:
        assert name.startswith("TETHER_"), name
        if name.startswith("TETHER_LAUNCHER_ECS_"):
            assert name.removeprefix("TETHER_LAUNCHER_ECS_").lower() in EcsSettings.model_fields
        elif name.startswith("TETHER_LAUNCHER_"):
            assert name.removeprefix("TETHER_LAUNCHER_").lower() in LauncherSettings.model_fields
        else:
            assert name.removeprefix("TETHER_").lower() in LauncherSettings.model_fields
        monkeypatch.setenv(name, env[name])
    settings = LauncherSettings()
    assert settings.substrate == "ecs" and settings.agent_token.get_secret_value()
    assert settings.ecs.subnets == env["TETHER_LAUNCHER_ECS_SUBNETS"].split(",")
    assert settings.ecs.task_role_arn == env["TETHER_LAUNCHER_ECS_TASK_ROLE_ARN"]

    [table] = tomllib.loads((DEPLOY_ECS / "location.toml").read_text())["locations"]
    loc = LocationConfig.model_validate(table)
    assert loc.substrate == "ecs" and loc.ecs is not None and loc.ecs.memory == "4096"
    # The deployed launcher's policy admits the example location, and not the agent token
    # (its execution role could read it: the policy is what keeps it from user code).
    from tether.launcher.service import make_user_code

    admitted = make_user_code(settings)
    admitted.admit(loc)
    [agent_token] = [
        s["valueFrom"] for s in container["secrets"] if s["name"] == "TETHER_AGENT_TOKEN"
    ]
    stealing = loc.model_copy(update={"env": {"T": f"${{aws-secret:{agent_token}}}"}})
    with pytest.raises(LocationRefusedError, match="aws_secrets"):
        admitted.admit(stealing)


async def test_the_launcher_policy_allows_every_call_the_substrate_makes(
    aws: Aws, closing: list[Any]
) -> None:
    from tether.launcher.ecs._taskdefs import code_server_name

    policy = json.loads((DEPLOY_ECS / "launcher-task-role-policy.json").read_text())
    allowed: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        allowed.update([actions] if isinstance(actions, str) else actions)

    substrate = aws.substrate(orphan_age_s=0)
    closing.append(substrate)
    calls: set[str] = set()

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        prefix = model.service_model.signing_name
        calls.add(f"{prefix}:{model.name}")
        if params.get("tags") or params.get("Tags"):
            calls.add(f"{prefix}:TagResource")  # tagging on create needs it too

    for client in (substrate._ecs, substrate._discovery._client):
        client.meta.events.register("before-parameter-build", record)

    loc = location()
    start = asyncio.create_task(substrate.start_code_server(loc))
    await aws.place_task(code_server_name(loc, AGENT))
    await start
    assert await substrate._sweeping == []  # its one registry is in use
    changed = location(env={"WAREHOUSE": "staging"})
    start = asyncio.create_task(substrate.start_code_server(changed))
    await aws.place_task(code_server_name(changed, AGENT))
    handle = await start
    run = await substrate.launch_run(run_args(loc), {})
    assert await substrate.run_alive(run)
    assert await substrate.terminate_run(run, 1)
    assert await substrate.wait_run(run) == 0
    await substrate.stop_code_server(handle)

    assert {
        "ecs:CreateService",
        "ecs:RunTask",
        "ecs:TagResource",
        "servicediscovery:CreateService",
        "servicediscovery:TagResource",
    } <= calls
    assert calls - allowed == set()
    assert "iam:PassRole" in allowed


# --- the launcher service on the ECS substrate, with NATS --------------------------------


async def test_the_launcher_serves_ecs_work_items_through_nats(aws: Aws, nats_server: Any) -> None:
    from launcher_testkit import PINNED, Bus, open_bus, running, work_item
    from tether.launcher import LauncherSettings
    from tether.shared.nats.subjects import Stream
    from tether.shared.wire.work import ReportKind, WorkItem, WorkKind, WorkResult

    async def send(bus: Bus, kind: WorkKind, **payload: Any) -> WorkItem:
        item = work_item(kind, loc, **payload)
        await bus.send(item)
        return item

    async def result(bus: Bus, result_id: str) -> WorkResult:
        return await bus.result(lambda r: r.id == result_id)

    loc = location()
    run_id = new_id()
    settings = LauncherSettings(
        **nats_server.launcher_settings("ecs"),
        agent_id=AGENT,
        substrate="ecs",
        ecs=aws.settings(),
        code_server_start_timeout_s=1.0,
        terminate_grace_s=5.0,
        location_policy=POLICY,
        stream_wait_timeout_s=10.0,
        graceful_shutdown_timeout=10.0,
        **PINNED,
    )
    streams = (Stream.WORK, Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
    async with (
        open_bus(nats_server.url, *streams, result_timeout_s=60) as bus,
        running(settings, timeout_s=60),
    ):
        launch = await send(bus, WorkKind.LAUNCH_RUN, run_id=run_id, job_name="daily")
        launched = await result(bus, launch.id)
        assert launched.ok, launched.error
        assert launched.payload["run_id"] == run_id
        [arn] = (await aws.call(aws.ecs.list_tasks, cluster=CLUSTER, startedBy=run_id))["taskArns"]

        health = await send(bus, WorkKind.CHECK_RUN_HEALTH, run_id=run_id)
        assert (await result(bus, health.id)).payload == {"run_id": run_id, "alive": True}

        terminate = await send(bus, WorkKind.TERMINATE_RUN, run_id=run_id)
        assert (await result(bus, terminate.id)).payload == {"run_id": run_id, "signalled": True}
        task = await aws.task(arn)
        assert task["lastStatus"] == "STOPPED"
        assert task["stoppedReason"] == f"Tether: run {run_id} terminated"
        exited = await result(bus, f"{launch.id}.exit")
        assert exited.kind == ReportKind.RUN_WORKER_EXITED
        assert exited.payload == {"run_id": run_id, "exit_code": 0}  # moto's exit code
        health = await send(bus, WorkKind.CHECK_RUN_HEALTH, run_id=run_id)
        assert (await result(bus, health.id)).payload == {"run_id": run_id, "alive": False}

        # No task ever gets healthy (moto starts none): the load fails with why, and the
        # service it created is removed.
        load = await send(bus, WorkKind.LOAD_LOCATION)
        loaded = await result(bus, load.id)
        assert not loaded.ok and loaded.error is not None
        assert "no healthy task within" in loaded.error.message
        assert await aws.services() == []
