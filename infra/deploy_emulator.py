#!/usr/bin/env python3
"""Deploy infra/template.yaml into an emulator's CloudFormation (moto) and print its table and bucket.

    python3 infra/deploy_emulator.py --endpoint http://127.0.0.1:5000 --stack-name reg-test

Needs boto3 and aws-sam-translator (and PyYAML, which both pull in); nothing leaves the machine.

1. The SAM template is transformed to plain CloudFormation offline with samtranslator, as
   CloudFormation's AWS::Serverless-2016-10-31 transform would: parameters take their defaults,
   the account is a fake one, no managed policy is looked up (the template names none), and the
   functions' local CodeUri is replaced by a placeholder S3 URI, as `sam package` would.
2. What the emulator cannot deploy is dropped, each with a line on stderr: the Lambda functions
   (they need built code), the resources of types moto's CloudFormation has no model for (it would
   skip them silently and still report CREATE_COMPLETE), and then, transitively, every resource and
   output that refers to a dropped one (routes, integrations, permissions, the HTTP API's URL).
   The storage resources go through unchanged.
3. The stack is created and waited for (CREATE_COMPLETE, else its failure events and exit 1).
4. Properties of the kept resources that moto's CloudFormation accepts but does not apply (the
   table's TTL and point-in-time recovery, the bucket's versioning, lifecycle rules, public access
   block and ownership controls) are applied from the transformed template with the services'
   own APIs; the table's DeletionProtectionEnabled, which moto stores as the parameter's string,
   is stored as the boolean CloudFormation makes of it. The table's key schema, attribute
   definitions and TTL are then read back and compared with the template (exit 1 if they differ).
5. Prints {"stack": ..., "table": ..., "bucket": ...} on stdout, from the stack's outputs
   TableName / BucketName, else the resources' physical ids.
"""

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import boto3
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError
from samtranslator.translator.transform import transform

TEMPLATE = Path(__file__).resolve().parent / "template.yaml"
FAKE_ACCOUNT = "123456789012"

# Resource types the emulator cannot deploy, and why. Lambda functions need their code in S3
# (moto fails the CreateStack call itself without it); the others have no model in moto's
# CloudFormation (5.2.5), which logs a warning, creates nothing and still reports CREATE_COMPLETE,
# so they are dropped here, loudly, instead.
UNDEPLOYABLE = {
    "AWS::Lambda::Function": "needs the functions' built code",
    "AWS::ApiGatewayV2::Api": "no API Gateway v2 model in moto's CloudFormation",
    "AWS::ApiGatewayV2::Stage": "no API Gateway v2 model in moto's CloudFormation",
    "AWS::ApiGatewayV2::Integration": "no API Gateway v2 model in moto's CloudFormation",
    "AWS::ApiGatewayV2::Route": "no API Gateway v2 model in moto's CloudFormation",
    # Not put with PutBucketPolicy either: moto's S3 enforces bucket policies, and the template's
    # TLS-only Deny would refuse every request to the emulator, which speaks plain http.
    "AWS::S3::BucketPolicy": "no S3 bucket policy model in moto's CloudFormation",
    "AWS::SecretsManager::Secret": "no Secrets Manager model in moto's CloudFormation",
}


class Failure(Exception):
    pass


def note(message):
    print(f"deploy_emulator: {message}", file=sys.stderr, flush=True)


# --- Template ------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form intrinsics (!Ref, !GetAtt, !Sub, ...)."""


def _intrinsic(loader, tag_suffix, node):
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_Loader.add_multi_constructor("!", _intrinsic)


