//! As shipped: the deployment files, deployed. `scripts/render-deploy.py` renders the ECS
//! container environment from `infra/media-ws.yaml` and the function environment from
//! `template.yaml` (CloudFormation intrinsics resolved from cfn-lint's template decoder, with
//! exactly the parameters of `infra/params/media-ws-prod.json` and `samconfig.toml`, which
//! the deploy commands of docs/deploy.md read), reads `infra/ec2/media-ws.env.example`, and
//! lists the SSM parameters of `infra/params/ssm-parameters.txt`. This test creates those parameters and the stack's
//! DynamoDB table in moto, starts the real `media-lambda` and `media-ws` with those
//! environments — changed only where a deployment injects its own endpoints: the port, the
//! AWS endpoint, the ECS agent URI and the ElevenLabs API base — and plays Twilio: the signed
//! voice webhook → TwiML → its `<Stream url>` dialled with the upgrade signature Twilio sends →
//! an agent call echoed back, with task protection held and the token single-use; and an
//! outbound call, only to the allowlisted number, with `POST /calls`'s own key, placed once per
//! `Idempotency-Key` through the shared registry table. Both signatures are computed by
//! Twilio's own library (twilio-python), not by the code under test.
//!
//! A parameter renamed in one file and not another fails here: the renderer refuses any
//! `ssm:` reference `infra/params/ssm-parameters.txt` does not create, and a process given a reference moto lacks exits 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alb;
use media_test_support::lambda as lambda_support;
use media_test_support::media_ws as support;
use media_test_support::twilio_rest;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use lambda_support::{event, twilio_post, LambdaProcess, Moto, RuntimeApi, EVENT_URL};
use lambda_support::{TEST_AUTH_TOKEN, TEST_CALLS_API_KEY, TEST_MINT_API_KEY};
use serde_json::{json, Value};
use support::fake_el::{Behaviour, FakeEl};
use support::{
    connected, fake_ecs_agent, start_with, stop, tone, Caller, Server, ACCOUNT_SID, CALL_SID,
};

const XI_KEY: &str = "xi-as-shipped-key";
/// Twilio's REST origin where a test makes no REST request: a closed loopback port, so a
/// request that should not happen fails at once instead of leaving the machine.
const NO_REST: &str = "http://127.0.0.1:9";
const SECOND_CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
/// The callee of the outbound call: inside the shipped `OutboundAllowlist` (`+1555123*`).
const ALLOWED_CALLEE: &str = "+15551230001";
/// A number outside it (one of Twilio's magic test numbers).
const OTHER_CALLEE: &str = "+15005550006";

