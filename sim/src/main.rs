//! `media-sim`: simulated Twilio calls against a `media-ws` deployment (`call`), and load
//! tests with latency and server-cost figures (`load`). Flags only; the logic is in
//! `media_sim` (sim/src/lib.rs). Errors: one line `media-sim: <error>: <cause>…` on stderr, exit 1.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use media_orchestrator::audio::AudioFormat;
use media_sim::agent_echo::EchoAgent;
use media_sim::caller::{self, CallOptions, Live, Step};
use media_sim::load::{self, LoadOptions, Progress};
use media_sim::{wav, SimError};

/// Simulate Twilio Media Streams calls against media-ws.
#[derive(Parser)]
#[command(name = "media-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Play a WAV file as one call in real time, record the reply, print a timeline.
    Call(CallArgs),
    /// Run N concurrent simulated calls against an echo and report latency and cost.
    Load(LoadArgs),
    /// Play Twilio for outbound calls: a fake REST API whose created calls ring, answer
    /// (signed webhook), stream a WAV to the <Stream url> in real time, get an AMD verdict and
    /// a final status, and end when the call is redirected or hung up.
    Twilio(TwilioArgs),
}

#[derive(Args)]
struct TwilioArgs {
    /// Address of the fake REST API (media-lambda's TWILIO_API_BASE=http://ADDR).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9100")]
    listen: String,
    /// The account (media-lambda's TWILIO_ACCOUNT_SID).
    #[arg(long, default_value = caller::ACCOUNT_SID)]
    account_sid: String,
    /// The Auth Token: Basic auth of the REST API and the key of webhook signatures.
    #[arg(long, env = "MEDIA_SIM_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: String,
    /// Where the function's webhooks really are, e.g.
    /// http://127.0.0.1:9000/lambda-url/media-lambda (cargo lambda watch); requests keep the
    /// Host and signature of the URL Twilio was given.
    #[arg(long)]
    webhook_base: String,
    /// Where the <Stream url>'s wss://host really is.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    stream_origin: String,
    /// The callee's audio.
    #[arg(long)]
    wav: PathBuf,
    /// The AMD verdict posted to AsyncAmdStatusCallback.
    #[arg(long, default_value = "human", value_parser = [
        "human", "unknown", "fax", "machine_start", "machine_end_beep",
        "machine_end_silence", "machine_end_other"])]
    answered_by: String,
    /// When the verdict is posted, seconds after the answer.
    #[arg(long, default_value = "3", value_parser = seconds)]
    amd_after: Duration,
    /// Ring time before the callee answers (seconds).
    #[arg(long, default_value = "1", value_parser = seconds)]
    ring: Duration,
    /// After the audio, hang up once no audio has come back for this long (seconds).
    #[arg(long, default_value = "1.5", value_parser = seconds)]
    linger: Duration,
    /// Exit after this many calls (0: serve until interrupted).
    #[arg(long, default_value_t = 0)]
    calls: usize,
}

#[derive(Args)]
struct CallArgs {
    /// WebSocket URL, e.g. ws://127.0.0.1:8080/rtm/voice
    url: String,
    /// Audio to play (any common rate and channel count; converted to 8 kHz μ-law).
    #[arg(long)]
    wav: PathBuf,
    /// Write the audio that came back here (16-bit PCM, 8 kHz, mono).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A <Parameter> for start.customParameters (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Auth token, sent in the path as /jwt/<token>.
    #[arg(long, env = "MEDIA_SIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// After the audio, hang up once no audio has come back for this long (seconds).
    #[arg(long, default_value = "1.5", value_parser = seconds)]
    linger: Duration,
    /// Keypad digits to press during the call (0-9, *, #), e.g. 12#.
    #[arg(long, value_parser = digits)]
    dtmf: Option<String>,
    /// When the first digit is pressed, seconds after the audio starts.
    #[arg(long, default_value = "1", value_parser = seconds)]
    dtmf_at: Duration,
    /// Also play Twilio's REST API on this address (e.g. 127.0.0.1:9100), and show the
    /// hang-up or transfer media-ws requests (run media-ws with TWILIO_API_BASE=http://ADDR,
    /// TWILIO_ACCOUNT_SID=AC00000000000000000000000000000000 and the same auth token).
    #[arg(long, value_name = "ADDR")]
    twilio_rest_listen: Option<String>,
    /// The Auth Token the fake REST API accepts.
    #[arg(
        long,
        env = "MEDIA_SIM_TWILIO_AUTH_TOKEN",
        hide_env_values = true,
        default_value = "media-sim-auth-token"
    )]
    twilio_auth_token: String,
}

fn digits(s: &str) -> Result<String, String> {
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
    {
        return Err("expected keypad digits: 0-9, * and #".into());
    }
    Ok(s.to_string())
}

