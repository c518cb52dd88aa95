//! moto's server as SSM Parameter Store on a free loopback port, killed on drop, with an SSM
//! client for the test's own parameter writes. A missing `moto_server` fails the test
//! (`scripts/test.sh` installs it from `scripts/requirements-test.txt`).

use std::net::TcpListener as StdListener;
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
        let port = {
            let probe = StdListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let port_s = port.to_string();
        let args = ["-H", "127.0.0.1", "-p", port_s.as_str()];
        let spawn = |program: &str, pre: &[&str]| {
            Command::new(program)
                .args(pre)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
        };
        let child = spawn("moto_server", &[])
            .or_else(|_| spawn("python3", &["-m", "moto.server"]))
            .expect(
                "moto is required for the secrets tests: pip install -r scripts/requirements-test.txt",
            );
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

fn client(endpoint: &str) -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}
