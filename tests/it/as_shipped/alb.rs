//! A loopback stand-in for the ALB in front of the `media-ws` tasks, following ECS's stop
//! order (../shared/protocols/aws-stop-and-observe.md): new connections go round-robin to the
//! registered targets; deregistering a target sends it no new connections and waits until it
//! has none left or the target group's deregistration delay has passed — then closes what is
//! still open, as the ALB does. Only then may "ECS" send SIGTERM.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Target {
    addr: SocketAddr,
    registered: bool,
    /// Connections open through the ALB to this target.
    open: usize,
    /// Connections ever routed to it.
    routed: usize,
    /// Closes this target's connections (the deregistration delay ran out).
    cut: CancellationToken,
}

#[derive(Default)]
struct State {
    targets: Vec<Target>,
    next: usize,
}

/// How a deregistration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deregistered {
    /// The target had no connection left: ECS may stop it.
    Unused(Duration),
    /// The delay ran out: the ALB closed the connections still open.
    DelayExpired,
}

/// The load balancer, listening on a loopback port.
pub struct Alb {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Alb {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(forward(client, shared));
            }
        });
        Self { addr, state }
    }

    /// Registers a target; returns its id.
    pub fn register(&self, addr: SocketAddr) -> usize {
        let mut state = self.state.lock().unwrap();
        state.targets.push(Target {
            addr,
            registered: true,
            open: 0,
            routed: 0,
            cut: CancellationToken::new(),
        });
        state.targets.len() - 1
    }

    /// Connections routed to target `id` so far.
    pub fn routed(&self, id: usize) -> usize {
        self.state.lock().unwrap().targets[id].routed
    }

    /// Connections open to target `id` now.
    pub fn open(&self, id: usize) -> usize {
        self.state.lock().unwrap().targets[id].open
    }

    /// Deregisters target `id` with the target group's `delay`: no new connections, then
    /// waits for it to be unused, or cuts its connections when the delay runs out.
    pub async fn deregister(&self, id: usize, delay: Duration) -> Deregistered {
        let started = Instant::now();
        self.state.lock().unwrap().targets[id].registered = false;
        loop {
            let (open, cut) = {
                let state = self.state.lock().unwrap();
                let t = &state.targets[id];
                (t.open, t.cut.clone())
            };
            if open == 0 {
                return Deregistered::Unused(started.elapsed());
            }
            if started.elapsed() >= delay {
                cut.cancel();
                return Deregistered::DelayExpired;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One client connection: to the next registered target, bytes both ways until either side
/// is done or the target's connections are cut.
async fn forward(mut client: TcpStream, state: Arc<Mutex<State>>) {
    let picked = {
        let mut s = state.lock().unwrap();
        let n = s.targets.len();
        let start = s.next;
        let found = (0..n)
            .map(|i| (start + i) % n.max(1))
            .find(|&i| s.targets[i].registered);
        found.map(|i| {
            s.next = i + 1;
            let t = &mut s.targets[i];
            t.open += 1;
            t.routed += 1;
            (i, t.addr, t.cut.clone())
        })
    };
    // No healthy target: the ALB answers 503 (here: the connection just closes).
    let Some((id, addr, cut)) = picked else {
        return;
    };
    if let Ok(mut upstream) = TcpStream::connect(addr).await {
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            () = cut.cancelled() => {}
        }
    }
    state.lock().unwrap().targets[id].open -= 1;
}
