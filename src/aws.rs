//! The AWS SDK configuration the registry and the event bus share: the default chain (region,
//! credentials, `AWS_ENDPOINT_URL`) with a deadline per request and per attempt.

use std::time::Duration;

/// The whole request within `timeout`, each attempt and connect within half of it, at most
/// `attempts` attempts.
pub async fn sdk_config(timeout: Duration, attempts: u32) -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(timeout)
        .operation_attempt_timeout(timeout / 2)
        .connect_timeout(timeout / 2)
        .build();
    let retry = aws_config::retry::RetryConfig::standard().with_max_attempts(attempts);
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(retry)
        .load()
        .await
}
