#!/usr/bin/env sh
# Regenerate the locked third-party requirements of each service image from uv.lock.
# (tests/test_deploy.py fails when they differ from what this prints.)
set -eu
cd "$(dirname "$0")/../../.."
for pair in controlplane:tether-controlplane poller:tether-poller launcher:tether-launcher \
    eventrelay:tether-eventrelay logship:tether-logship codeserver:tether-codeserver; do
    uv export --frozen --no-dev --no-hashes --no-header --no-annotate --no-emit-workspace \
        --package "${pair#*:}" -o "deploy/docker/requirements/${pair%%:*}.txt" >/dev/null
done
