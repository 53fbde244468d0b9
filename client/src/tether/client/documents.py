"""Every GraphQL document the ``tether`` user commands send, in one place.

``client/tests/test_documents.py`` validates each one against the control plane's committed
SDL (``svc-controlplane/schema.graphql``), so a schema change that would break a command
fails a test instead of a user's command.
"""

from __future__ import annotations

# Field sets several documents select.
_TOKEN_FIELDS = "id name role createdAt revokedAt"
_RUN_FIELDS = "id jobName locationName status tags createdAt startedAt endedAt"
_BACKFILL_FIELDS = (
    "id jobName locationName status launched runsLaunched partitionKeys runCounts "
    "retryablePartitionKeys unfinishedRuns createdAt error { clsName message }"
)
_LOCATION_FIELDS = (
    "name loadStatus config snapshotId loadError { clsName message } "
    "repositories { name jobs { name } }"
)

# --- tether token ----------------------------------------------------------------------

CREATE_TOKEN = f"""
mutation($name: String!, $role: Role!) {{
  createToken(name: $name, role: $role) {{ token info {{ {_TOKEN_FIELDS} }} }}
}}"""

REVOKE_TOKEN = f"""
mutation($id: Int, $name: String) {{ revokeToken(id: $id, name: $name) {{ {_TOKEN_FIELDS} }} }}"""

TOKENS = f"{{ tokens {{ {_TOKEN_FIELDS} }} }}"

# --- tether location -------------------------------------------------------------------

CODE_LOCATIONS = f"{{ codeLocations {{ {_LOCATION_FIELDS} }} }}"

#: The stored configs, which ``tether location update`` changes.
LOCATION_CONFIGS = "{ codeLocations { name config } }"

ADD_LOCATION = f"mutation($cfg: JSON!) {{ addLocation(config: $cfg) {{ {_LOCATION_FIELDS} }} }}"

UPDATE_LOCATION = (
    f"mutation($cfg: JSON!) {{ updateLocation(config: $cfg) {{ {_LOCATION_FIELDS} }} }}"
)

RELOAD_LOCATION = (
    f"mutation($name: String!) {{ reloadLocation(name: $name) {{ {_LOCATION_FIELDS} }} }}"
)

REMOVE_LOCATION = (
    f"mutation($name: String!) {{ removeLocation(name: $name) {{ {_LOCATION_FIELDS} }} }}"
)

# --- tether run ------------------------------------------------------------------------

RUN_STATUS = "query($id: String!) { run(id: $id) { status } }"

LAUNCH_RUN = f"""
mutation($loc: String!, $job: String!, $repo: String, $cfg: JSON, $tags: JSON) {{
  launchRun(locationName: $loc, jobName: $job, repositoryName: $repo, runConfig: $cfg,
            tags: $tags) {{
    __typename
    ... on LaunchRunSuccess {{ run {{ {_RUN_FIELDS} }} }}
    ... on RunConfigValidationInvalid {{ message errors }}
    ... on JobNotFoundError {{ message }}
    ... on LocationNotLoadedError {{ message }}
  }}
}}"""

RUNS = f"""
query($status: RunStatus, $job: String, $tags: JSON, $limit: Int!) {{
  runs(status: $status, jobName: $job, tags: $tags, limit: $limit) {{ {_RUN_FIELDS} }}
}}"""

#: A run's status and compute logs stored in the control plane, from ``offset``.
RUN_LOGS = """
query($id: String!, $step: String, $stream: String, $offset: Int!, $limit: Int) {
  run(id: $id) {
    status
    computeLogs(stepKey: $step, stream: $stream, offset: $offset, limit: $limit) {
      stepKey stream offset nextOffset text
    }
  }
}"""

#: Where each (step, stream) of a run's compute logs is stored.
LOG_STREAMS = """
query($id: String!) { computeLogStreams(runId: $id) { stepKey stream storage } }"""

#: Presigned URLs of a stream kept in the customer's storage.
LOG_URLS = """
query($id: String!, $step: String!, $stream: String!, $offset: Int!) {
  computeLogUrls(runId: $id, stepKey: $step, stream: $stream, offset: $offset,
                 timeoutSeconds: 30) {
    urls { offset length skip url } hasMore nextOffset
  }
}"""

REEXECUTE_RUN = f"""
mutation($id: String!, $strategy: ReexecutionStrategy!) {{
  reexecuteRun(runId: $id, strategy: $strategy) {{
    __typename
    ... on LaunchRunSuccess {{ run {{ {_RUN_FIELDS} stepSelection }} }}
    ... on RunNotFoundError {{ message }}
    ... on ReexecutionNotAllowedError {{ message }}
    ... on RunConfigValidationInvalid {{ message errors }}
    ... on JobNotFoundError {{ message }}
    ... on LocationNotLoadedError {{ message }}
  }}
}}"""

TERMINATE_RUN = f"""
mutation($id: String!) {{
  terminateRun(runId: $id) {{
    __typename
    ... on TerminateRunSuccess {{ run {{ {_RUN_FIELDS} }} }}
    ... on RunNotFoundError {{ message }}
    ... on RunAlreadyFinishedError {{ message }}
  }}
}}"""

# --- tether backfill -------------------------------------------------------------------

BACKFILLS = f"""
query($limit: Int!, $offset: Int!, $status: String) {{
  backfills(limit: $limit, offset: $offset, status: $status) {{ {_BACKFILL_FIELDS} }}
}}"""

#: The partitions ``tether backfill retry`` will run again.
BACKFILL_RETRYABLE = "query($id: String!) { backfill(id: $id) { retryablePartitionKeys } }"

