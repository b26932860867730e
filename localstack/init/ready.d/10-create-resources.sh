#!/bin/bash
# LocalStack ready hook: creates the registry's DynamoDB table and S3 bucket (REGISTRY_TABLE /
# REGISTRY_BUCKET) in this LocalStack with create_resources.py, which docker-compose.yml mounts
# at $CREATE_RESOURCES_SCRIPT. Idempotent: a restart with existing resources is fine.
set -euo pipefail

script="${CREATE_RESOURCES_SCRIPT:-/opt/npm-registry/create_resources.py}"
if [ ! -f "$script" ]; then
  echo "10-create-resources.sh: $script is missing (see localstack/docker-compose.yml)" >&2
  exit 1
fi

# The image's own virtualenv has boto3; fall back to whatever python3 is on PATH.
python=/opt/code/localstack/.venv/bin/python
[ -x "$python" ] || python=python3

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"

exec "$python" "$script" \
  --dynamodb-endpoint http://localhost:4566 \
  --s3-endpoint http://localhost:4566 \
  --region "${AWS_DEFAULT_REGION:-us-east-1}" \
  --table "${REGISTRY_TABLE:-npm-registry}" \
  --bucket "${REGISTRY_BUCKET:-npm-registry-tarballs}"