def load_template(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


class _NoManagedPolicies:
    """samtranslator's ManagedPolicyLoader without IAM: the template names no managed policy."""

    def load(self):
        return {}


def to_cloudformation(sam, region):
    sam = copy.deepcopy(sam)
    for logical_id, resource in sam.get("Resources", {}).items():
        if resource.get("Type") == "AWS::Serverless::Function":
            props = resource.setdefault("Properties", {})
            uri = props.get("CodeUri")
            if isinstance(uri, str) and not uri.startswith("s3://"):
                # What `sam package` does after uploading the local directory.
                props["CodeUri"] = f"s3://emulator-placeholder/{logical_id}.zip"
    parameters = {
        name: spec["Default"]
        for name, spec in sam.get("Parameters", {}).items()
        if "Default" in spec
    }
    parameters.update({"AWS::Region": region, "AWS::AccountId": FAKE_ACCOUNT})
    # transform() makes its own boto3 session for the pseudo parameters, and insists on a region.
    os.environ["AWS_DEFAULT_REGION"] = region
    return transform(sam, parameters, _NoManagedPolicies())


def references(value):
    """Logical ids (and pseudo parameters) that a piece of template refers to."""
    found = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                target = inner[0] if isinstance(inner, list) else str(inner).split(".", 1)[0]
                found.add(target)
            elif key == "Fn::Sub":
                text, variables = (inner, {}) if isinstance(inner, str) else (inner[0], inner[1])
                for part in text.split("${")[1:]:
                    if part.startswith("!"):
                        continue  # ${!Literal}
                    name = part.split("}", 1)[0].split(".", 1)[0]
                    if name not in variables:
                        found.add(name)
                found |= references(variables)
            else:
                found |= references(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= references(inner)
    return found


def depends_on(resource):
    deps = resource.get("DependsOn", [])
    return set([deps] if isinstance(deps, str) else deps)


def drop_undeployable(cfn):
    resources = cfn["Resources"]
    dropped = {}
    for logical_id, resource in resources.items():
        why = UNDEPLOYABLE.get(resource["Type"])
        if why:
            dropped[logical_id] = f"{resource['Type']}: {why}"
    changed = True
    while changed:
        changed = False
        for logical_id, resource in resources.items():
            if logical_id in dropped:
                continue
            gone = sorted((references(resource) | depends_on(resource)) & dropped.keys())
            if gone:
                dropped[logical_id] = f"{resource['Type']}: refers to dropped resources"
                changed = True
    # One line per reason (the routes alone are dozens of resources).
    by_reason = {}
    for logical_id in sorted(dropped):
        by_reason.setdefault(dropped[logical_id], []).append(logical_id)
        del resources[logical_id]
    for why, ids in sorted(by_reason.items()):
        names = ", ".join(ids) if len(ids) <= 4 else f"{len(ids)} resources ({ids[0]}, ...)"
        note(f"dropped {names} ({why})")
    outputs = cfn.get("Outputs", {})
    for name in sorted(outputs):
        gone = sorted(references(outputs[name]) & dropped.keys())
        if gone:
            note(f"dropped output {name} (refers to dropped {', '.join(gone)})")
            del outputs[name]
    kept = ", ".join(f"{k} ({v['Type']})" for k, v in sorted(resources.items()))
    note(f"kept {kept}")
    return cfn


# --- Stack ---------------------------------------------------------------------------------------


def create_stack(cfn_client, stack_name, cfn, timeout):
    cfn_client.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(cfn),
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        OnFailure="DO_NOTHING",
    )
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        stack = cfn_client.describe_stacks(StackName=stack_name)["Stacks"][0]
        status = stack["StackStatus"]
        if status == "CREATE_COMPLETE":
            return stack
        if not status.endswith("IN_PROGRESS") or time.monotonic() > deadline:
            events = cfn_client.describe_stack_events(StackName=stack_name)["StackEvents"]
            for event in reversed(events):
                reason = event.get("ResourceStatusReason") or ""
                note(
                    f"event {event['LogicalResourceId']} ({event['ResourceType']}): "
                    f"{event['ResourceStatus']} {reason}".rstrip()
                )
            raise Failure(f"stack {stack_name} is {status}, not CREATE_COMPLETE")
        time.sleep(delay)
        delay = min(delay * 2, 2)


def check_signing_key(kms, cfn, ids):
    """The stack's signing key (the one AWS::KMS::Key), checked to be what the template asks for:
    a P-256 key that signs, with the template's key policy (the roles it names resolved to the
    stack's, its conditional statements to what the parameters' defaults make of them). None when
    the template has no key."""
    resources = cfn["Resources"]
    keys = [k for k, r in resources.items() if r.get("Type") == "AWS::KMS::Key"]
    if not keys:
        return None
    if len(keys) != 1:
        raise Failure(f"more than one KMS key: {keys}")
    props = resources[keys[0]].get("Properties", {})
    if props.get("KeySpec") != "ECC_NIST_P256" or props.get("KeyUsage") != "SIGN_VERIFY":
        raise Failure(f"the template's signing key is {props.get('KeySpec')} for {props.get('KeyUsage')}")
    key_id = ids[keys[0]]
    account = key_id.split(":")[4] if key_id.startswith("arn:") else "123456789012"
    conditions = evaluate_conditions(cfn)
    policy = resolve_sub(props.get("KeyPolicy", {}), account)
    policy = json.dumps(resolve_policy(policy, account, resources, ids, conditions))
    # moto's CloudFormation makes every AWS::KMS::Key a symmetric key (KeySpec and KeyUsage are
    # accepted and ignored) and stores its policy in a form its KMS cannot read: the key the
    # template asks for is made with KMS's own API instead, with the template's properties.
    made = kms.create_key(KeySpec=props["KeySpec"], KeyUsage=props["KeyUsage"],
                          Description=str(resolve_sub(props.get("Description", "signing key"), account)),
                          Policy=policy)["KeyMetadata"]
    note(f"signing key: made {made['KeyId']} ({made.get('KeySpec') or made.get('CustomerMasterKeySpec')}, "
         f"{made['KeyUsage']}) as the template asks; moto's CloudFormation ignores KeySpec")
    return made["Arn"]


def evaluate_conditions(cfn):
    """The template's conditions, with every parameter at its default (as the stack was made):
    the forms it uses (Fn::Not, Fn::Equals of a Ref and a string)."""
    defaults = {name: str(spec.get("Default", "")) for name, spec in cfn.get("Parameters", {}).items()}

    def value(v):
        if isinstance(v, dict):
            if set(v) == {"Ref"}:
                return defaults[v["Ref"]]
            if set(v) == {"Fn::Equals"}:
                a, b = v["Fn::Equals"]
                return value(a) == value(b)
            if set(v) == {"Fn::Not"}:
                return not value(v["Fn::Not"][0])
            raise Failure(f"condition form not handled here: {v}")
        return v

    return {name: value(c) for name, c in cfn.get("Conditions", {}).items()}


def resolve_policy(value, account, resources, ids, conditions):
    """`value` (a key policy) with Fn::If decided by `conditions` (a false branch of
    AWS::NoValue drops the list item) and Fn::GetAtt of a role's Arn made the stack role's ARN."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, yes, no = value["Fn::If"]
            return resolve_policy(yes if conditions[name] else no, account, resources, ids, conditions)
        if set(value) == {"Fn::GetAtt"}:
            target, attribute = value["Fn::GetAtt"]
            if resources.get(target, {}).get("Type") == "AWS::IAM::Role" and attribute == "Arn":
                return f"arn:aws:iam::{account}:role/{ids[target]}"
            raise Failure(f"key policy refers to {target}.{attribute}, not handled here")
        return {k: resolve_policy(v, account, resources, ids, conditions) for k, v in value.items()}
    if isinstance(value, list):
        items = [resolve_policy(v, account, resources, ids, conditions) for v in value]
        return [v for v in items if v != {"Ref": "AWS::NoValue"}]
    return value


def resolve_sub(value, account):
    """`value` with each `Fn::Sub` of the partition and account pseudo-parameters resolved."""
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
            return (value["Fn::Sub"].replace("${AWS::Partition}", "aws")
                    .replace("${AWS::AccountId}", account))
        return {k: resolve_sub(v, account) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_sub(v, account) for v in value]
    return value


def physical_ids(cfn_client, stack_name):
    out = {}
    paginator = cfn_client.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=stack_name):
        for summary in page["StackResourceSummaries"]:
            out[summary["LogicalResourceId"]] = summary.get("PhysicalResourceId")
    return out


# --- What moto's CloudFormation accepts but does not apply ---------------------------------------


def enabled(value):
    return value is True or str(value).lower() == "true"


def apply_table_extras(ddb, table, props):
    stored = ddb.describe_table(TableName=table)["Table"].get("DeletionProtectionEnabled")
    if "DeletionProtectionEnabled" in props and not isinstance(stored, bool):
        # The property is `!Ref` of a String parameter: CloudFormation converts "true" to a
        # boolean, moto stores the string, and DescribeTable then answers "true" in quotes, which
        # strict clients (the Rust SDK) cannot parse. UpdateTable stores the boolean.
        ddb.update_table(TableName=table, DeletionProtectionEnabled=enabled(stored))
        note(f"table {table}: DeletionProtectionEnabled {stored!r} stored as a boolean")
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        current = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
            note(f"table {table}: TTL already {current['TimeToLiveStatus']} on {current.get('AttributeName')}")
        elif enabled(ttl.get("Enabled")):
            ddb.update_time_to_live(
                TableName=table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
            note(f"table {table}: TTL on {ttl['AttributeName']} applied from the template")
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr and enabled(pitr.get("PointInTimeRecoveryEnabled")):
        ddb.update_continuous_backups(
            TableName=table,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
        note(f"table {table}: point-in-time recovery applied from the template")


def check_table(ddb, table, props):
    """The table the stack made against the template: key schema, attributes, TTL."""
    desc = ddb.describe_table(TableName=table)["Table"]
    want_keys = {k["AttributeName"]: k["KeyType"] for k in props["KeySchema"]}
    got_keys = {k["AttributeName"]: k["KeyType"] for k in desc["KeySchema"]}
    want_attrs = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    got_attrs = {a["AttributeName"]: a["AttributeType"] for a in desc["AttributeDefinitions"]}
    problems = []
    if got_keys != want_keys:
        problems.append(f"key schema {got_keys}, template {want_keys}")
    if got_attrs != want_attrs:
        problems.append(f"attribute definitions {got_attrs}, template {want_attrs}")
    ttl = props.get("TimeToLiveSpecification")
    if ttl and enabled(ttl.get("Enabled")):
        current = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        if (
            current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING")
            or current.get("AttributeName") != ttl["AttributeName"]
        ):
            problems.append(f"TTL {current}, template {ttl}")
    if problems:
        raise Failure(f"table {table} does not match the template: {'; '.join(problems)}")
    note(f"table {table}: keys {want_keys}, attributes {want_attrs}, TTL {ttl} as in the template")


_LIFECYCLE_RULE_KEYS = {
    "Id", "Status", "Prefix", "ExpirationInDays", "NoncurrentVersionExpiration",
    "AbortIncompleteMultipartUpload",
}


def lifecycle_rule(rule):
    unknown = set(rule) - _LIFECYCLE_RULE_KEYS
    if unknown:
        raise Failure(f"lifecycle rule {rule.get('Id')}: cannot translate {sorted(unknown)}")
    out = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "NoncurrentVersionExpiration" in rule:
        days = rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(days)}
    if "AbortIncompleteMultipartUpload" in rule:
        days = rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": int(days)}
    return out


def apply_bucket_extras(s3, bucket, props):
    applied = []
    if "PublicAccessBlockConfiguration" in props:
        config = {k: enabled(v) for k, v in props["PublicAccessBlockConfiguration"].items()}
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=config)
        applied.append("public access block")
    if "OwnershipControls" in props:
        s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=props["OwnershipControls"])
        applied.append("ownership controls")
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(
            Bucket=bucket,
            VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]},
        )
        applied.append(f"versioning {props['VersioningConfiguration']['Status']}")
    if "LifecycleConfiguration" in props:
        rules = [lifecycle_rule(r) for r in props["LifecycleConfiguration"]["Rules"]]
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
        applied.append(f"lifecycle rules {', '.join(r['ID'] for r in rules)}")
    if applied:
        note(f"bucket {bucket}: {'; '.join(applied)} applied from the template")


# --- Main ----------------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True, help="the emulator (moto server) URL")
    p.add_argument("--stack-name", required=True)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--template", default=str(TEMPLATE), help="default: infra/template.yaml")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for the stack")
    return p.parse_args(argv)


def only(resources, type_name):
    ids = [k for k, v in resources.items() if v["Type"] == type_name]
    if len(ids) != 1:
        raise Failure(f"the template must have exactly one {type_name}, not {ids}")
    return ids[0]


def main(argv=None):
    args = parse_args(argv)
    session = boto3.session.Session(
        region_name=args.region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or "test",
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or "test",
    )
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        s3={"addressing_style": "path"},
    )

    def client(service):
        return session.client(service, endpoint_url=args.endpoint, config=config)

    try:
        cfn = drop_undeployable(to_cloudformation(load_template(args.template), args.region))
        resources = cfn["Resources"]
        table_id = only(resources, "AWS::DynamoDB::Table")
        bucket_id = only(resources, "AWS::S3::Bucket")

        cfn_client = client("cloudformation")
        stack = create_stack(cfn_client, args.stack_name, cfn, args.timeout)
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        ids = physical_ids(cfn_client, args.stack_name)
        missing = sorted(set(resources) - {k for k, v in ids.items() if v})
        if missing:
            raise Failure(f"stack {args.stack_name} has no physical resource for {missing}")
        table = outputs.get("TableName") or ids[table_id]
        bucket = outputs.get("BucketName") or ids[bucket_id]
        note(f"stack {args.stack_name}: CREATE_COMPLETE, table {table}, bucket {bucket}")

        ddb = client("dynamodb")
        table_props = resources[table_id].get("Properties", {})
        apply_table_extras(ddb, table, table_props)
        check_table(ddb, table, table_props)
        apply_bucket_extras(client("s3"), bucket, resources[bucket_id].get("Properties", {}))
        signing_key = check_signing_key(client("kms"), cfn, ids)
    except Failure as err:
        note(f"ERROR: {err}")
        return 1
    except ClientError as err:
        e = err.response.get("Error", {})
        note(f"ERROR: {err.operation_name}: {e.get('Code')}: {e.get('Message')}")
        return 1
    print(json.dumps({"stack": args.stack_name, "table": table, "bucket": bucket,
                      "signing_key": signing_key}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
