//! What the tests of both packages run the binaries against: [`media_ws`] (the real server
//! process, a Twilio caller, a fake ElevenLabs agent, a fake ECS agent), [`lambda`] (a Lambda
//! Runtime API, the real `media-lambda`, an API Gateway front, moto) and [`twilio_rest`] (a
//! strict loopback Twilio REST API, also behind `media-sim --twilio-rest-listen`).
//!
//! Harness code: a broken fixture or a dead fake panics the test that uses it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod bins;
pub mod lambda;
pub mod media_ws;
pub mod twilio_rest;
