//! Environment variable names of `media-ws` and their defaults: `X_DEFAULT` is `X`'s value
//! when unset (documented where it needs a why), every variable in docs/configuration.md.
#![allow(missing_docs)]

/// TCP port for HTTP and WebSocket (`0` picks a free port).
pub const PORT: &str = "PORT";
pub const PORT_DEFAULT: u16 = 8080;
/// Path the WebSocket upgrade is accepted on (and `<path>/jwt/<token>`).
pub const WS_PATH: &str = "WS_PATH";
pub const WS_PATH_DEFAULT: &str = "/rtm/voice";
/// Static stream token (compared in constant time) when no shared secret is set.
pub const MEDIA_AUTH_TOKEN: &str = "MEDIA_AUTH_TOKEN";
/// HS256 secret(s), comma separated: any verifies, the first signs.
pub const MEDIA_SHARED_SECRET: &str = "MEDIA_SHARED_SECRET";
/// Close a call after this long without a message from the peer.
pub const IDLE_TIMEOUT_MS: &str = "IDLE_TIMEOUT_MS";
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Interval of WebSocket pings; a peer that misses one whole interval is closed.
pub const KEEPALIVE_MS: &str = "KEEPALIVE_MS";
pub const KEEPALIVE_MS_DEFAULT: u64 = 15_000;
/// Outbound bytes queued for one peer above which audio frames are dropped.
pub const MAX_BUFFERED_BYTES: &str = "MAX_BUFFERED_BYTES";
pub const MAX_BUFFERED_BYTES_DEFAULT: usize = 1_048_576;
/// Largest decoded `media` payload accepted (bytes of μ-law; Twilio sends 160).
pub const MAX_MEDIA_PAYLOAD_BYTES: &str = "MAX_MEDIA_PAYLOAD_BYTES";
/// 2 s of audio, 100× a Twilio frame.
pub const MAX_MEDIA_PAYLOAD_BYTES_DEFAULT: usize = 16_000;
/// Concurrent calls; the next handshake gets 503.
pub const MAX_CALLS: &str = "MAX_CALLS";
pub const MAX_CALLS_DEFAULT: usize = 2_000;
/// On SIGTERM, how long live calls get to end on their own before they are closed.
pub const DRAIN_TIMEOUT_MS: &str = "DRAIN_TIMEOUT_MS";
/// (below the ECS stop timeout and ALB deregistration).
pub const DRAIN_TIMEOUT_MS_DEFAULT: u64 = 25_000;
/// A call's longest life, in seconds (`0`: no limit). The agent is asked to wrap up a
/// minute before it (a third of it when shorter); at it the call ends gracefully.
pub const MAX_CALL_SECONDS: &str = "MAX_CALL_SECONDS";
/// 55 minutes, inside the ALB's longest deregistration
/// delay (3600 s) with room for the ending.
pub const MAX_CALL_SECONDS_DEFAULT: u64 = 3_300;
/// How long a client gets to send a complete HTTP request (the upgrade) after connecting.
pub const HANDSHAKE_TIMEOUT_MS: &str = "HANDSHAKE_TIMEOUT_MS";
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Clock skew tolerated on JWT `exp`, `nbf` and `iat`.
pub const JWT_LEEWAY_SECONDS: &str = "JWT_LEEWAY_SECONDS";
pub const JWT_LEEWAY_SECONDS_DEFAULT: u64 = 30;
/// `json` (containers) or `pretty` (a terminal).
pub const LOG_FORMAT: &str = "LOG_FORMAT";
/// `echo`, `elevenlabs` or `none`; default `elevenlabs` when an agent is configured,
/// else `echo`.
pub const AGENT: &str = "AGENT";
/// Delay of the echo agent.
pub const ECHO_DELAY_MS: &str = "ECHO_DELAY_MS";
pub const ECHO_DELAY_MS_DEFAULT: u64 = 200;
/// Explicit ElevenLabs conversation URL.
pub const ELEVENLABS_WS_URL: &str = "ELEVENLABS_WS_URL";
/// ElevenLabs agent id.
pub const ELEVENLABS_AGENT_ID: &str = "ELEVENLABS_AGENT_ID";
/// ElevenLabs API key (signed URLs for private agents).
pub const ELEVENLABS_API_KEY: &str = "ELEVENLABS_API_KEY";
/// ElevenLabs REST base for the signed-URL request.
pub const ELEVENLABS_API_BASE: &str = "ELEVENLABS_API_BASE";
/// Time allowed for one agent connect attempt.
pub const ELEVENLABS_CONNECT_TIMEOUT_MS: &str = "ELEVENLABS_CONNECT_TIMEOUT_MS";
pub const ELEVENLABS_CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// The whole agent connect (every attempt and backoff): past it the call takes the failure
/// path, instead of the caller hearing silence while retries run.
pub const ELEVENLABS_CONNECT_DEADLINE_MS: &str = "ELEVENLABS_CONNECT_DEADLINE_MS";
pub const ELEVENLABS_CONNECT_DEADLINE_MS_DEFAULT: u64 = 5_000;
/// Agent connect retries after the first attempt.
pub const ELEVENLABS_CONNECT_RETRIES: &str = "ELEVENLABS_CONNECT_RETRIES";
pub const ELEVENLABS_CONNECT_RETRIES_DEFAULT: u32 = 2;
/// Legacy: caller audio as raw PCM16LE 16 kHz binary frames.
pub const EL_FORWARD_BINARY: &str = "EL_FORWARD_BINARY";
/// How far ahead of playback agent audio is released to Twilio.
pub const PLAYOUT_LEAD_MS: &str = "PLAYOUT_LEAD_MS";
pub const PLAYOUT_LEAD_MS_DEFAULT: u64 = 200;
/// Most agent audio held per call before it is dropped.
pub const PLAYOUT_MAX_MS: &str = "PLAYOUT_MAX_MS";
pub const PLAYOUT_MAX_MS_DEFAULT: u64 = 30_000;
/// `true`: hold ECS task scale-in protection while calls are live.
pub const TASK_PROTECTION: &str = "TASK_PROTECTION";
/// `ExpiresInMinutes` of each protection.
pub const TASK_PROTECTION_MINUTES: &str = "TASK_PROTECTION_MINUTES";
pub const TASK_PROTECTION_MINUTES_DEFAULT: u32 = 60;
/// The ECS agent endpoint (injected by ECS).
pub const ECS_AGENT_URI: &str = "ECS_AGENT_URI";
/// Interval of CloudWatch EMF lines with the active-call count (`0`: off).
pub const EMF_INTERVAL_MS: &str = "EMF_INTERVAL_MS";
/// CloudWatch namespace of the EMF metric.
pub const EMF_NAMESPACE: &str = "EMF_NAMESPACE";
pub const EMF_NAMESPACE_DEFAULT: &str = "MediaOrchestrator";
/// `ServiceName` dimension of the EMF metric.
pub const EMF_SERVICE_NAME: &str = "EMF_SERVICE_NAME";
pub const EMF_SERVICE_NAME_DEFAULT: &str = "media-ws";
/// `true` to require Twilio's `x-twilio-signature` on the upgrade as well as the token.
pub const VERIFY_TWILIO_SIGNATURE: &str = "VERIFY_TWILIO_SIGNATURE";
pub const VERIFY_TWILIO_SIGNATURE_DEFAULT: bool = false;
/// Twilio account Auth Token (value or `ssm:` reference): the key of Twilio's signatures.
pub const TWILIO_AUTH_TOKEN: &str = "TWILIO_AUTH_TOKEN";
/// Public origin Twilio connects to (`wss://host[:port]`, or the same followed by
/// `WS_PATH`, i.e. the Lambda's `STREAM_URL_BASE`); the request path is appended to it to
/// rebuild the signed URL. Unset: `wss://<Host header><path>`.
pub const PUBLIC_STREAM_BASE: &str = "PUBLIC_STREAM_BASE";
/// `true` lets a server whose agent costs money (`AGENT=elevenlabs`) run without
/// stream authentication; without it such a server refuses to start.
pub const ALLOW_UNAUTHENTICATED: &str = "ALLOW_UNAUTHENTICATED";
/// The Twilio account (`AC…`) whose streams are accepted; a `start` from another account
/// is closed with 1008.
pub const TWILIO_ACCOUNT_SID: &str = "TWILIO_ACCOUNT_SID";
/// DynamoDB table of the fleet-wide call registry (single-use tokens, one stream per
/// CallSid across every task). Unset: per-process checks only.
pub const CALL_REGISTRY_TABLE: &str = "CALL_REGISTRY_TABLE";
/// EventBridge bus (name or ARN) for call events: media-ws's `Call Ended` record per stream,
/// media-lambda's `Call Completed` per final status. Unset: records are logged only.
pub const CALL_EVENTS_BUS: &str = "CALL_EVENTS_BUS";
/// Most agent conversations at once across the fleet (the ElevenLabs plan's concurrency);
/// unset: no limit. Counted in the call-registry table.
pub const AGENT_CONCURRENCY_LIMIT: &str = "AGENT_CONCURRENCY_LIMIT";
/// Who takes the calls over the limit (E.164); unset: [`OVERFLOW_MESSAGE`] and a hang-up.
pub const OVERFLOW_NUMBER: &str = "OVERFLOW_NUMBER";
/// What a caller over the limit hears before the hang-up (no [`OVERFLOW_NUMBER`]).
pub const OVERFLOW_MESSAGE: &str = "OVERFLOW_MESSAGE";
pub const OVERFLOW_MESSAGE_DEFAULT: &str =
    "Sorry, all of our lines are busy right now. Please call again in a few minutes.";
