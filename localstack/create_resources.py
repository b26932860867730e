#!/usr/bin/env python3
"""Create the registry's AWS resources, idempotently: the DynamoDB table and the S3 bucket.

Needs only boto3. Works against real AWS, LocalStack or moto:

    python3 create_resources.py                                  # real AWS (or AWS_ENDPOINT_URL*)
    python3 create_resources.py --dynamodb-endpoint http://127.0.0.1:5000 \
                                --s3-endpoint http://127.0.0.1:4566

Endpoints: --dynamodb-endpoint / --s3-endpoint, else AWS_ENDPOINT_URL_DYNAMODB /
AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else AWS itself. Names: --table / --bucket, else
REGISTRY_TABLE / REGISTRY_BUCKET, else npm-registry / npm-registry-tarballs.

Table: partition key pk (S), sort key sk (S), on-demand billing, TTL on attribute `ttl`.
Bucket: public access blocked, packument snapshots (snapshots/, rebuilt on demand) expire after
1 day (rule expire-packument-snapshots), incomplete multipart uploads are aborted after 1 day (rule
abort-incomplete-multipart-uploads). Unreferenced tarballs left by a crashed publish are removed by
`registry-server sweep`, not by a lifecycle rule. Features an emulator lacks (TTL, public access block,
lifecycle) are skipped with a warning; anything else that fails exits non-zero.
"""

import argparse
import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

DEFAULT_TABLE = "npm-registry"
DEFAULT_BUCKET = "npm-registry-tarballs"
SNAPSHOT_RULE_ID = "expire-packument-snapshots"
MULTIPART_RULE_ID = "abort-incomplete-multipart-uploads"

# Error codes meaning "this endpoint does not implement that operation".
UNSUPPORTED_CODES = {
    "NotImplemented",
    "NotImplementedException",
    "UnknownOperationException",
    "UnsupportedOperation",
    "InternalFailure",
    "InternalError",
    "501",
}


class Failure(Exception):
    pass


def log(message):
    print(f"create_resources: {message}", flush=True)


def warn(message):
    print(f"create_resources: WARNING: {message}", file=sys.stderr, flush=True)


def error_code(err):
    return err.response.get("Error", {}).get("Code", "")


def error_text(err):
    e = err.response.get("Error", {})
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return f"{e.get('Code', '?')} (HTTP {status}): {e.get('Message', '')}"


def unsupported(err):
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(err) in UNSUPPORTED_CODES or status == 501


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", default=os.environ.get("REGISTRY_TABLE") or DEFAULT_TABLE)
    p.add_argument("--bucket", default=os.environ.get("REGISTRY_BUCKET") or DEFAULT_BUCKET)
    p.add_argument(
        "--dynamodb-endpoint",
        default=os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or os.environ.get("AWS_ENDPOINT_URL"),
    )
    p.add_argument(
        "--s3-endpoint",
        default=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
    )
    p.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        help="default: the profile's region, else us-east-1",
    )
    p.add_argument("--skip-table", action="store_true", help="only create the bucket")
    p.add_argument("--skip-bucket", action="store_true", help="only create the table")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the table")
    return p.parse_args(argv)


