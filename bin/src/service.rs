//! Telling a service manager how the target stands: systemd's `sd_notify` protocol, one
//! datagram to `$NOTIFY_SOCKET` (a path, or an abstract name after `@`). Without the
//! variable (not started by systemd with `Type=notify`), nothing is sent.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. "READY=1") if a service manager asked for it; failures are logged:
/// the target serves either way.
pub fn notify(state: &str) {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let addr = addr.to_string_lossy();
    match notify_to(&addr, state) {
        Ok(()) => log::debug!("told the service manager {state:?}"),
        Err(e) => log::warn!("cannot notify the service manager at {addr}: {e}"),
    }
}

/// Sends `state` to the sd_notify socket `addr`.
pub fn notify_to(addr: &str, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match addr.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(state.as_bytes(), &a)?;
        }
        None => {
            socket.send_to(state.as_bytes(), addr)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reaches_a_path_socket_and_an_abstract_one() {
        let path = std::env::temp_dir().join(format!("nvmf-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        let _ = std::fs::remove_file(&path);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("nvmf-notify-test-{}", std::process::id());
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&a).unwrap();
        notify_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert!(notify_to("/nonexistent/dir/sock", "READY=1").is_err());
    }
}
