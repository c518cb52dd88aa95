//! The server package's Lambda harness, without its moto part (AWS SDK crates stay out of
//! media-sim): the Runtime API, the real `media-lambda` process, and an API Gateway front.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/lambda_support/api_gateway.rs"]
pub mod api_gateway;
// Both harnesses (each included on its own by test crates) share this one file.
#[allow(clippy::duplicate_mod)]
#[path = "../../../tests/lambda_support/bin.rs"]
pub mod bin;
#[path = "../../../tests/lambda_support/process.rs"]
pub mod process;
#[path = "../../../tests/lambda_support/runtime_api.rs"]
pub mod runtime_api;

pub use process::LambdaProcess;
pub use runtime_api::RuntimeApi;
