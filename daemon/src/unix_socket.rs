//! Unix sockets the daemon serves on: a path (created with a mode) or a Linux
//! abstract name, a stale socket file replaced, a live one refused.

use std::{
    io,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
};

use tokio::net::UnixListener;

use crate::config::SocketSpec;

/// Bind the socket. A stale socket file (nobody accepts on it) is removed;
/// a live one, or a file that is not a socket, is an error.
pub(crate) fn bind(spec: &SocketSpec) -> io::Result<UnixListener> {
    let std_listener = match spec {
        SocketSpec::Path { path, mode } => {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => {
                    match std::os::unix::net::UnixStream::connect(path) {
                        // Nobody accepts on it: left by a process that died.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                            tracing::info!(socket = %path.display(), "removing a stale socket");
                            std::fs::remove_file(path)?;
                        }
                        Ok(_) => {
                            return Err(io::Error::new(
                                io::ErrorKind::AddrInUse,
                                format!("{} is in use by a running process", path.display()),
                            ));
                        }
                        Err(e) => {
                            return Err(io::Error::new(
                                e.kind(),
                                format!("{} exists and cannot be checked: {e}", path.display()),
                            ));
                        }
                    }
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a socket", path.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let l = std::os::unix::net::UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
            l
        }
        SocketSpec::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            std::os::unix::net::UnixListener::bind_addr(&addr)?
        }
    };
    std_listener.set_nonblocking(true)?;
    UnixListener::from_std(std_listener)
}

/// qkeyd's own (effective) uid, as the kernel reports it for this process.
pub(crate) fn own_uid() -> io::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata("/proc/self")?.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_specs_parse_like_an_encryption_configuration_endpoint() {
        let p = |s: &str| SocketSpec::parse(s, 0o600);
        let path = SocketSpec::Path { path: "/run/qkeyd/kms.sock".into(), mode: 0o600 };
        assert_eq!(p("/run/qkeyd/kms.sock").unwrap(), path);
        assert_eq!(p("unix:///run/qkeyd/kms.sock").unwrap(), path);
        assert_eq!(p("@qkeyd").unwrap(), SocketSpec::Abstract("qkeyd".into()));
        assert_eq!(p("unix:///@qkeyd").unwrap(), SocketSpec::Abstract("qkeyd".into()));
        assert_eq!(p("unix:///@qkeyd").unwrap().endpoint(), "unix:///@qkeyd");
        assert_eq!(path.endpoint(), "unix:///run/qkeyd/kms.sock");
        assert!(p("relative.sock").is_err());
        assert!(p("@").is_err());
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.sock");
        let spec = SocketSpec::Path { path: path.clone(), mode: 0o600 };
        // A socket file nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = bind(&spec).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = bind(&spec).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        drop(live);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"not a socket").unwrap();
        assert_eq!(bind(&spec).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    }
}
