//! SIGINT/SIGTERM -> reactor shutdown.
//!
//! The handler only stores into a static `AtomicBool` (async-signal-safe). Turning that flag
//! into `request_shutdown()` is done by [`forward_signals_to`], which starts one small helper
//! thread that checks the flag every [`SIGNAL_CHECK_INTERVAL_MS`]. A thread rather than a
//! reactor poller keeps the reactors free of process-global state (tests can run reactors
//! without ever being shut down by a stray signal), and 50 ms is negligible next to shutdown.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::reactor::ReactorHandle;

/// How often the forwarding thread looks at the signal flag.
pub const SIGNAL_CHECK_INTERVAL_MS: u64 = 50;

static SHUTDOWN_SIGNAL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_shutdown_signal(_signo: libc::c_int) {
    SHUTDOWN_SIGNAL.store(true, Ordering::SeqCst);
}

/// Installs SIGINT/SIGTERM handlers that only set a flag; starts nothing else.
pub fn install_shutdown_signal_handlers() -> io::Result<()> {
    let handler = on_shutdown_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signo in [libc::SIGINT, libc::SIGTERM] {
        set_disposition(signo, handler)?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since the handlers were installed.
pub fn shutdown_signal_received() -> bool {
    SHUTDOWN_SIGNAL.load(Ordering::SeqCst)
}

/// Starts a helper thread ("signal_forward") that calls `handle.request_shutdown()` once a
/// shutdown signal has been received, checking every [`SIGNAL_CHECK_INTERVAL_MS`]. The thread
/// ends as soon as the reactors are shutting down for any reason. If the thread cannot be
/// started, the default SIGINT/SIGTERM dispositions are restored so the signals still stop
/// the process (abruptly) instead of being ignored.
pub fn forward_signals_to(handle: ReactorHandle) {
    let spawned = thread::Builder::new()
        .name("signal_forward".to_string())
        .spawn(move || {
            // Bounded by shutdown: ends once the reactors stop for whatever reason.
            while !handle.is_shutting_down() {
                if shutdown_signal_received() {
                    log::info!("shutdown signal received");
                    handle.request_shutdown();
                    break;
                }
                thread::sleep(Duration::from_millis(SIGNAL_CHECK_INTERVAL_MS));
            }
        });
    if let Err(e) = spawned {
        log::error!(
            "cannot start the signal forwarding thread ({e}); restoring default SIGINT/SIGTERM"
        );
        for signo in [libc::SIGINT, libc::SIGTERM] {
            if let Err(e) = set_disposition(signo, libc::SIG_DFL) {
                log::error!("cannot restore the default action of signal {signo}: {e}");
            }
        }
    }
}

fn set_disposition(signo: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: all-zero bytes are a valid `sigaction` (default handler, no flags) that is fully
    // set below; sigemptyset initialises the mask it is given; sigaction reads `action` only
    // during the call and a null old-action pointer is allowed. `handler` is SIG_DFL or an
    // `extern "C" fn(c_int)` that only performs an atomic store (async-signal-safe).
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_sigaction = handler;
        // Restart interrupted syscalls on other threads instead of failing them with EINTR.
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(signo, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{create_reactors, ReactorConfig, ReactorMask};
    use std::time::Instant;

    #[test]
    fn signal_sets_flag_and_forwarder_requests_shutdown() {
        install_shutdown_signal_handlers().unwrap();
        let (_reactors, handle) = create_reactors(
            &ReactorMask::from_cores(&[0]).unwrap(),
            &ReactorConfig::default(),
        );
        forward_signals_to(handle.clone());
        thread::sleep(Duration::from_millis(2 * SIGNAL_CHECK_INTERVAL_MS));
        assert!(!handle.is_shutting_down(), "no signal yet");
        // SAFETY: raise() sends SIGTERM to this thread; the handler installed above catches it.
        let rc = unsafe { libc::raise(libc::SIGTERM) };
        assert_eq!(rc, 0);
        assert!(shutdown_signal_received());
        let deadline = Instant::now() + Duration::from_secs(1);
        while !handle.is_shutting_down() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert!(handle.is_shutting_down());
    }
}
