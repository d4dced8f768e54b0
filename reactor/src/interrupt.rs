//! Interrupt mode's kernel objects: an eventfd that wakes a sleeping reactor
//! and an epoll set of the file descriptors that signal work.
//!
//! A reactor in interrupt mode spins while busy; once it has been idle for
//! `interrupt_after_idle_us`, it asks every poller to arm its wake-up
//! ([`Poller::arm_wakeup`](crate::Poller::arm_wakeup)) and blocks in
//! `epoll_wait` until a watched fd is readable, a message arrives, or the
//! next timed poller is due. Syscalls happen only on that idle path, never
//! per I/O.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// An eventfd used as a doorbell: `ring` makes it readable, `clear` resets it.
pub(crate) struct WakeFd(OwnedFd);

impl WakeFd {
    pub(crate) fn new() -> io::Result<WakeFd> {
        // SAFETY: plain syscall; the fd it returns is owned by nobody else.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh, valid descriptor we now own.
        Ok(WakeFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the fd readable. A full counter (2^64 - 2 rings) is still readable, so an
    /// EAGAIN is as good as success.
    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter so the fd is no longer readable.
    pub(crate) fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Events taken from one `epoll_wait`; more stay readable for the next.
const EPOLL_BATCH: usize = 16;

/// An epoll set. Level-triggered: a readable fd keeps waking it until its
/// owner consumes the event.
pub struct Epoll {
    fd: OwnedFd,
    events: [libc::epoll_event; EPOLL_BATCH],
}

impl Epoll {
    /// A new, empty set.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the fd it returns is owned by nobody else.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: `fd` is a fresh, valid descriptor we now own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: [libc::epoll_event { events: 0, u64: 0 }; EPOLL_BATCH],
        })
    }

    /// Watches `fd` for readability, reporting `token` when it is.
    pub fn add(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` is live for the call; the kernel validates both fds.
        let rc =
            unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd`. Closing an fd removes it too, so ENOENT/EBADF are not errors.
    pub fn remove(&mut self, fd: RawFd) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    /// Blocks until a watched fd is readable or `timeout` passes; returns the
    /// tokens of the readable fds (at most [`EPOLL_BATCH`]). EINTR counts as a timeout.
    pub fn wait(&mut self, timeout: Duration) -> impl Iterator<Item = u64> + '_ {
        // Round up so a sub-millisecond timeout still sleeps rather than spins.
        let timeout_ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `events` is writable for EPOLL_BATCH entries.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                EPOLL_BATCH as i32,
                timeout_ms,
            )
        };
        let n = usize::try_from(n).unwrap_or(0);
        self.events[..n].iter().map(|e| e.u64)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_rung_wake_fd_wakes_the_set_until_cleared() {
        let wake = WakeFd::new().unwrap();
        let mut epoll = Epoll::new().unwrap();
        epoll.add(wake.raw(), 7).unwrap();
        assert_eq!(epoll.wait(Duration::ZERO).count(), 0);
        wake.ring();
        wake.ring();
        assert_eq!(epoll.wait(Duration::ZERO).collect::<Vec<_>>(), [7]);
        // Level-triggered: still readable until cleared.
        assert_eq!(epoll.wait(Duration::ZERO).collect::<Vec<_>>(), [7]);
        wake.clear();
        assert_eq!(epoll.wait(Duration::ZERO).count(), 0);
    }

    #[test]
    fn wait_times_out_and_rounds_up() {
        let mut epoll = Epoll::new().unwrap();
        let start = Instant::now();
        assert_eq!(epoll.wait(Duration::from_micros(1500)).count(), 0);
        assert!(start.elapsed() >= Duration::from_millis(2));
    }

    #[test]
    fn nested_sets_propagate_readiness() {
        let wake = WakeFd::new().unwrap();
        let mut inner = Epoll::new().unwrap();
        inner.add(wake.raw(), 1).unwrap();
        let mut outer = Epoll::new().unwrap();
        outer.add(inner.as_raw_fd(), 2).unwrap();
        wake.ring();
        assert_eq!(outer.wait(Duration::ZERO).collect::<Vec<_>>(), [2]);
        inner.remove(wake.raw());
        assert_eq!(outer.wait(Duration::ZERO).count(), 0);
    }
}
