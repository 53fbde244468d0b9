"""Tether SDK: declare assets, ops, jobs, partitions, schedules and sensors as ``Definitions``.

Importing this package is deliberately cheap (pydantic only, no gRPC, NATS, tracing or
cron parsing), because every run worker and code server imports it before user code.

Example::

    from tether.sdk import (
        DailyPartitionsDefinition, Definitions, OpContext, RetryPolicy, RunRequest,
        SensorEvaluationContext, build_schedule_from_partitioned_job, job, op, sensor,
    )

    @op(retry_policy=RetryPolicy(max_retries=3, delay=1.0, backoff="EXPONENTIAL"))
    def greet(context: OpContext) -> None:
        context.log.info(f"hello from partition {context.partition_key}")

    @job(partitions_def=DailyPartitionsDefinition(start="2026-01-01", timezone="Europe/Berlin"))
    def hello():
        greet()

    @sensor(job=hello, minimum_interval_seconds=60)
    def on_demand(context: SensorEvaluationContext):
        yield RunRequest(run_key="2026-01-01", partition_key="2026-01-01")

    defs = Definitions(
        jobs=[hello],
        schedules=[build_schedule_from_partitioned_job(hello)],
        sensors=[on_demand],
    )
"""

from tether.sdk._asset_graph import (
    ASSET_JOB,
    AssetGraph,
    UnresolvedAssetJob,
    define_asset_job,
    select_assets,
)
from tether.sdk._asset_key import AssetKey
from tether.sdk._asset_selection import AssetSelection
from tether.sdk._assets import AssetIn, AssetsDefinition, AssetSpec, asset
from tether.sdk._context import AssetExecutionContext, AssetMaterialization, OpContext, OpLogger
from tether.sdk._definitions import Definitions
from tether.sdk._errors import DefinitionError, UserCodeError
from tether.sdk._io_manager import (
    ConfigurableIOManager,
    FilesystemIOManager,
    InputContext,
    IOManager,
    LoadedValue,
    OutputContext,
)
from tether.sdk._job import EXECUTORS, EdgeDef, JobDefinition, Node, OutputHandle, job
from tether.sdk._materialize_result import MaterializeResult
from tether.sdk._multi_asset import AssetOut, multi_asset
from tether.sdk._op import RESULT, OpDefinition, OpInputDef, op
from tether.sdk._partitioned_config import PartitionedConfig, PartitionRun, partitioned_config
from tether.sdk._partitions import (
    PARTITION_KEY_TAG,
    PARTITION_SET_TAG,
    PartitionKeyError,
    PartitionsDefinition,
    StaticPartitionsDefinition,
)
from tether.sdk._resources import ConfigurableResource, EnvVar, ResourceError, Resources
from tether.sdk._retry import Backoff, Jitter, RetryPolicy, RetryRequested
from tether.sdk._run_request import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    SensorResult,
    SkipReason,
    TickResult,
)
from tether.sdk._run_status_sensor import (
    TRIGGERING_RUN_TAG,
    JobSelector,
    RunFailureSensorContext,
    RunRecord,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    run_failure_sensor,
    run_status_sensor,
)
from tether.sdk._s3_io_manager import S3IOManager
from tether.sdk._schedule import (
    ScheduleDefinition,
    ScheduleEvaluationContext,
    ScheduleOverlapPolicy,
    build_schedule_from_partitioned_job,
    schedule,
)
from tether.sdk._schema import job_config_schema
from tether.sdk._sensor import SensorDefinition, SensorEvaluationContext, sensor
from tether.sdk._time_partitions import (
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    MonthlyPartitionsDefinition,
    TimeWindow,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
)
from tether.shared.wire.runs import ASSET_SELECTION_TAG, RunStatus

__all__ = [
    "ASSET_JOB",
    "ASSET_SELECTION_TAG",
    "EXECUTORS",
    "PARTITION_KEY_TAG",
    "PARTITION_SET_TAG",
    "RESULT",
    "TRIGGERING_RUN_TAG",
    "AssetExecutionContext",
    "AssetGraph",
    "AssetIn",
    "AssetKey",
    "AssetMaterialization",
    "AssetOut",
    "AssetSelection",
    "AssetSpec",
    "AssetsDefinition",
    "Backoff",
    "ConfigurableIOManager",
    "MaterializeResult",
    "ConfigurableResource",
    "DailyPartitionsDefinition",
    "DefaultScheduleStatus",
    "DefaultSensorStatus",
    "DefinitionError",
    "Definitions",
    "EdgeDef",
    "EnvVar",
    "FilesystemIOManager",
    "HourlyPartitionsDefinition",
    "IOManager",
    "InputContext",
    "LoadedValue",
    "Jitter",
    "JobDefinition",
    "JobSelector",
    "MonthlyPartitionsDefinition",
    "Node",
    "OpContext",
    "OpDefinition",
    "OpInputDef",
    "OpLogger",
    "OutputContext",
    "OutputHandle",
    "PartitionKeyError",
    "PartitionRun",
    "PartitionedConfig",
    "PartitionsDefinition",
    "ResourceError",
    "Resources",
    "RetryPolicy",
    "RetryRequested",
    "RunFailureSensorContext",
    "RunRecord",
    "RunRequest",
    "RunStatus",
    "RunStatusSensorContext",
    "RunStatusSensorDefinition",
    "S3IOManager",
    "ScheduleDefinition",
    "ScheduleOverlapPolicy",
    "ScheduleEvaluationContext",
    "SensorDefinition",
    "SensorEvaluationContext",
    "SensorResult",
    "SkipReason",
    "StaticPartitionsDefinition",
    "TickResult",
    "TimeWindow",
    "TimeWindowPartitionsDefinition",
    "UnresolvedAssetJob",
    "UserCodeError",
    "WeeklyPartitionsDefinition",
    "asset",
    "build_schedule_from_partitioned_job",
    "define_asset_job",
    "job",
    "job_config_schema",
    "multi_asset",
    "op",
    "partitioned_config",
    "run_failure_sensor",
    "run_status_sensor",
    "schedule",
    "select_assets",
    "sensor",
]
