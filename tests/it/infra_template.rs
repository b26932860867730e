//! The deployment template against the code: its routes are generated from the library's route
//! table (and checked with API Gateway's matching rules), it passes cfn-lint, and each function's
//! IAM role holds only what that function needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use axum::http::Method;
use registry::http::RouteGroup;
use registry::http::route_table::{CLIENT_REQUESTS, ROUTE_TABLE, api_gateway_match};
use registry::http::routes::resolve;
use registry::storage::aws::layout::attr;
use serde_json::{Value, json};

const BEGIN: &str = "  # BEGIN GENERATED ROUTES";
const END: &str = "  # END GENERATED ROUTES";

fn template_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml")
}

fn function(group: RouteGroup) -> &'static str {
    match group {
        RouteGroup::Metadata => "Metadata",
        RouteGroup::Publish => "Publish",
        RouteGroup::Tarball => "Tarball",
        RouteGroup::Auth => "Auth",
    }
}

/// A CloudFormation logical id for a route: `GET /{scope}/{package}/-/{file}` → `RouteGetScopePackageDashFile`.
fn logical_id(method: &str, path: &str) -> String {
    let mut id = format!("Route{}{}", &method[..1], method[1..].to_ascii_lowercase());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let word = if segment == "-" {
            "Dash".to_string()
        } else {
            segment.trim_matches(['{', '}']).to_string()
        };
        for part in word
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|p| !p.is_empty())
        {
            id.push_str(&part[..1].to_ascii_uppercase());
            id.push_str(&part[1..]);
        }
    }
    id
}

fn render_routes() -> String {
    let mut out = format!(
        "{BEGIN} (from ROUTE_TABLE in shared/src/http/route_table.rs; UPDATE_TEMPLATE=1 cargo test -p e2e infra_template:: rewrites them)\n"
    );
    for r in ROUTE_TABLE {
        out.push_str(&format!(
            "  {}:\n    Type: AWS::ApiGatewayV2::Route\n    Properties: {{ ApiId: !Ref HttpApi, RouteKey: \"{} {}\", Target: !Sub \"integrations/${{{}Integration}}\" }}\n",
            logical_id(r.method, r.path),
            r.method,
            r.path,
            function(r.group)
        ));
    }
    out.push_str(END);
    out
}

fn generated_block(template: &str) -> (usize, usize) {
    let start = template
        .find(BEGIN)
        .expect("template has a generated-routes block");
    let end = template
        .find(END)
        .expect("template ends its generated-routes block")
        + END.len();
    (start, end)
}

#[test]
fn routes_are_generated_from_the_route_table() {
    let path = template_path();
    let template = std::fs::read_to_string(&path).unwrap();
    let (start, end) = generated_block(&template);
    let expected = render_routes();
    if std::env::var_os("UPDATE_TEMPLATE").is_some() {
        std::fs::write(
            &path,
            format!("{}{expected}{}", &template[..start], &template[end..]),
        )
        .unwrap();
        return;
    }
    assert!(
        template[start..end] == expected,
        "infra/template.yaml's routes differ from the route table; regenerate them with UPDATE_TEMPLATE=1 cargo test -p e2e infra_template::"
    );
    let ids: BTreeSet<String> = ROUTE_TABLE
        .iter()
        .map(|r| logical_id(r.method, r.path))
        .collect();
    assert_eq!(ids.len(), ROUTE_TABLE.len(), "logical ids are unique");
}

/// The template's routes, read back from the template itself: (method, path, function).
fn template_routes() -> Vec<(String, String, String)> {
    let template = std::fs::read_to_string(template_path()).unwrap();
    let (start, end) = generated_block(&template);
    template[start..end]
        .lines()
        .filter_map(|line| {
            let key = line.split("RouteKey: \"").nth(1)?.split('"').next()?;
            let target = line.split("${").nth(1)?.split("Integration}").next()?;
            let (method, path) = key.split_once(' ')?;
            Some((method.to_string(), path.to_string(), target.to_string()))
        })
        .collect()
}

#[test]
fn every_request_reaches_the_function_that_answers_it() {
    let routes = template_routes();
    assert_eq!(routes.len(), ROUTE_TABLE.len());
    for (method, path) in CLIENT_REQUESTS {
        let expected = function(
            resolve(&Method::from_bytes(method.as_bytes()).unwrap(), path)
                .unwrap()
                .group(),
        );
        let chosen = api_gateway_match(&routes, method, path, |r| (r.0.as_str(), r.1.as_str()))
            .unwrap_or_else(|| panic!("API Gateway would answer {method} {path} with 404"));
        assert_eq!(
            chosen.2, expected,
            "{method} {path} goes to {} via {} {}",
            chosen.2, chosen.0, chosen.1
        );
    }
    // Paths no client sends reach no function (API Gateway answers 404 itself). `GET /` does:
    // a browser is sent to the web pages.
    for (method, path) in [
        ("POST", "/"),
        ("POST", "/plain"),
        ("PATCH", "/@s/n"),
        ("GET", "/a/b/c/d/e/f"),
    ] {
        assert!(
            api_gateway_match(&routes, method, path, |r| (r.0.as_str(), r.1.as_str())).is_none(),
            "{method} {path}"
        );
    }
}