/// The renderer's JSON; its stderr is shown when it refuses the files.
fn render() -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/render-deploy.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .output()
        .expect(
            "python3 runs scripts/render-deploy.py (cfn-lint from scripts/requirements-test.txt)",
        );
    assert!(
        out.status.success(),
        "the shipped deployment files disagree:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What Twilio sends as `X-Twilio-Signature` for `url` and `form`, computed by Twilio's own
/// library (twilio-python's RequestValidator), not by the code under test.
fn twilio_signature(url: &str, form: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/twilio_sign.py");
    let out = std::process::Command::new("python3")
        .args([script, TEST_AUTH_TOKEN, url, form])
        .output()
        .expect(
            "python3 runs tests/interop/twilio_sign.py (twilio from scripts/requirements-test.txt)",
        );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Twilio's voice webhook for `fields`, as API Gateway delivers it to the TwimlWebhookUrl,
/// signed by Twilio's library.
fn webhook(fields: &[(&str, &str)]) -> Value {
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut e = event("twiml");
    e["headers"]["x-twilio-signature"] = twilio_signature(EVENT_URL, &form).into();
    e["body"] = base64::engine::general_purpose::STANDARD
        .encode(&form)
        .into();
    e["isBase64Encoded"] = true.into();
    e
}

/// Twilio's request to `url` (absolute, query included) with `fields`, as API Gateway
/// delivers it, signed by Twilio's library over exactly that URL.
fn twilio_request(url: &str, fields: &[(&str, &str)]) -> Value {
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut e = twilio_post(url);
    e["headers"]["x-twilio-signature"] = twilio_signature(url, &form).into();
    e["body"] = base64::engine::general_purpose::STANDARD
        .encode(&form)
        .into();
    e
}

/// The value a test stores under each parameter `infra/params/ssm-parameters.txt` names, by its leaf name.
fn parameter_value(name: &str) -> &'static str {
    match name.rsplit('/').next().unwrap() {
        "shared-secret" => "as-shipped-jwt-secret-0123456789",
        "twilio-auth-token" => TEST_AUTH_TOKEN,
        "mint-api-key" => TEST_MINT_API_KEY,
        "calls-api-key" => TEST_CALLS_API_KEY,
        "elevenlabs-api-key" => XI_KEY,
        other => panic!(
            "infra/params/ssm-parameters.txt names a parameter this test does not know: {other}"
        ),
    }
}

fn env_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// A rendered environment with what a deployment injects: the port, moto as the AWS
/// endpoint (with test credentials), and the given endpoints.
fn deployed(
    mut env: BTreeMap<String, String>,
    moto: &Moto,
    injected: &[(&str, &str)],
) -> Vec<(String, String)> {
    if env.contains_key("PORT") {
        env.insert("PORT".into(), "0".into());
    }
    for (k, v) in moto.env() {
        if k != "AWS_REGION" || !env.contains_key("AWS_REGION") {
            env.insert(k, v);
        }
    }
    for (k, v) in injected {
        env.insert((*k).to_string(), (*v).to_string());
    }
    env.into_iter().collect()
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The `<Stream url>` of a TwiML answer.
fn stream_url(xml: &str) -> String {
    let doc = roxmltree::Document::parse(xml).unwrap();
    doc.descendants()
        .find(|n| n.has_tag_name("Stream"))
        .and_then(|n| n.attribute("url"))
        .unwrap()
        .to_string()
}

/// Dials a `<Stream url>` as Twilio does behind the ALB: TLS ends at the load balancer, the
/// request keeps the public Host, and Twilio signs the wss:// URL exactly as written.
async fn dial(ws: &Server, url: &str) -> Result<support::Ws, u16> {
    let rest = url.strip_prefix("wss://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let signature = twilio_signature(url, "");
    ws.connect(path, &[("host", host), ("x-twilio-signature", &signature)])
        .await
}

/// Dials a `<Stream url>` through the load balancer at `alb` (see [`dial`]).
async fn dial_via(alb: std::net::SocketAddr, url: &str) -> Result<support::Ws, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let rest = url.strip_prefix("wss://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut req = format!("ws://{alb}{path}").into_client_request().unwrap();
    req.headers_mut().insert("host", host.parse().unwrap());
    req.headers_mut().insert(
        "x-twilio-signature",
        twilio_signature(url, "").parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect through the ALB failed: {e}"),
    }
}

/// Plays a short call with a tone and checks the agent's echo comes back intact.
async fn echoed_call(ws: support::Ws, call_sid: &str) -> Caller {
    let caller = Caller::new(ws);
    caller.send(connected());
    caller.send(start_with(call_sid, json!({"CallSid": call_sid})));
    let sent = tone(3, 25);
    caller.play(&sent, 2, Duration::from_millis(20)).await;
    let log = caller
        .wait("the agent's echo", |l| l.audio.len() >= sent.len())
        .await;
    assert_eq!(&log.audio[..sent.len()], &sent[..], "echoed byte for byte");
    caller
}

/// The fake ElevenLabs agent, private: it wants the key the deploy stores in SSM.
async fn private_agent() -> FakeEl {
    FakeEl::start(Behaviour {
        api_key: Some(XI_KEY),
        ..Behaviour::default()
    })
    .await
}

/// moto with the shipped SSM parameters and the stack's tables.
async fn shipped_aws(rendered: &Value) -> Moto {
    let moto = Moto::start().await;
    for name in rendered["ssm_parameters"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        moto.put(name, parameter_value(name)).await;
    }
    let tables = rendered["ecs_tables"].as_object().unwrap();
    for table in tables.values() {
        moto.create_table(
            table["name"].as_str().unwrap(),
            table["hash_key"].as_str().unwrap(),
            table["ttl_attribute"].as_str().unwrap(),
        )
        .await;
    }
    moto
}

#[tokio::test]
async fn the_shipped_files_run_as_one_system() {
    let rendered = render();
    let moto = shipped_aws(&rendered).await;
    let actions = &rendered["ecs_task_role_actions"]["dynamodb"];
    assert_eq!(
        actions,
        &json!([
            "dynamodb:BatchGetItem",
            "dynamodb:DeleteItem",
            "dynamodb:PutItem"
        ]),
        "the task role may write the registry, read its agent slots, and nothing more"
    );
    assert_eq!(
        rendered["lambda"]["role_actions"]["dynamodb"],
        json!([
            "dynamodb:BatchGetItem",
            "dynamodb:DeleteItem",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem"
        ]),
        "the function may keep its idempotency records in the registry and nothing more"
    );
    assert_eq!(
        rendered["lambda"]["env"]["CALL_REGISTRY_TABLE"],
        rendered["ecs"]["env"]["CALL_REGISTRY_TABLE"],
        "one registry table for both"
    );

    let agent = private_agent().await;
    let agent_api = agent.api_base();
    let (ecs_agent_uri, protection) = fake_ecs_agent().await;

    // media-lambda, with the function environment of template.yaml.
    let lambda_env = deployed(env_map(&rendered["lambda"]["env"]), &moto, &[]);
    let api = RuntimeApi::start().await;
    let lambda = LambdaProcess::start(&api, &lambda_env);

    // media-ws as the Fargate task runs it (ECS injects ECS_AGENT_URI).
    let ecs_env = env_map(&rendered["ecs"]["env"]);
    let registry_table = ecs_env["CALL_REGISTRY_TABLE"].clone();
    let ecs_env = deployed(
        ecs_env,
        &moto,
        &[
            ("ECS_AGENT_URI", ecs_agent_uri.as_str()),
            ("ELEVENLABS_API_BASE", agent_api.as_str()),
            ("TWILIO_API_BASE", NO_REST),
        ],
    );
    let task = Server::start(&refs(&ecs_env)).await;
    // media-ws as the EC2 unit runs it, from the shipped environment file.
    let ec2_env = deployed(
        env_map(&rendered["ec2"]["env"]),
        &moto,
        &[
            ("ELEVENLABS_API_BASE", agent_api.as_str()),
            ("TWILIO_API_BASE", NO_REST),
        ],
    );
    let instance = Server::start(&refs(&ec2_env)).await;
    api.wait_ready(Duration::from_secs(20)).await;
    assert!(api.init_error().is_none(), "{}", lambda.logs());

    // Twilio's voice webhook, as API Gateway delivers it to the TwimlWebhookUrl output.
    let resp = api
        .call(&webhook(&[
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("CallSid", CALL_SID),
            ("CallStatus", "ringing"),
            ("Direction", "inbound"),
            ("From", "+15005550001"),
            ("To", "+15005550006"),
        ]))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", lambda.logs());
    let url = stream_url(&resp.body);
    let base = &rendered["lambda"]["env"]["STREAM_URL_BASE"];
    assert!(url.starts_with(&format!("{}/jwt/", base.as_str().unwrap())));

    // Its <Stream url>, on the Fargate task: an agent call echoed back.
    let conn = dial(&task, &url)
        .await
        .unwrap_or_else(|s| panic!("upgrade refused with {s}:\n{}", task.logs()));
    let caller = echoed_call(conn, CALL_SID).await;
    assert_eq!(
        agent.signed_url_requests(),
        1,
        "private agent: a signed URL"
    );
    let init = agent.conversation(0).init.unwrap();
    assert_eq!(init["dynamic_variables"]["CallSid"], CALL_SID);
    {
        let seen = protection.lock().unwrap();
        assert_eq!(
            seen.first().map(|r| r.2["ProtectionEnabled"].clone()),
            Some(json!(true))
        );
    }
    caller.send(stop(200));
    let log = caller.wait("the close", |l| l.close.is_some()).await;
    assert_eq!(log.close, Some((1000, "stream stopped".into())));

    // The same stream URL again — a replay from Twilio's request inspector or an ALB access
    // log — is refused before the upgrade, on this task and on any other using the table.
    assert_eq!(dial(&task, &url).await.err(), Some(401));
    assert_eq!(
        task.metric("media_handshake_rejections_total{reason=\"token_replayed\"}")
            .await,
        1.0
    );
    let keys = moto.table_keys(&registry_table).await;
    assert_eq!(
        keys.iter().filter(|k| k.starts_with("jti#")).count(),
        1,
        "{keys:?}"
    );

    // A second call, to the EC2 instance: same secrets, same webhook, same signature check.
    let resp = api
        .call(&webhook(&[
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("CallSid", SECOND_CALL_SID),
            ("Direction", "inbound"),
        ]))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let conn = dial(&instance, &stream_url(&resp.body))
        .await
        .unwrap_or_else(|s| panic!("upgrade refused with {s}:\n{}", instance.logs()));
    let caller = echoed_call(conn, SECOND_CALL_SID).await;
    caller.send(stop(200));
    let log = caller.wait("the close", |l| l.close.is_some()).await;
    assert_eq!(log.close, Some((1000, "stream stopped".into())));

    // The alarms of both templates watch what these processes print: the task's interval
    // line (its counts of the replayed handshake above) and per-call lines, the function's.
    let interval = "\"HandshakeRejections\":1";
    for _ in 0..150 {
        if task.logs().contains(interval) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_alarms_watch_what_is_emitted(&rendered, &[task.logs(), lambda.logs()]);

    // The Fargate call's CallSid claim was released when it ended.
    for _ in 0..100 {
        if !moto
            .table_keys(&registry_table)
            .await
            .iter()
            .any(|k| k.starts_with("call#"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "call claim not released: {:?}",
        moto.table_keys(&registry_table).await
    );
}

/// EMF metrics in `logs`: (namespace, metric, dimension names sorted) → the dimension
/// values seen with it.
type Emitted = BTreeMap<(String, String, Vec<String>), Vec<BTreeMap<String, String>>>;

fn emitted(logs: &[String]) -> Emitted {
    let mut out = Emitted::new();
    for line in logs.iter().flat_map(|l| l.lines()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(directives) = v["_aws"]["CloudWatchMetrics"].as_array() else {
            continue;
        };
        for d in directives {
            let ns = d["Namespace"].as_str().unwrap().to_string();
            for set in d["Dimensions"].as_array().unwrap() {
                let mut names: Vec<String> = set
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_string())
                    .collect();
                names.sort();
                let values: BTreeMap<String, String> = names
                    .iter()
                    .map(|n| (n.clone(), v[n].as_str().unwrap_or_default().to_string()))
                    .collect();
                for m in d["Metrics"].as_array().unwrap() {
                    let key = (
                        ns.clone(),
                        m["Name"].as_str().unwrap().to_string(),
                        names.clone(),
                    );
                    out.entry(key).or_default().push(values.clone());
                }
            }
        }
    }
    out
}

/// Every rendered alarm on one of our namespaces watches a metric these processes printed,
/// with exactly its dimension names, and values they printed — an `Ending` may also be any
/// the binaries can print ([`media_orchestrator::relay::ENDINGS`]), since one run cannot end
/// calls every way. AWS's own namespaces (`AWS/…`) are AWS's to emit.
fn assert_alarms_watch_what_is_emitted(rendered: &Value, logs: &[String]) {
    let emitted = emitted(logs);
    let alarms = rendered["alarms"]
        .as_array()
        .expect("the renderer lists the alarms");
    assert!(!alarms.is_empty());
    let mut ours = 0;
    for alarm in alarms {
        let ns = alarm["namespace"].as_str().unwrap();
        if ns.starts_with("AWS/") {
            continue;
        }
        ours += 1;
        let dims: BTreeMap<String, String> = alarm["dimensions"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let key = (
            ns.to_string(),
            alarm["metric"].as_str().unwrap().to_string(),
            dims.keys().cloned().collect::<Vec<_>>(),
        );
        let seen = emitted.get(&key).unwrap_or_else(|| {
            panic!(
                "alarm {} watches {key:?}, which no binary printed; printed: {:#?}",
                alarm["name"],
                emitted.keys().collect::<Vec<_>>()
            )
        });
        for (name, value) in &dims {
            let printed = seen.iter().any(|s| &s[name] == value);
            let possible =
                name == "Ending" && media_orchestrator::relay::ENDINGS.contains(&value.as_str());
            assert!(
                printed || possible,
                "alarm {} wants {name}={value}; printed: {seen:?}",
                alarm["name"]
            );
        }
    }
    assert!(ours > 0, "no alarm on our own metrics");
}

/// An outbound call on the shipped files: `POST /calls` on the function as `template.yaml`
/// configures it (`OutboundFrom`, `OutboundAllowlist`, the `calls-api-key` and the Auth Token
/// from SSM, the registry table for `Idempotency-Key`), Twilio's signed answer webhook and
/// AMD callback, the stream on the Fargate task. Twilio's REST origin is the one endpoint
/// swapped (for media-sim's strict fake), as the ElevenLabs API base is.
#[tokio::test]
async fn an_outbound_call_runs_on_the_shipped_files() {
    let Shipped {
        rendered,
        _moto: moto,
        agent,
        rest,
        api,
        lambda,
        ecs_env,
        account,
    } = shipped(true).await;
    let task = Server::start(&refs(&ecs_env)).await;
    api.wait_ready(Duration::from_secs(20)).await;
    assert!(api.init_error().is_none(), "{}", lambda.logs());

    let body = |to: &str| {
        json!({
            "to": to,
            "firstMessage": "Hello, this is the clinic calling.",
            "dynamicVariables": {"appointment": "Tuesday 10:30"},
            "voicemail": "message",
            "voicemailMessage": "Please call the clinic back."
        })
        .to_string()
    };
    let mut create = event("calls");
    create["headers"]["authorization"] = format!("Bearer {TEST_CALLS_API_KEY}").into();
    create["headers"]["idempotency-key"] = "as-shipped-appointment-reminder-1".into();
    create["body"] = body(ALLOWED_CALLEE).into();

    // The key that mints stream tokens cannot dial; a number outside the allowlist is refused
    // before Twilio hears of it.
    let mut minted = create.clone();
    minted["headers"]["authorization"] = format!("Bearer {TEST_MINT_API_KEY}").into();
    assert_eq!(api.call(&minted).await.status, 401);
    let mut elsewhere = create.clone();
    elsewhere["headers"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency-key");
    elsewhere["body"] = body(OTHER_CALLEE).into();
    let resp = api.call(&elsewhere).await;
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(
        resp.json(),
        json!({"ok": false, "error": "destination_not_allowed"})
    );
    assert!(rest.requests().is_empty(), "nothing reached Twilio");

    let resp = api.call(&create).await;
    assert_eq!(resp.status, 201, "{resp:?}\n{}", lambda.logs());
    let call_sid = resp.json()["callSid"].as_str().unwrap().to_string();

    // The client's retry, same Idempotency-Key: the first answer again, no second call.
    let replay = api.call(&create).await;
    assert_eq!(replay.status, 201, "{replay:?}\n{}", lambda.logs());
    assert_eq!(replay.json()["callSid"], call_sid.as_str());
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        rest.requests().iter().filter(|r| r.created).count(),
        1,
        "one create reached Twilio: {:?}",
        rest.requests()
    );
    let keys = moto
        .table_keys(lambda_env_value(&rendered, "CALL_REGISTRY_TABLE"))
        .await;
    assert!(
        keys.iter().any(|k| k.starts_with("idem#calls#"))
            && !keys.iter().any(|k| k.contains("as-shipped-appointment")),
        "the key is kept hashed in the shared registry: {keys:?}"
    );
    let created = rest.requests()[0].clone();
    assert_eq!(
        created.field("From"),
        Some(lambda_env_value(&rendered, "OUTBOUND_FROM"))
    );
    let answer_url = created.field("Url").unwrap().to_string();
    let amd_url = created.field("AsyncAmdStatusCallback").unwrap().to_string();

    // Answered: Twilio requests the Url, dials the <Stream url> on the task.
    let resp = api
        .call(&twilio_request(
            &answer_url,
            &[
                ("AccountSid", account.as_str()),
                ("CallSid", call_sid.as_str()),
                ("CallStatus", "in-progress"),
                ("Direction", "outbound-api"),
            ],
        ))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", lambda.logs());
    let conn = dial(&task, &stream_url(&resp.body))
        .await
        .unwrap_or_else(|s| panic!("upgrade refused with {s}:\n{}", task.logs()));
    let caller = echoed_call(conn, &call_sid).await;
    let init = agent.conversation(0).init.unwrap();
    assert_eq!(
        init["conversation_config_override"]["agent"]["first_message"],
        "Hello, this is the clinic calling."
    );
    assert_eq!(init["dynamic_variables"]["appointment"], "Tuesday 10:30");

    // The verdict: a machine, after its beep — the voicemail goes on the call.
    let resp = api
        .call(&twilio_request(
            &amd_url,
            &[
                ("AccountSid", account.as_str()),
                ("AnsweredBy", "machine_end_beep"),
                ("CallSid", call_sid.as_str()),
            ],
        ))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", lambda.logs());
    let update = rest.requests()[1].clone();
    assert_eq!(update.call_sid, call_sid);
    assert!(update
        .field("Twiml")
        .unwrap()
        .contains("<Say>Please call the clinic back.</Say><Hangup />"));
    // Twilio's retry of that callback (same I-Twilio-Idempotency-Token) acts no second time.
    let retried = api
        .call(&twilio_request(
            &amd_url,
            &[
                ("AccountSid", account.as_str()),
                ("AnsweredBy", "machine_end_beep"),
                ("CallSid", call_sid.as_str()),
            ],
        ))
        .await;
    assert_eq!(retried.status, 200, "{retried:?}\n{}", lambda.logs());
    assert_eq!(rest.requests().len(), 2, "{:?}", rest.requests());
    caller.send(stop(200));
    let log = caller.wait("the close", |l| l.close.is_some()).await;
    assert_eq!(log.close, Some((1000, "stream stopped".into())));
    for logs in [lambda.logs(), task.logs()] {
        assert!(
            !logs.contains("Tuesday") && !logs.contains("clinic"),
            "{logs}"
        );
    }
}

/// The stack as deployed from the rendered files, around media-ws tasks a test starts from
/// `ecs_env`: moto with the shipped SSM parameters and the tables, a fake agent, the fake ECS
/// agent, media-sim's strict Twilio REST API, and the real media-lambda on the Runtime API
/// (its REST origin swapped for the fake when `lambda_rest`).
struct Shipped {
    rendered: Value,
    _moto: Moto,
    agent: FakeEl,
    rest: twilio_rest::FakeTwilioRest,
    api: RuntimeApi,
    lambda: LambdaProcess,
    ecs_env: Vec<(String, String)>,
    account: String,
}

async fn shipped(lambda_rest: bool) -> Shipped {
    let rendered = render();
    let moto = shipped_aws(&rendered).await;
    let agent = private_agent().await;
    let agent_api = agent.api_base();
    let (ecs_agent_uri, _protection) = fake_ecs_agent().await;
    let lambda_env = env_map(&rendered["lambda"]["env"]);
    let account = lambda_env["TWILIO_ACCOUNT_SID"].clone();
    let rest = twilio_rest::FakeTwilioRest::start("127.0.0.1:0", &account, TEST_AUTH_TOKEN)
        .await
        .unwrap();
    let rest_base = rest.base_url();
    let injected: &[(&str, &str)] = if lambda_rest {
        &[("TWILIO_API_BASE", &rest_base)]
    } else {
        &[]
    };
    let lambda_env = deployed(lambda_env, &moto, injected);
    let api = RuntimeApi::start().await;
    let lambda = LambdaProcess::start(&api, &lambda_env);
    let ecs_env = deployed(
        env_map(&rendered["ecs"]["env"]),
        &moto,
        &[
            ("ECS_AGENT_URI", ecs_agent_uri.as_str()),
            ("ELEVENLABS_API_BASE", agent_api.as_str()),
            ("TWILIO_API_BASE", rest_base.as_str()),
        ],
    );
    Shipped {
        rendered,
        _moto: moto,
        agent,
        rest,
        api,
        lambda,
        ecs_env,
        account,
    }
}

fn lambda_env_value<'a>(rendered: &'a Value, name: &str) -> &'a str {
    rendered["lambda"]["env"][name].as_str().unwrap()
}

/// A call of `seconds` through the ALB: webhook'd stream URL dialled, a tone played in real
/// time, the echo heard; Twilio sends `stop` at its end. Returns the caller's log, the audio
/// sent and how long the call took.
async fn long_call(
    alb: std::net::SocketAddr,
    url: String,
    call_sid: String,
    seconds: usize,
) -> (support::CallerLog, usize, Duration) {
    let started = std::time::Instant::now();
    let conn = dial_via(alb, &url)
        .await
        .unwrap_or_else(|s| panic!("upgrade refused with {s}"));
    let caller = Caller::new(conn);
    caller.send(connected());
    caller.send(start_with(&call_sid, json!({"CallSid": call_sid})));
    let sent = tone(4, seconds * 50);
    let seq = caller.play(&sent, 2, Duration::from_millis(20)).await;
    // The last second's echo comes back (the agent's echo and the playout lead add ~0.5 s).
    for _ in 0..100 {
        let log = caller.snapshot();
        if log.audio.len() >= sent.len() || log.ended {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    caller.send(stop(seq));
    for _ in 0..100 {
        if caller.snapshot().close.is_some() || caller.snapshot().ended {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (caller.snapshot(), sent.len(), started.elapsed())
}

/// ECS stops a task the way it stops every service task behind the ALB — a deployment, a
/// scale-in, a health replacement, `stop-task`: the target is deregistered (no new calls),
/// ECS waits until it has no connection left or the rendered deregistration delay passed,
/// and only then sends SIGTERM. Both tasks run with the task definition's environment
/// rendered from infra/media-ws.yaml. The 40 s calls live on the stopped task run to their
/// end with every second of audio; calls placed meanwhile go to the other task; SIGTERM comes
/// once the target is empty and the process exits 0 at once.
#[tokio::test]
async fn an_ecs_stop_lets_every_live_call_on_the_task_run_to_its_end() {
    const CALL_SECONDS: usize = 40;
    // The calls end by Twilio's `stop`: the function needs no REST origin here.
    let Shipped {
        rendered,
        _moto,
        agent: _agent,
        rest: _rest,
        api,
        lambda,
        ecs_env,
        ..
    } = shipped(false).await;
    let delay = Duration::from_secs(
        rendered["ecs"]["deregistration_delay_seconds"]
            .as_u64()
            .unwrap(),
    );
    let mut old = Server::start(&refs(&ecs_env)).await;
    let new = Server::start(&refs(&ecs_env)).await;
    api.wait_ready(Duration::from_secs(20)).await;
    assert!(api.init_error().is_none(), "{}", lambda.logs());
    let alb = alb::Alb::start().await;
    let old_id = alb.register(old.addr);

    // Stream URLs from Twilio's signed voice webhook, one per call.
    let mut urls = Vec::new();
    for i in 0..6 {
        let call_sid = format!("CA{i:032x}");
        let resp = api
            .call(&webhook(&[
                ("AccountSid", ACCOUNT_SID),
                ("CallSid", call_sid.as_str()),
                ("Direction", "inbound"),
            ]))
            .await;
        assert_eq!(resp.status, 200, "{resp:?}");
        urls.push((stream_url(&resp.body), call_sid));
    }
    let mut late = urls.split_off(4);

    // Four calls of 40 s on the task that is about to be stopped.
    let live: Vec<_> = urls
        .into_iter()
        .map(|(url, sid)| tokio::spawn(long_call(alb.addr, url, sid, CALL_SECONDS)))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(alb.open(old_id), 4);

    // The deployment: the new task is registered, the old one deregistered.
    let new_id = alb.register(new.addr);
    let stopping = std::time::Instant::now();
    let deregistration = {
        let alb = &alb;
        async move { alb.deregister(old_id, delay).await }
    };
    let meanwhile = async {
        // Calls placed meanwhile reach the new task.
        for (url, sid) in late.drain(..) {
            let (log, sent, _) = long_call(alb.addr, url, sid, 2).await;
            assert_eq!(log.audio.len(), sent, "echoed in full on the new task");
            assert_eq!(log.close, Some((1000, "stream stopped".into())));
        }
        assert_eq!(alb.routed(new_id), 2, "the new calls went to the new task");
        assert_eq!(alb.routed(old_id), 4, "none to the deregistered one");
    };
    let (deregistered, ()) = tokio::join!(deregistration, meanwhile);
    for call in live {
        let (log, sent, took) = call.await.unwrap();
        assert_eq!(
            log.audio.len(),
            sent,
            "every second of the call was heard ({} of {} bytes)",
            log.audio.len(),
            sent
        );
        assert_eq!(
            log.close,
            Some((1000, "stream stopped".into())),
            "the caller hung up; the ALB never cut it"
        );
        assert!(took >= Duration::from_secs(CALL_SECONDS as u64), "{took:?}");
    }
    let alb::Deregistered::Unused(waited) = deregistered else {
        panic!("the deregistration delay ({delay:?}) ran out with calls live: the ALB cut them");
    };
    assert!(
        waited >= Duration::from_secs(CALL_SECONDS as u64 - 5),
        "{waited:?}"
    );

    // Target unused: ECS sends SIGTERM, and the task exits at once.
    let term = std::time::Instant::now();
    old.signal("TERM");
    assert_eq!(old.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert!(
        term.elapsed() < Duration::from_secs(3),
        "exit took {:?}",
        term.elapsed()
    );
    assert!(stopping.elapsed() < delay);
    let logs = old.logs();
    assert!(logs.contains("\"drained_cleanly\":true"), "{logs}");
}
