//! Telling clusterd's own service manager how it is doing (sd_notify as a sender), for
//! `Type=notify` in `packaging/clusterd.service`: `READY=1` once the units are started,
//! `STOPPING=1` on shutdown, `STATUS=` with a summary. Does nothing without `NOTIFY_SOCKET`.

use std::os::unix::net::{SocketAddr, UnixDatagram};

pub(crate) struct ServiceNotifier {
    target: Option<SocketAddr>,
}

impl ServiceNotifier {
    /// Reads `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub(crate) fn from_env() -> Self {
        let target = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes()).ok()
            } else {
                SocketAddr::from_pathname(path).ok()
            }
        });
        ServiceNotifier { target }
    }

    pub(crate) fn notify(&self, state: &str) {
        let Some(target) = &self.target else { return };
        let sent = UnixDatagram::unbound()
            .and_then(|socket| socket.send_to_addr(state.as_bytes(), target));
        if let Err(e) = sent {
            log::warn!("cannot notify the service manager: {e}");
        }
    }
}