fn python() -> String {
    std::env::var("TEST_EMULATOR_PYTHON")
        .expect("TEST_EMULATOR_PYTHON is not set: run the tests with tests/run")
}

#[test]
fn cfn_lint_passes() {
    // cfn-lint (and aws-sam-translator, for the SAM transform) live in the emulators' virtualenv.
    let cfn_lint = PathBuf::from(python()).with_file_name("cfn-lint");
    let out = Command::new(cfn_lint)
        .arg(template_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cfn-lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The template as JSON, decoded by cfn-lint (which understands !Ref, !Sub, !GetAtt and anchors).
fn template_json() -> Value {
    let script = "import json, sys\nfrom cfnlint.decode import decode\ntemplate, errors = decode(sys.argv[1])\nassert not errors, errors\nprint(json.dumps(template))";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(template_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn each_function_role_holds_only_its_own_permissions() {
    let t = template_json();
    let resources = t["Resources"].as_object().unwrap();
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        (
            "MetadataRole",
            &[
                "dynamodb:GetItem",
                // A rendering patched with the versions the writes since touched, read together.
                "dynamodb:BatchGetItem",
                "dynamodb:Query",
                "dynamodb:PutItem",
                "dynamodb:DeleteItem",
                "s3:GetObject",
                "s3:PutObject",
                // The pull-through cache: a missing upstream object is a 404, not a 403.
                "s3:ListBucket",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
            ][..],
        ),
        (
            "TarballRole",
            &[
                "dynamodb:GetItem",
                // The pull-through cache: an upstream package's kept versions.
                "dynamodb:Query",
                "dynamodb:PutItem",
                "dynamodb:DeleteItem",
                "s3:GetObject",
                "s3:PutObject",
                // A large upstream tarball that failed its check: its multipart upload dropped.
                "s3:AbortMultipartUpload",
                "s3:ListBucket",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
            ][..],
        ),
        (
            "PublishRole",
            &[
                "dynamodb:GetItem",
                "dynamodb:BatchGetItem",
                "dynamodb:Query",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:ConditionCheckItem",
                "dynamodb:DeleteItem",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:GetObject",
                "s3:ListBucket",
                // No KMS action: the signing key's own policy grants this role its use (checked
                // by only_the_publish_role_signs_and_only_with_the_signing_key).
                "logs:CreateLogStream",
                "logs:PutLogEvents",
            ][..],
        ),
        (
            "AuthRole",
            &[
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:DeleteItem",
                "dynamodb:Query",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
            ][..],
        ),
    ]);
    // Writes that only cache GitHub answers or keep token records are confined by partition key.
    let confined: BTreeMap<&str, &[&str]> = BTreeMap::from([
        (
            "MetadataRole",
            &["dynamodb:PutItem", "dynamodb:DeleteItem"][..],
        ),
        (
            "TarballRole",
            &["dynamodb:PutItem", "dynamodb:DeleteItem"][..],
        ),
        ("PublishRole", &["dynamodb:DeleteItem"][..]),
        (
            "AuthRole",
            &[
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:DeleteItem",
                "dynamodb:Query",
            ][..],
        ),
    ]);
    let roles: Vec<&String> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::IAM::Role")
        .map(|(k, _)| k)
        .collect();
    assert_eq!(roles.len(), 4, "one role per function: {roles:?}");
    for (role, actions) in &allowed {
        let r = &resources[*role];
        assert!(
            r["Properties"]["ManagedPolicyArns"].is_null(),
            "{role}: no managed policies"
        );
        for policy in r["Properties"]["Policies"].as_array().unwrap() {
            for statement in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
                if statement["Effect"] == "Deny" {
                    // Denials only narrow: checked on their own below.
                    continue;
                }
                assert_eq!(statement["Effect"], "Allow");
                let stmt_actions: Vec<&str> = match &statement["Action"] {
                    Value::String(a) => vec![a.as_str()],
                    Value::Array(a) => a.iter().map(|v| v.as_str().unwrap()).collect(),
                    other => panic!("{role}: odd Action {other}"),
                };
                for action in &stmt_actions {
                    assert!(!action.contains('*'), "{role}: wildcard action {action}");
                    assert!(actions.contains(action), "{role} must not hold {action}");
                    if confined[*role].contains(action) {
                        assert!(
                            statement["Condition"]
                                .to_string()
                                .contains("dynamodb:LeadingKeys"),
                            "{role}: {action} must be confined to its own partition keys"
                        );
                    }
                }
                let resources_text = statement["Resource"].to_string();
                assert_ne!(statement["Resource"], "*", "{role}: wildcard resource");
                let names_own = [
                    "Table",
                    "Bucket",
                    "log-group:/aws/lambda/${AWS::StackName}-",
                    "SigningKey",
                ]
                .iter()
                .any(|n| resources_text.contains(n));
                assert!(
                    names_own,
                    "{role}: a statement names something other than the table, the bucket, the signing key or its log group: {resources_text}"
                );
                if stmt_actions.iter().any(|a| a.starts_with("logs:")) {
                    let own = role.trim_end_matches("Role").to_ascii_lowercase();
                    assert!(
                        resources_text.contains(&format!("-{own}:*")),
                        "{role}: logs of its own function only"
                    );
                }
            }
        }
    }
    // The one role that may update and put anywhere in the table may not change or remove an
    // audit event (the log is append-only; the other roles' writes are confined to keys that
    // exclude it).
    let publish_denials: Vec<&Value> = resources["PublishRole"]["Properties"]["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap())
        .filter(|s| s["Effect"] == "Deny")
        .collect();
    assert!(
        publish_denials.iter().any(|s| {
            s["Action"] == json!(["dynamodb:UpdateItem", "dynamodb:DeleteItem"])
                && s["Condition"]["ForAnyValue:StringLike"]["dynamodb:LeadingKeys"]
                    == json!(["~audit/*"])
        }),
        "PublishRole: updates and deletes of ~audit/* are denied: {publish_denials:?}"
    );
    for (role, keys) in [
        ("MetadataRole", "dynamodb:LeadingKeys"),
        ("TarballRole", "dynamodb:LeadingKeys"),
        ("AuthRole", "dynamodb:LeadingKeys"),
    ] {
        for policy in resources[role]["Properties"]["Policies"]
            .as_array()
            .unwrap()
        {
            for statement in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
                let text = statement.to_string();
                let deletes =
                    text.contains("dynamodb:DeleteItem") || text.contains("dynamodb:UpdateItem");
                assert!(
                    !(deletes && text.contains(keys) && text.contains("~audit")),
                    "{role}: may change or remove audit events: {text}"
                );
            }
        }
    }
    assert_eq!(
        t["Globals"]["Function"]["Environment"]["Variables"]["REGISTRY_AUDIT_RETENTION_DAYS"],
        json!({"Ref": "AuditRetentionDays"}),
        "the audit retention is a parameter of the deployment"
    );
    // The deployment's other promises.
    let bucket = &resources["Bucket"]["Properties"];
    let block = &bucket["PublicAccessBlockConfiguration"];
    for k in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[k], true, "{k}");
    }
    assert!(!bucket["BucketEncryption"].is_null());
    assert!(
        resources["BucketPolicy"]
            .to_string()
            .contains("aws:SecureTransport")
    );
    let table = &resources["Table"]["Properties"];
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(table["TimeToLiveSpecification"]["AttributeName"], attr::TTL);
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    let keys: Vec<(String, String)> = table["KeySchema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().unwrap().into(),
                k["KeyType"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (attr::PK.to_string(), "HASH".to_string()),
            (attr::SK.to_string(), "RANGE".to_string())
        ],
        "the key schema the AWS backend uses"
    );
    assert!(
        t["Parameters"]
            .as_object()
            .unwrap()
            .values()
            .all(|p| !p.to_string().to_ascii_lowercase().contains("secret")),
        "no secret is a parameter"
    );
}