def make_session(args):
    session = boto3.session.Session(region_name=args.region)
    if not session.region_name:
        session = boto3.session.Session(region_name="us-east-1")
    emulated = bool(args.dynamodb_endpoint or args.s3_endpoint)
    if emulated and session.get_credentials() is None:
        # Emulators accept any key; real AWS never gets here with an endpoint unset.
        session = boto3.session.Session(
            region_name=session.region_name,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
    return session


# --- DynamoDB ------------------------------------------------------------------------------------

def ensure_table(ddb, table, timeout):
    try:
        ddb.create_table(
            TableName=table,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        log(f"table {table}: created")
    except ClientError as err:
        if error_code(err) != "ResourceInUseException":
            raise Failure(f"cannot create table {table}: {error_text(err)}") from err
        log(f"table {table}: already exists")

    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        desc = ddb.describe_table(TableName=table)["Table"]
        if desc.get("TableStatus") == "ACTIVE":
            break
        if time.monotonic() > deadline:
            raise Failure(f"table {table} is still {desc.get('TableStatus')} after {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 5)

    keys = {k["AttributeName"]: k["KeyType"] for k in desc["KeySchema"]}
    types = {a["AttributeName"]: a["AttributeType"] for a in desc["AttributeDefinitions"]}
    if keys != {"pk": "HASH", "sk": "RANGE"} or types.get("pk") != "S" or types.get("sk") != "S":
        raise Failure(
            f"table {table} exists with another key schema {desc['KeySchema']}; "
            "expected pk (S, HASH) and sk (S, RANGE)"
        )
    log(f"table {table}: ACTIVE")


def ensure_ttl(ddb, table):
    try:
        current = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    except ClientError as err:
        if unsupported(err):
            warn(f"table {table}: TTL not supported by this endpoint ({error_text(err)}); skipped")
            return
        raise Failure(f"cannot read TTL of table {table}: {error_text(err)}") from err
    status = current.get("TimeToLiveStatus")
    attribute = current.get("AttributeName")
    if status in ("ENABLED", "ENABLING"):
        if attribute == "ttl":
            log(f"table {table}: TTL on attribute ttl already {status.lower()}")
        else:
            warn(f"table {table}: TTL is {status} on attribute {attribute!r}, not 'ttl'; left as is")
        return
    try:
        ddb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"},
        )
        log(f"table {table}: TTL enabled on attribute ttl")
    except ClientError as err:
        if unsupported(err):
            warn(f"table {table}: TTL not supported by this endpoint ({error_text(err)}); skipped")
        elif error_code(err) == "ValidationException" and "already enabled" in str(err).lower():
            log(f"table {table}: TTL already enabled")
        else:
            raise Failure(f"cannot enable TTL on table {table}: {error_text(err)}") from err


# --- S3 ------------------------------------------------------------------------------------------

# HeadBucket attempts on a 5xx answer. boto3's retries skip 501, which LocalStack once answered
# to a HeadBucket of a fresh name under load in CI (S3 was already "running"); real S3 never
# answers 501 here, so a 501 is the emulator's hiccup, retried like any other 5xx.
HEAD_BUCKET_ATTEMPTS = 4


def ensure_bucket(s3, bucket, region):
    for attempt in range(1, HEAD_BUCKET_ATTEMPTS + 1):
        try:
            s3.head_bucket(Bucket=bucket)
            log(f"bucket {bucket}: already exists")
            return
        except ClientError as err:
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 403:
                raise Failure(f"bucket {bucket} exists but is not accessible (HTTP 403)") from err
            if status == 404:
                break
            if status and status >= 500 and attempt < HEAD_BUCKET_ATTEMPTS:
                warn(f"bucket {bucket}: HeadBucket answered {error_text(err)}; retrying")
                time.sleep(0.5 * attempt)
                continue
            raise Failure(f"cannot check bucket {bucket}: {error_text(err)}") from err
    params = {"Bucket": bucket}
    if region != "us-east-1":
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**params)
        log(f"bucket {bucket}: created in {region}")
    except ClientError as err:
        code = error_code(err)
        if code == "BucketAlreadyOwnedByYou":
            log(f"bucket {bucket}: already exists")
        elif code == "BucketAlreadyExists":
            raise Failure(f"bucket name {bucket} is taken by another account") from err
        else:
            raise Failure(f"cannot create bucket {bucket}: {error_text(err)}") from err


def ensure_public_access_block(s3, bucket):
    config = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    try:
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=config)
        log(f"bucket {bucket}: public access blocked")
    except ClientError as err:
        if unsupported(err):
            warn(f"bucket {bucket}: public access block not supported ({error_text(err)}); skipped")
        else:
            raise Failure(f"cannot block public access to {bucket}: {error_text(err)}") from err


def ensure_lifecycle(s3, bucket):
    ours = [
        {
            # Packument snapshots are keyed by revision and rebuilt on demand, so old ones can go.
            "ID": SNAPSHOT_RULE_ID,
            "Filter": {"Prefix": "snapshots/"},
            "Status": "Enabled",
            "Expiration": {"Days": 1},
        },
        {
            "ID": MULTIPART_RULE_ID,
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        },
    ]
    try:
        existing = s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except ClientError as err:
        if error_code(err) == "NoSuchLifecycleConfiguration":
            existing = []
        elif unsupported(err):
            warn(f"bucket {bucket}: lifecycle rules not supported ({error_text(err)}); skipped")
            return
        else:
            raise Failure(f"cannot read the lifecycle rules of {bucket}: {error_text(err)}") from err
    ids = {rule["ID"] for rule in ours}
    # Keep rules someone else added; ours replace any earlier version of themselves.
    rules = [r for r in existing if r.get("ID") not in ids] + ours
    try:
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": rules}
        )
        log(f"bucket {bucket}: lifecycle rules {SNAPSHOT_RULE_ID} and {MULTIPART_RULE_ID} set")
    except ClientError as err:
        if unsupported(err):
            warn(f"bucket {bucket}: lifecycle rules not supported ({error_text(err)}); skipped")
        else:
            raise Failure(f"cannot set the lifecycle rules of {bucket}: {error_text(err)}") from err


def main(argv=None):
    args = parse_args(argv)
    session = make_session(args)
    region = session.region_name
    retries = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10)
    try:
        if not args.skip_table:
            log(f"DynamoDB endpoint: {args.dynamodb_endpoint or 'AWS'} ({region})")
            ddb = session.client("dynamodb", endpoint_url=args.dynamodb_endpoint, config=retries)
            ensure_table(ddb, args.table, args.timeout)
            ensure_ttl(ddb, args.table)
        if not args.skip_bucket:
            log(f"S3 endpoint: {args.s3_endpoint or 'AWS'} ({region})")
            s3_config = retries
            if args.s3_endpoint:
                # Emulators are reached by IP or localhost: no virtual-hosted bucket names.
                s3_config = retries.merge(Config(s3={"addressing_style": "path"}))
            s3 = session.client("s3", endpoint_url=args.s3_endpoint, config=s3_config)
            ensure_bucket(s3, args.bucket, region)
            ensure_public_access_block(s3, args.bucket)
            ensure_lifecycle(s3, args.bucket)
    except Failure as err:
        print(f"create_resources: ERROR: {err}", file=sys.stderr)
        return 1
    except NoCredentialsError:
        print("create_resources: ERROR: no AWS credentials found", file=sys.stderr)
        return 1
    except ClientError as err:
        print(f"create_resources: ERROR: {err.operation_name}: {error_text(err)}", file=sys.stderr)
        return 1
    except BotoCoreError as err:
        print(f"create_resources: ERROR: {err}", file=sys.stderr)
        return 1
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
