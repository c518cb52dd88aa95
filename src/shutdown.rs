//! SIGTERM (ECS, systemd) and SIGINT (a terminal) as one future.

/// Completes when the process receives SIGTERM or SIGINT.
///
/// If a signal handler cannot be installed, that signal is ignored and a warning is logged;
/// the other one still works.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sigterm handler unavailable");
                    std::future::pending::<()>().await;
                }
            }
        };
        let int = async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "sigint handler unavailable");
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = term => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            () = int => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
