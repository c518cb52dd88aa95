//! The server package's integration tests, one binary (one link of the AWS SDK): the real
//! binaries over loopback, against the fakes of `media-test-support` and moto.
//! `hot_path_allocations` stays its own binary: its counting allocator sees the whole process.

mod agent_relay;
mod as_shipped;
mod call_records;
mod call_registry;
mod interop;
mod lambda_cold_start;
mod lambda_e2e;
mod media_lambda;
mod media_ws;
mod outbound;
