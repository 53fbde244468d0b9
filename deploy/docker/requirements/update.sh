#!/usr/bin/env sh
# Regenerate the locked third-party requirements of each service image from uv.lock.
# (tests/test_deploy.py fails when they differ from what this prints.)
set -eu
cd "$(dirname "$0")/../../.."
for pair in controlplane:tether-controlplane poller:tether-poller launcher:tether-launcher \
    eventrelay:tether-eventrelay logship:tether-logship codeserver:tether-codeserver; do
    # The launcher image serves every substrate: with its docker, k8s and ecs extras; logship
    # can write to the customer's S3.
    extra=""
    [ "${pair%%:*}" = launcher ] && extra="--extra docker --extra k8s --extra ecs"
    [ "${pair%%:*}" = logship ] && extra="--extra s3"
    # shellcheck disable=SC2086
    uv export --frozen --no-dev --no-hashes --no-header --no-annotate --no-emit-workspace \
        $extra --package "${pair#*:}" -o "deploy/docker/requirements/${pair%%:*}.txt" >/dev/null
done
