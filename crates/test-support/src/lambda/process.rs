//! The real `media-lambda` process attached to a [`RuntimeApi`], its logs collected.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, Command};

use super::RuntimeApi;
use crate::bins::{spawn_collecting, workspace_bin};

/// The `media-lambda` binary (see [`workspace_bin`]).
pub fn media_lambda_bin() -> String {
    workspace_bin("media-lambda")
}

/// A running `media-lambda` process attached to a [`RuntimeApi`].
pub struct LambdaProcess {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl LambdaProcess {
    /// Starts the debug binary with `env` on top of the Lambda environment variables.
    pub fn start(api: &RuntimeApi, env: &[(String, String)]) -> Self {
        Self::start_bin(&media_lambda_bin(), api, env)
    }

    /// Starts `bin` (e.g. the release build) with the Lambda environment and `env`.
    pub fn start_bin(bin: &str, api: &RuntimeApi, env: &[(String, String)]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", api.host_port())
            .env("AWS_LAMBDA_FUNCTION_NAME", "media-lambda-test")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/11/24/[$LATEST]0123456789abcdef",
            )
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/media-lambda-test")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "trace");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (child, lines) = spawn_collecting(&mut cmd, |_| {});
        Self {
            child,
            logs: lines.all,
            stderr: lines.stderr,
        }
    }

    /// Everything the process wrote so far (stdout and stderr).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits for the process to exit; its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("media-lambda did not exit in time")
            .unwrap();
        // Let the log readers drain the pipes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        status.code()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}
