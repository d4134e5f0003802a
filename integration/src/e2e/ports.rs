//! Free loopback ports for processes a test starts, so parallel test runs (and
//! other people's demos on the same machine) never collide on fixed ports.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use anyhow::{Context, Result};

/// A TCP port on `ip` that was free a moment ago (the kernel picked it for a
/// bind to port 0). There is a short window in which another process could take
/// it; callers start the process that binds it right away and treat a bind
/// failure as a retryable start failure.
pub fn free_port(ip: Ipv4Addr) -> Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((ip, 0)))
        .with_context(|| format!("binding {ip}:0 to find a free port"))?;
    Ok(listener.local_addr()?.port())
}

/// A free `127.0.0.1` address.
pub fn free_local_addr() -> Result<SocketAddr> {
    Ok(SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        free_port(Ipv4Addr::LOCALHOST)?,
    )))
}
