//! media-sim's integration tests, one binary: the real `media-sim`, `media-ws` and
//! `media-lambda` over loopback, against the fakes of `media-test-support`.

mod call_control;
mod media_sim;
mod outbound;