#[test]
fn functions_deploy_what_build_functions_builds_with_the_lambda_profile() {
    let t = template_json();
    for group in RouteGroup::ALL {
        let name = function(group);
        let code = &t["Resources"][format!("{name}Function")]["Properties"]["CodeUri"];
        assert_eq!(
            code.as_str(),
            Some(format!("../target/lambda/{}/", name.to_ascii_lowercase()).as_str()),
            "{name}Function"
        );
    }
    let script = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/build-functions.sh"),
    )
    .unwrap();
    assert!(script.contains("--profile lambda"), "{script}");
    assert!(script.contains("--lambda-dir target/lambda"), "{script}");
    let manifest =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
            .unwrap();
    assert!(
        manifest.contains("[profile.lambda]"),
        "the lambda profile is gone"
    );
}

/// The signing key is a P-256 signing key kept with the data, and its key policy is least
/// privilege: the account (and through IAM, its principals) may administer the key but not sign,
/// verify, read its public key or grant any of that; only the publish function's role, named in
/// the key policy itself, may sign and read the public key; an operator role may too for the
/// backfill, only when SigningOperatorArn is set. No role's own policy holds a KMS action.
#[test]
fn only_the_publish_role_signs_and_only_with_the_signing_key() {
    let t = template_json();
    let resources = t["Resources"].as_object().unwrap();
    let key = &resources["SigningKey"];
    assert_eq!(key["Type"], "AWS::KMS::Key");
    assert_eq!(key["Properties"]["KeySpec"], "ECC_NIST_P256");
    assert_eq!(key["Properties"]["KeyUsage"], "SIGN_VERIFY");
    assert_eq!(key["DeletionPolicy"], "Retain");
    let statements = key["Properties"]["KeyPolicy"]["Statement"]
        .as_array()
        .unwrap();
    let actions_of = |statement: &Value| -> Vec<String> {
        match &statement["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
            other => panic!("Action {other}"),
        }
    };
    // Whether an action pattern of a policy (`kms:Get*`, `kms:*`, `*`) covers `action`.
    let covers = |pattern: &str, action: &str| {
        let pattern = pattern.to_ascii_lowercase();
        let action = action.to_ascii_lowercase();
        match pattern.strip_suffix('*') {
            Some(prefix) => action.starts_with(prefix),
            None => pattern == action,
        }
    };
    // The use of the key, and what would hand its use on (a grant) or widen it.
    let using = [
        "kms:Sign",
        "kms:Verify",
        "kms:GetPublicKey",
        "kms:CreateGrant",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
    ];
    let (mut root, mut publish, mut operator) = (0, 0, 0);
    for statement in statements {
        if let Some(conditional) = statement.get("Fn::If") {
            // The backfill operator's statement: only when SigningOperatorArn is set, and then
            // only for that principal, to sign and read the public key.
            assert_eq!(conditional[0], "SigningOperator", "{statement}");
            assert_eq!(
                conditional[2],
                json!({ "Ref": "AWS::NoValue" }),
                "{statement}"
            );
            let granted = &conditional[1];
            assert_eq!(granted["Effect"], "Allow");
            assert_eq!(
                granted["Principal"]["AWS"],
                json!({ "Ref": "SigningOperatorArn" })
            );
            assert_eq!(actions_of(granted), ["kms:Sign", "kms:GetPublicKey"]);
            operator += 1;
            continue;
        }
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        let principal = &statement["Principal"]["AWS"];
        let actions = actions_of(statement);
        if principal.to_string().contains(":root") {
            // The account administers the key and may delegate that to IAM, but neither the
            // account nor any IAM principal through it may use the key.
            assert_eq!(
                principal,
                &json!({ "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root" })
            );
            for action in &actions {
                for use_ in using {
                    assert!(
                        !covers(action, use_),
                        "the account's {action} allows {use_}: any IAM principal given KMS rights could use the key"
                    );
                }
            }
            for needed in [
                "kms:PutKeyPolicy",
                "kms:DescribeKey",
                "kms:ScheduleKeyDeletion",
            ] {
                assert!(
                    actions.iter().any(|a| covers(a, needed)),
                    "the account cannot {needed}: {actions:?}"
                );
            }
            root += 1;
        } else {
            // Only the publish function's role signs (and reads the public key), by the role
            // itself rather than the account.
            assert_eq!(
                principal,
                &json!({ "Fn::GetAtt": ["PublishRole", "Arn"] }),
                "{statement}"
            );
            assert_eq!(actions, ["kms:Sign", "kms:GetPublicKey"]);
            publish += 1;
        }
    }
    assert_eq!((root, publish, operator), (1, 1, 1), "{statements:?}");
    assert_eq!(
        t["Parameters"]["SigningOperatorArn"]["Default"], "",
        "nobody but the publish function signs by default"
    );
    assert_eq!(
        t["Conditions"]["SigningOperator"],
        json!({ "Fn::Not": [{ "Fn::Equals": [{ "Ref": "SigningOperatorArn" }, ""] }] })
    );
    // No role's own policy grants any KMS action: use comes from the key policy alone.
    for (name, resource) in resources {
        if resource["Type"] != "AWS::IAM::Role" {
            continue;
        }
        for policy in resource["Properties"]["Policies"].as_array().unwrap() {
            for statement in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
                let text = statement["Action"].to_string();
                assert!(!text.contains("kms:"), "{name} holds {text}");
            }
        }
    }
    let env = &resources["PublishFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(
        env["REGISTRY_SIGNING_KMS_KEY"],
        json!({ "Fn::GetAtt": ["SigningKey", "Arn"] })
    );
}