#[derive(Args)]
struct LoadArgs {
    /// WebSocket URL, e.g. ws://127.0.0.1:8080/rtm/voice
    url: String,
    /// Concurrent calls.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    calls: u32,
    /// Seconds over which the calls start.
    #[arg(long, default_value = "1", value_parser = seconds)]
    ramp: Duration,
    /// Seconds of audio per call.
    #[arg(long, default_value = "10", value_parser = seconds)]
    duration: Duration,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// PID of a server on this machine: report its CPU per relayed frame and RSS per call.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also play the ElevenLabs agent: an echo endpoint on this address (e.g. 127.0.0.1:9000)
    /// for media-ws to dial (ELEVENLABS_WS_URL=ws://ADDR/v1/convai/conversation).
    #[arg(long, value_name = "ADDR")]
    agent_listen: Option<String>,
    /// The echo agent's audio format, both directions.
    #[arg(long, default_value = "ulaw_8000", value_parser = agent_format)]
    agent_format: AudioFormat,
    /// Auth token, sent in the path as /jwt/<token>.
    #[arg(long, env = "MEDIA_SIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Most time a call waits for its echo after its audio before hanging up (seconds).
    #[arg(long, default_value = "3", value_parser = seconds)]
    linger: Duration,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err(format!("{s} is out of range (0..=86400 s)"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn agent_format(s: &str) -> Result<AudioFormat, String> {
    AudioFormat::parse(s).ok_or_else(|| format!("unknown format {s:?} (ulaw_8000, pcm_16000, …)"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Call(args) => call(args).await,
        Command::Load(args) => run_load(args).await,
        Command::Twilio(args) => twilio(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("media-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn params(raw: &[String]) -> Result<BTreeMap<String, String>, SimError> {
    raw.iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(SimError::BadParam(p.clone())),
        })
        .collect()
}

async fn call(args: CallArgs) -> anyhow::Result<()> {
    let params = params(&args.params)?;
    let audio = wav::read_ulaw(&args.wav)?;
    let ws = caller::connect(&args.url, args.token.as_deref()).await?;
    let rest = match &args.twilio_rest_listen {
        Some(addr) => Some(
            media_sim::twilio_rest::FakeTwilioRest::start(
                addr,
                caller::ACCOUNT_SID,
                &args.twilio_auth_token,
            )
            .await?,
        ),
        None => None,
    };
    let opts = CallOptions {
        params,
        linger: args.linger,
        record: args.out.is_some(),
        dtmf: args.dtmf.clone().unwrap_or_default(),
        dtmf_at: args.dtmf_at,
        ..CallOptions::default()
    };
    println!(
        "call {} ({:.2} s of audio, {} frames)",
        args.url,
        audio.len() as f64 / 8000.0,
        audio.len().div_ceil(caller::FRAME_BYTES)
    );
    let opened = tokio::time::Instant::now();
    let mut report = caller::run(ws, &audio, &opts, &Live::default()).await;
    if let Some(rest) = &rest {
        caller::add_rest_requests(&mut report, opened, &rest.requests());
    }
    print_report(&report);
    println!("ended: {}", caller::ending(&report));
    if let Some(out) = &args.out {
        wav::write_ulaw(out, &report.received)?;
        println!(
            "wrote {} ({:.2} s)",
            out.display(),
            report.received.len() as f64 / 8000.0
        );
    }
    match report.close_code {
        Some(1000) => Ok(()),
        Some(code) => bail!("the server closed the call with {code}"),
        None => bail!("the call ended without a close frame"),
    }
}

async fn twilio(args: TwilioArgs) -> anyhow::Result<()> {
    use media_sim::outbound::{self, OutboundOptions};
    let rest = media_sim::twilio_rest::FakeTwilioRest::start(
        &args.listen,
        &args.account_sid,
        &args.auth_token,
    )
    .await
    .with_context(|| format!("cannot listen on {}", args.listen))?;
    let opts = OutboundOptions {
        account_sid: args.account_sid.clone(),
        auth_token: args.auth_token.clone(),
        webhook_base: args.webhook_base.clone(),
        stream_origin: args.stream_origin.clone(),
        ring: args.ring,
        answered_by: args.answered_by.clone(),
        amd_after: args.amd_after,
        audio: Arc::new(wav::read_ulaw(&args.wav)?),
        call: CallOptions {
            linger: args.linger,
            ..CallOptions::default()
        },
    };
    println!(
        "twilio rest api on {} (account {}): waiting for calls",
        rest.base_url(),
        args.account_sid
    );
    let mut handled = 0;
    let mut failed = 0;
    while args.calls == 0 || handled < args.calls {
        let Some(create) = rest
            .requests()
            .into_iter()
            .filter(|r| r.created)
            .nth(handled)
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        handled += 1;
        println!("call {} created: ringing", create.call_sid);
        match outbound::play(&opts, &rest, &create).await {
            Ok(report) => {
                println!("answer webhook: HTTP {}", report.answer_status);
                if let Some(call) = &report.call {
                    print_report(call);
                }
                if let Some(status) = report.amd_status {
                    println!("amd callback ({}): HTTP {status}", args.answered_by);
                }
                for what in &report.rest {
                    println!("twilio rest: {what}");
                }
                if let Some(status) = report.status_callback {
                    println!("status callback (completed): HTTP {status}");
                }
                if report.answer_status != 200 {
                    failed += 1;
                }
            }
            Err(e) => {
                failed += 1;
                println!("call {} failed: {e}", create.call_sid);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {handled} calls failed");
    }
    Ok(())
}

/// The call's timeline and summary, as `call` and `twilio` print them.
fn print_report(report: &caller::CallReport) {
    for entry in &report.timeline {
        let what = match &entry.step {
            Step::Connected => "connected".to_string(),
            Step::FirstAudio => "first audio back".to_string(),
            Step::Mark(name) => format!("mark {name}"),
            Step::Clear => "clear".to_string(),
            Step::MarkPlayed(name) => format!("mark {name} played (echoed)"),
            Step::KeypadSent(n) => format!("keypad: {n} digits pressed"),
            Step::Rest(what) => format!("twilio rest: {what}"),
            Step::AudioSent => "all audio sent".to_string(),
            Step::HungUpByRest => {
                "the call was redirected or hung up: Twilio ends the stream".to_string()
            }
            Step::StopSent => "stop sent".to_string(),
            Step::Closed { code, reason } => format!("close {code} {reason:?}"),
            Step::Lost(why) => format!("connection lost: {why}"),
        };
        println!("{:>9.3} s  {what}", entry.at.as_secs_f64());
    }
    let mut lat = report.latencies_us.clone();
    let p = media_sim::stats::Percentiles::from_micros(&mut lat);
    println!(
        "summary: sent {} frames ({:.2} s), received {} frames ({:.2} s), {} marks, {} clears, \
         first audio {}, round trip p50 {:.1} ms p99 {:.1} ms, close {}",
        report.frames_sent,
        report.bytes_sent as f64 / 8000.0,
        report.frames_received,
        report.bytes_received as f64 / 8000.0,
        report.marks,
        report.clears,
        report
            .first_audio
            .map_or("never".to_string(), |d| format!("{} ms", d.as_millis())),
        p.p50_ms,
        p.p99_ms,
        report
            .close_code
            .map_or("none".to_string(), |c| c.to_string()),
    );
}

async fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    let stop_agent = tokio_util::sync::CancellationToken::new();
    let mut agent_task = None;
    if let Some(addr) = &args.agent_listen {
        let agent = EchoAgent::bind(addr, args.agent_format).await?;
        println!(
            "echo agent ({}) listening on {}",
            args.agent_format.name(),
            agent.url().context("agent address")?
        );
        agent_task = Some(tokio::spawn(agent.serve(stop_agent.clone())));
    }
    let opts = LoadOptions {
        url: args.url.clone(),
        token: args.token.clone(),
        calls: args.calls as usize,
        ramp: args.ramp,
        duration: args.duration,
        server_pid: args.server_pid,
        call: CallOptions {
            linger: args.linger,
            max_linger: args.linger,
            expect_echo: true,
            ..CallOptions::default()
        },
    };
    let progress = Arc::new(Progress::default());
    let bar = if args.quiet || !std::io::stdout().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(u64::from(args.calls))
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} calls started  {msg}",
        )
        .context("progress template")?
        .progress_chars("=> "),
    );
    let ticker = {
        let (bar, progress) = (bar.clone(), Arc::clone(&progress));
        tokio::spawn(async move {
            loop {
                bar.set_position(progress.started.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "ok {}  failed {}  frames sent {}  received {}",
                    progress.ok.load(Ordering::Relaxed),
                    progress.failed.load(Ordering::Relaxed),
                    progress.live.frames_sent.load(Ordering::Relaxed),
                    progress.live.frames_received.load(Ordering::Relaxed),
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let report = load::run(&opts, progress).await;
    ticker.abort(); // display only; nothing owed
    bar.finish_and_clear();
    stop_agent.cancel();
    if let Some(task) = agent_task {
        // The agent closes its conversations; a panic there is not the run's result.
        let _ = task.await;
    }
    print!("{}", load::table(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("report as json")?;
        std::fs::write(path, json).map_err(|e| SimError::WriteFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    if report.failed > 0 {
        bail!("{} of {} calls failed", report.failed, report.calls);
    }
    Ok(())
}