CANCEL_BACKFILL = f"""
mutation($id: String!, $terminate: Boolean!) {{
  cancelBackfill(id: $id, terminateRunning: $terminate) {{ {_BACKFILL_FIELDS} }}
}}"""

RETRY_BACKFILL = f"mutation($id: String!) {{ retryBackfill(id: $id) {{ {_BACKFILL_FIELDS} }} }}"

# --- tether asset ----------------------------------------------------------------------

_ASSET_FIELDS = (
    "assetKey { path } groupName locationName jobNames isExternal codeVersion stale "
    "staleReasons dependencyKeys { path } dependedByKeys { path } partitionKeys "
    "latestMaterialization { runId timestamp partition codeVersion }"
)

ASSET_NODES = f"""
query($loc: String, $group: String) {{
  assetNodes(locationName: $loc, groupName: $group) {{ {_ASSET_FIELDS} }}
}}"""

ASSET_NODE = f"""
query($key: [String!]!, $limit: Int!, $partition: String) {{
  assetNode(assetKey: $key) {{
    {_ASSET_FIELDS} description owners kinds
    materializations(limit: $limit, partitionKey: $partition) {{
      runId reportId stepKey timestamp partition codeVersion metadata
    }}
  }}
}}"""

MATERIALIZE_ASSETS = f"""
mutation($loc: String!, $keys: [[String!]!]!, $partition: String, $cfg: JSON, $tags: JSON) {{
  materializeAssets(locationName: $loc, assetKeys: $keys, partitionKey: $partition,
                    runConfig: $cfg, tags: $tags) {{
    __typename
    ... on LaunchRunSuccess {{ run {{ {_RUN_FIELDS} }} }}
    ... on RunConfigValidationInvalid {{ message errors }}
    ... on JobNotFoundError {{ message }}
    ... on LocationNotLoadedError {{ message }}
  }}
}}"""

LAUNCH_ASSET_BACKFILL = f"""
mutation($loc: String!, $keys: [[String!]!]!, $from: String, $to: String, $tags: JSON) {{
  launchBackfill(locationName: $loc, assetSelection: $keys, fromKey: $from, toKey: $to,
                 tags: $tags) {{ {_BACKFILL_FIELDS} assetSelection {{ path }} }}
}}"""

REPORT_ASSET_MATERIALIZATION = """
mutation($key: [String!]!, $partition: String, $metadata: JSON, $description: String,
         $reportId: String) {
  reportAssetMaterialization(assetKey: $key, partitionKey: $partition, metadata: $metadata,
                             description: $description, reportId: $reportId) {
    assetKey { path } runId reportId timestamp partition description metadata
  }
}"""

WIPE_ASSETS = "mutation($keys: [[String!]!]!) { wipeAssets(assetKeys: $keys) }"

_ALERT_POLICY_FIELDS = (
    "id name kind enabled filters threshold channelType channel channelSecrets "
    "rateLimitPerMinute createdAt"
)
_ALERT_DELIVERY_FIELDS = (
    "id policyId event subject title link status attempts lastError createdAt sentAt"
)

ALERT_POLICIES = f"{{ alertPolicies {{ {_ALERT_POLICY_FIELDS} }} }}"

CREATE_ALERT_POLICY = f"""
mutation($name: String!, $kind: AlertPolicyKind!, $channel: JSON!, $filters: JSON,
         $threshold: Float, $rate: Int!) {{
  createAlertPolicy(name: $name, kind: $kind, channel: $channel, filters: $filters,
                    threshold: $threshold, rateLimitPerMinute: $rate) {{ {_ALERT_POLICY_FIELDS} }}
}}"""

DELETE_ALERT_POLICY = (
    f"mutation($id: String!) {{ deleteAlertPolicy(id: $id) {{ {_ALERT_POLICY_FIELDS} }} }}"
)

SEND_TEST_ALERT = (
    f"mutation($id: String!) {{ sendTestAlert(id: $id) {{ {_ALERT_DELIVERY_FIELDS} }} }}"
)

ALERT_DELIVERIES = f"""
query($policy: String, $limit: Int!) {{
  alertDeliveries(policyId: $policy, limit: $limit) {{ {_ALERT_DELIVERY_FIELDS} }}
}}"""

# --- tether deployment -----------------------------------------------------------------

_DEPLOYMENT_SETTINGS_FIELDS = (
    "deploymentId maxConcurrentRuns runTagConcurrencyLimits scheduleCatchup retentionDays own"
)

DEPLOYMENTS = """
query($all: Boolean!) { deployments(includeDeleted: $all) { id name createdAt deletedAt } }"""

CREATE_DEPLOYMENT = f"""
mutation($name: String!, $from: String) {{
  createDeployment(name: $name, fromDeployment: $from) {{
    deployment {{ id name createdAt }} copiedLocations
    settings {{ {_DEPLOYMENT_SETTINGS_FIELDS} }}
  }}
}}"""

DELETE_DEPLOYMENT = "mutation($name: String!) { deleteDeployment(name: $name) { id deletedAt } }"

DEPLOYMENT_SETTINGS = f"""
query($d: String) {{ deploymentSettings(deployment: $d) {{ {_DEPLOYMENT_SETTINGS_FIELDS} }} }}"""

UPDATE_DEPLOYMENT_SETTINGS = f"""
mutation($s: DeploymentSettingsInput!, $d: String) {{
  updateDeploymentSettings(settings: $s, deployment: $d) {{ {_DEPLOYMENT_SETTINGS_FIELDS} }}
}}"""
