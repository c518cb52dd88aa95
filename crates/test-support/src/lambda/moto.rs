//! moto's server (SSM, DynamoDB, EventBridge, SQS) on a loopback port it picks, killed on
//! drop, with clients for the test's own writes. A missing `moto_server` fails the test
//! (`scripts/test.sh` installs it from `scripts/requirements-test.txt`).

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ssm::types::ParameterType;
use tokio::process::{Child, Command};

/// A running moto server.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub ssm: aws_sdk_ssm::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl Moto {
    /// Starts `moto_server` (or `python3 -m moto.server`) and waits until it answers.
    pub async fn start() -> Self {
        // Port 0: moto binds a free port itself and says which ("Running on http://…"), so
        // no other test can take it between a probe and the bind.
        let args = ["-H", "127.0.0.1", "-p", "0"];
        let spawn = |program: &str, pre: &[&str]| {
            Command::new(program)
                .args(pre)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
        };
        let mut child = spawn("moto_server", &[])
            .or_else(|_| spawn("python3", &["-m", "moto.server"]))
            .expect(
                "moto is required for the secrets tests: pip install -r scripts/requirements-test.txt",
            );
        let stderr = child.stderr.take().unwrap();
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt as _;
            let mut port_tx = Some(port_tx);
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            // Read to the end: moto logs every request here, and a full pipe would stall it.
            while let Ok(Some(line)) = lines.next_line().await {
                let port = line
                    .split("Running on http://127.0.0.1:")
                    .nth(1)
                    .and_then(|p| p.trim().parse::<u16>().ok());
                if let Some(port) = port {
                    if let Some(tx) = port_tx.take() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        let port = tokio::time::timeout(Duration::from_secs(15), port_rx)
            .await
            .expect("moto_server did not say its port within 15 s")
            .expect("moto_server exited at start-up (is moto[server] installed?)");
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut moto = Self {
            child,
            ssm: client(&endpoint),
            dynamodb: dynamodb_client(&endpoint),
            endpoint,
        };
        moto.wait_ready().await;
        moto
    }

    async fn wait_ready(&mut self) {
        let url = format!("127.0.0.1:{}", self.endpoint.rsplit(':').next().unwrap());
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("moto_server exited at start-up: {status} (is moto[server] installed?)");
            }
            if tokio::net::TcpStream::connect(&url).await.is_ok() {
                // Accepting connections; one real call proves the SSM backend is loaded.
                if self.ssm.describe_parameters().send().await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not answer within 15 s");
    }

    /// Creates or overwrites a SecureString parameter.
    pub async fn put(&self, name: &str, value: &str) {
        self.ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    }

    /// Deletes a parameter.
    pub async fn delete(&self, name: &str) {
        self.ssm.delete_parameter().name(name).send().await.unwrap();
    }

    /// Creates a DynamoDB table as CloudFormation would from the template: a string hash key,
    /// on-demand billing, TTL on `ttl_attribute`.
    pub async fn create_table(&self, name: &str, hash_key: &str, ttl_attribute: &str) {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
            TimeToLiveSpecification,
        };
        self.dynamodb
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(hash_key)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(hash_key)
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        self.dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(ttl_attribute)
                    .enabled(true)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }

    /// Every item's `pk` in `table`.
    pub async fn table_keys(&self, table: &str) -> Vec<String> {
        let out = self.dynamodb.scan().table_name(table).send().await.unwrap();
        let mut keys: Vec<String> = out
            .items()
            .iter()
            .filter_map(|item| item.get("pk")?.as_s().ok().cloned())
            .collect();
        keys.sort();
        keys
    }

    /// An EventBridge bus whose every event (`Source` `media-orchestrator`) moto delivers to a
    /// new SQS queue, as a rule with an SQS target does: returns the queue's URL.
    pub async fn bus_to_queue(&self, bus: &str, queue: &str) -> String {
        let events = events_client(&self.endpoint);
        if bus != "default" {
            events.create_event_bus().name(bus).send().await.unwrap();
        }
        let created = self
            .sqs("CreateQueue", serde_json::json!({"QueueName": queue}))
            .await;
        let url = created["QueueUrl"].as_str().unwrap().to_string();
        let rule = format!("{queue}-rule");
        events
            .put_rule()
            .name(&rule)
            .event_bus_name(bus)
            .event_pattern(r#"{"source":["media-orchestrator"]}"#)
            .send()
            .await
            .unwrap();
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id("queue")
            .arn(format!("arn:aws:sqs:us-east-1:123456789012:{queue}"))
            .build()
            .unwrap();
        events
            .put_targets()
            .rule(&rule)
            .event_bus_name(bus)
            .targets(target)
            .send()
            .await
            .unwrap();
        url
    }

    /// The events in `queue_url` (each an EventBridge envelope: `source`, `detail-type`,
    /// `detail`, …), received and deleted, until `count` came or `within` passed.
    pub async fn events(
        &self,
        queue_url: &str,
        count: usize,
        within: Duration,
    ) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < count && tokio::time::Instant::now() < deadline {
            let got = self
                .sqs(
                    "ReceiveMessage",
                    serde_json::json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10}),
                )
                .await;
            let messages = got["Messages"].as_array().cloned().unwrap_or_default();
            if messages.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for m in messages {
                let body = m["Body"].as_str().unwrap();
                out.push(serde_json::from_str(body).unwrap());
                self.sqs(
                    "DeleteMessage",
                    serde_json::json!({"QueueUrl": queue_url, "ReceiptHandle": m["ReceiptHandle"]}),
                )
                .await;
            }
        }
        out
    }

    /// One SQS request in its JSON protocol (`X-Amz-Target: AmazonSQS.<action>`).
    async fn sqs(&self, action: &str, body: serde_json::Value) -> serde_json::Value {
        let addr: std::net::SocketAddr =
            self.endpoint.trim_start_matches("http://").parse().unwrap();
        let target = format!("AmazonSQS.{action}");
        let (status, text) = crate::media_ws::http_request_with_body(
            addr,
            "POST",
            "/",
            &[
                ("X-Amz-Target", target.as_str()),
                ("Content-Type", "application/x-amz-json-1.0"),
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
                ),
            ],
            &body.to_string(),
        )
        .await;
        assert_eq!(status, 200, "SQS {action}: {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// The AWS environment pointing processes at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        super::aws_env(&self.endpoint)
    }
}

fn dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn events_client(endpoint: &str) -> aws_sdk_eventbridge::Client {
    let config = aws_sdk_eventbridge::Config::builder()
        .behavior_version(aws_sdk_eventbridge::config::BehaviorVersion::latest())
        .region(aws_sdk_eventbridge::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_eventbridge::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .build();
    aws_sdk_eventbridge::Client::from_conf(config)
}

fn client(endpoint: &str) -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}