/// How long a CallSid claim lives without renewal (renewed at a third of it).
pub const CALL_REGISTRY_LEASE_SECONDS: &str = "CALL_REGISTRY_LEASE_SECONDS";
pub const CALL_REGISTRY_LEASE_SECONDS_DEFAULT: u64 = 60;
/// Time allowed for one registry request (a slower one counts as an outage).
pub const CALL_REGISTRY_TIMEOUT_MS: &str = "CALL_REGISTRY_TIMEOUT_MS";
pub const CALL_REGISTRY_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// How long a secret read from SSM is used before it is fetched again.
pub const SECRETS_TTL_SECONDS: &str = "SECRETS_TTL_SECONDS";
pub const SECRETS_TTL_SECONDS_DEFAULT: u64 = 300;
/// Twilio REST base URL (a regional host, or a loopback fake in tests).
pub const TWILIO_API_BASE: &str = "TWILIO_API_BASE";
/// API key SID (`SK…`) for REST, instead of the Auth Token.
pub const TWILIO_API_KEY_SID: &str = "TWILIO_API_KEY_SID";
/// API key secret (value or `ssm:`), with [`TWILIO_API_KEY_SID`].
pub const TWILIO_API_KEY_SECRET: &str = "TWILIO_API_KEY_SECRET";
/// Time allowed for one Twilio REST attempt.
pub const TWILIO_REST_TIMEOUT_MS: &str = "TWILIO_REST_TIMEOUT_MS";
pub const TWILIO_REST_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Further attempts of a Twilio REST request where retrying is safe.
pub const TWILIO_REST_RETRIES: &str = "TWILIO_REST_RETRIES";
pub const TWILIO_REST_RETRIES_DEFAULT: u32 = 2;
/// Longest wait for Twilio's echo of the final mark before hanging up or transferring.
pub const END_GRACE_MS: &str = "END_GRACE_MS";
pub const END_GRACE_MS_DEFAULT: u64 = 10_000;
/// Numbers the `transfer_to_number` tool may dial: E.164 numbers or prefixes ending in `*`.
pub const TRANSFER_ALLOWLIST: &str = "TRANSFER_ALLOWLIST";
/// Absolute URL of media-lambda's `/transfer/result`: the transfer's `<Dial action>`, where
/// Twilio reports a transfer that was not answered. Unset: such a call hangs up.
pub const TRANSFER_ACTION_URL: &str = "TRANSFER_ACTION_URL";
/// `callerId` of a transfer's `<Dial>` (default: the call's own Twilio number).
pub const TRANSFER_CALLER_ID: &str = "TRANSFER_CALLER_ID";
/// Ring time of a transfer's `<Dial>`, in seconds.
pub const TRANSFER_TIMEOUT_SECONDS: &str = "TRANSFER_TIMEOUT_SECONDS";
pub const TRANSFER_TIMEOUT_SECONDS_DEFAULT: u32 = 30;
/// No frame at all from the agent (audio, pings, pongs) for this long: the agent is dead.
pub const AGENT_SILENCE_MS: &str = "AGENT_SILENCE_MS";
pub const AGENT_SILENCE_MS_DEFAULT: u64 = 12_000;
/// No `conversation_initiation_metadata` this long after the agent socket opened: dead.
pub const AGENT_METADATA_TIMEOUT_MS: &str = "AGENT_METADATA_TIMEOUT_MS";
pub const AGENT_METADATA_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Keypad digits are sent to the agent this long after the last one (or at `#`).
pub const KEYPAD_TIMEOUT_MS: &str = "KEYPAD_TIMEOUT_MS";
pub const KEYPAD_TIMEOUT_MS_DEFAULT: u64 = 2_000;
