//! Whom the module talks to. The socket is found from the environment; the
//! process that answers on it is trusted only if it runs as the expected uid
//! (`SO_PEERCRED`), checked after connecting and before the module sends a
//! byte (a Hello, a PIN) or reads one (a seed). The expected uid is
//! `QKEYD_MODULE_SERVER_UID` if set, else the owner of the socket file's
//! directory: whoever can create a socket there could be qkeyd, nobody else
//! could. An abstract socket has no directory and any local user can take
//! its name while qkeyd is down, so it needs the explicit setting.

use std::{
    ffi::OsStr,
    fmt, io,
    os::unix::{fs::MetadataExt as _, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

/// The environment variable naming the daemon's socket (a path, or `@name`).
pub(crate) const SOCKET_ENV: &str = "QKEYD_MODULE_SOCKET";
/// The socket used when [`SOCKET_ENV`] is not set.
pub(crate) const DEFAULT_SOCKET: &str = "/run/qkeyd/module.sock";
/// The environment variable giving the uid the daemon must run as.
pub(crate) const SERVER_UID_ENV: &str = "QKEYD_MODULE_SERVER_UID";
/// How long one request may take (a TPM-sealed key generation takes seconds).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Connect to the socket the environment names, and return the connection
/// only if the server passed [`check`].
pub(crate) fn connect() -> Result<UnixStream, Error> {
    let socket = Endpoint::parse(std::env::var(SOCKET_ENV).ok().as_deref());
    let explicit = explicit_uid(std::env::var_os(SERVER_UID_ENV).as_deref())?;
    connect_to(&socket, explicit)
}

/// Where the daemon listens.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) enum Endpoint {
    /// A socket file.
    Path(PathBuf),
    /// An abstract socket (`@name`): no file, no owner, no permissions.
    Abstract(String),
}

impl Endpoint {
    /// The endpoint `spec` names (`@name` is abstract); unset or empty is
    /// [`DEFAULT_SOCKET`].
    fn parse(spec: Option<&str>) -> Self {
        let spec = spec.filter(|s| !s.is_empty()).unwrap_or(DEFAULT_SOCKET);
        match spec.strip_prefix('@') {
            Some(name) => Self::Abstract(name.to_owned()),
            None => Self::Path(PathBuf::from(spec)),
        }
    }

    fn open(&self) -> io::Result<UnixStream> {
        match self {
            Self::Path(p) => UnixStream::connect(p),
            Self::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                UnixStream::connect_addr(&addr)
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

/// The uid the server must run as, and where that came from.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) enum Expected {
    /// Set by [`SERVER_UID_ENV`].
    Explicit(u32),
    /// The owner of the socket file's directory.
    DirOwner {
        /// The owner's uid.
        uid: u32,
        /// The directory.
        dir: PathBuf,
    },
}

impl Expected {
    /// The owner of the directory that holds the socket file `path`.
    fn dir_owner(path: &Path) -> io::Result<Self> {
        let dir = socket_dir(path);
        // Follows symlinks: what counts is who can create files in the
        // directory the socket is really in.
        let uid = std::fs::metadata(dir)?.uid();
        Ok(Self::DirOwner { uid, dir: dir.to_owned() })
    }

    const fn uid(&self) -> u32 {
        match self {
            Self::Explicit(uid) | Self::DirOwner { uid, .. } => *uid,
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Explicit(uid) => write!(f, "uid {uid} ({SERVER_UID_ENV})"),
            Self::DirOwner { uid, dir } => write!(f, "uid {uid} (the owner of {})", dir.display()),
        }
    }
}

/// Why the module does not talk to the socket.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// [`SERVER_UID_ENV`] is set to something that is not a uid.
    #[error(
        "{SERVER_UID_ENV}={value:?} is not a uid: set it to the numeric uid qkeyd runs as \
         (0 to 4294967294), or unset it to trust the owner of the socket's directory"
    )]
    BadUid {
        /// What it was set to.
        value: String,
    },
    /// An abstract socket, with no uid given to expect.
    #[error(
        "not connecting to {socket}: any local user can take an abstract socket's name while \
         qkeyd is down; set {SERVER_UID_ENV} to the uid qkeyd runs as to trust it"
    )]
    AbstractWithoutUid {
        /// The socket.
        socket: Endpoint,
    },
    /// Nobody answers at the socket.
    #[error("cannot reach qkeyd at {socket}: {source}")]
    Connect {
        /// The socket.
        socket: Endpoint,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket's directory cannot be read, so its owner is unknown.
    #[error(
        "refusing the server at {socket}: cannot read the owner of {}: {source}",
        dir.display()
    )]
    DirOwner {
        /// The socket.
        socket: Endpoint,
        /// Its directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server's credentials cannot be read.
    #[error("refusing the server at {socket}: cannot read its credentials: {source}")]
    PeerCred {
        /// The socket.
        socket: Endpoint,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server runs as another uid.
    #[error(
        "refusing the server at {socket}: it runs as uid {got}, expected {expected}; if qkeyd \
         runs as another user, set {SERVER_UID_ENV} to its uid"
    )]
    WrongUid {
        /// The socket.
        socket: Endpoint,
        /// The uid expected, and why.
        expected: Expected,
        /// The server's uid.
        got: u32,
    },
}

/// The directory that holds the socket file `path`.
fn socket_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The uid [`SERVER_UID_ENV`] gives (`None` when unset): decimal digits
/// only, and not 4294967295, which is `(uid_t)-1`, no user.
fn explicit_uid(value: Option<&OsStr>) -> Result<Option<u32>, Error> {
    let Some(value) = value else { return Ok(None) };
    value
        .to_str()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|&uid| uid != u32::MAX)
        .map(Some)
        .ok_or_else(|| Error::BadUid { value: value.to_string_lossy().into_owned() })
}

/// Connect to `socket` and [`check`] the server; a refused connection is
/// closed before anything is written or read.
fn connect_to(socket: &Endpoint, explicit: Option<u32>) -> Result<UnixStream, Error> {
    let connect_err = |source| Error::Connect { socket: socket.clone(), source };
    if matches!(socket, Endpoint::Abstract(_)) && explicit.is_none() {
        return Err(Error::AbstractWithoutUid { socket: socket.clone() });
    }
    let stream = socket.open().map_err(connect_err)?;
    let expected =
        match (explicit, socket) {
            (Some(uid), _) => Expected::Explicit(uid),
            (None, Endpoint::Path(p)) => Expected::dir_owner(p).map_err(|source| {
                Error::DirOwner { socket: socket.clone(), dir: socket_dir(p).to_owned(), source }
            })?,
            // Refused above, before connecting.
            (None, Endpoint::Abstract(_)) => {
                return Err(Error::AbstractWithoutUid { socket: socket.clone() });
            }
        };
    check(&stream, socket, &expected)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(connect_err)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(connect_err)?;
    Ok(stream)
}

/// The server at the other end of `stream` runs as `expected`'s uid
/// (`SO_PEERCRED`: its credentials when it called `listen`, which it cannot
/// change afterwards).
fn check(stream: &UnixStream, socket: &Endpoint, expected: &Expected) -> Result<(), Error> {
    let cred = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| Error::PeerCred { socket: socket.clone(), source: e.into() })?;
    let got = cred.uid.as_raw();
    if got == expected.uid() {
        Ok(())
    } else {
        Err(Error::WrongUid { socket: socket.clone(), expected: expected.clone(), got })
    }
}

#[cfg(test)]
mod tests {
    use std::os::{
        linux::net::SocketAddrExt as _,
        unix::{
            ffi::OsStrExt as _,
            net::{SocketAddr, UnixListener},
        },
    };

    use super::*;

    /// This process's uid: the owner of a directory it creates.
    fn own_uid(dir: &tempfile::TempDir) -> u32 {
        std::fs::metadata(dir.path()).unwrap().uid()
    }

    /// Another uid than `uid`.
    fn other(uid: u32) -> u32 {
        if uid == 65534 { 65533 } else { 65534 }
    }

    /// A listening abstract socket with a name no other test uses.
    fn abstract_listener(tag: &str) -> (UnixListener, Endpoint) {
        let name = format!("qkeyd-peer-test-{}-{tag}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        (UnixListener::bind_addr(&addr).unwrap(), Endpoint::Abstract(name))
    }

    #[test]
    fn a_server_of_the_expected_uid_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let me = own_uid(&dir);
        let (client, _server) = UnixStream::pair().unwrap();
        let socket = Endpoint::Path(dir.path().join("s.sock"));
        check(&client, &socket, &Expected::Explicit(me)).unwrap();
        let owner = Expected::DirOwner { uid: me, dir: dir.path().to_owned() };
        check(&client, &socket, &owner).unwrap();
    }

    #[test]
    fn a_server_of_another_uid_is_refused_and_the_error_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let me = own_uid(&dir);
        let (client, _server) = UnixStream::pair().unwrap();
        let socket = Endpoint::Path(PathBuf::from("/run/qkeyd/module.sock"));
        let want = other(me);
        let e = check(&client, &socket, &Expected::Explicit(want)).unwrap_err();
        assert!(matches!(e, Error::WrongUid { got, .. } if got == me), "{e:?}");
        let msg = e.to_string();
        for part in [
            format!("runs as uid {me}"),
            format!("expected uid {want} (QKEYD_MODULE_SERVER_UID)"),
            "/run/qkeyd/module.sock".to_owned(),
        ] {
            assert!(msg.contains(&part), "{part:?} missing from {msg}");
        }
        let owner = Expected::DirOwner { uid: want, dir: PathBuf::from("/run/qkeyd") };
        let msg = check(&client, &socket, &owner).unwrap_err().to_string();
        assert!(msg.contains(&format!("expected uid {want} (the owner of /run/qkeyd)")), "{msg}");
    }

    #[test]
    fn a_socket_file_is_trusted_when_its_directory_owner_serves_it() {
        let dir = tempfile::tempdir().unwrap();
        let me = own_uid(&dir);
        let path = dir.path().join("s.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let socket = Endpoint::Path(path);
        connect_to(&socket, None).unwrap();
        connect_to(&socket, Some(me)).unwrap();
        // An explicit uid wins over the directory's owner.
        let e = connect_to(&socket, Some(other(me))).unwrap_err();
        assert!(matches!(e, Error::WrongUid { expected: Expected::Explicit(_), .. }), "{e:?}");
    }

    #[test]
    fn the_expected_owner_is_that_of_the_directory_holding_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let want = Expected::DirOwner { uid: own_uid(&dir), dir: dir.path().to_owned() };
        assert_eq!(Expected::dir_owner(&path).unwrap(), want);
        let root = std::fs::metadata("/").unwrap().uid();
        assert_eq!(
            Expected::dir_owner(Path::new("/x.sock")).unwrap(),
            Expected::DirOwner { uid: root, dir: PathBuf::from("/") }
        );
        let here = std::fs::metadata(".").unwrap().uid();
        assert_eq!(
            Expected::dir_owner(Path::new("x.sock")).unwrap(),
            Expected::DirOwner { uid: here, dir: PathBuf::from(".") }
        );
    }

    #[test]
    fn an_abstract_socket_needs_an_explicit_uid() {
        let dir = tempfile::tempdir().unwrap();
        let me = own_uid(&dir);
        let (_listener, socket) = abstract_listener("explicit");
        let e = connect_to(&socket, None).unwrap_err();
        assert!(matches!(e, Error::AbstractWithoutUid { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("set QKEYD_MODULE_SERVER_UID") && msg.contains("@qkeyd-peer"),
            "{msg}"
        );
        connect_to(&socket, Some(me)).unwrap();
        let e = connect_to(&socket, Some(other(me))).unwrap_err();
        assert!(matches!(e, Error::WrongUid { got, .. } if got == me), "{e:?}");
    }

    #[test]
    fn a_refused_server_gets_no_bytes_and_sees_the_connection_close() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, socket) = abstract_listener("closed");
        let e = connect_to(&socket, Some(other(own_uid(&dir)))).unwrap_err();
        assert!(matches!(e, Error::WrongUid { .. }), "{e:?}");
        let (mut server, _) = listener.accept().unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        io::Read::read_to_end(&mut server, &mut got).unwrap();
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn the_server_uid_setting_is_a_number_or_an_error() {
        assert_eq!(explicit_uid(None).unwrap(), None);
        for (value, uid) in
            [("0", 0), ("65534", 65534), ("1000", 1000), ("4294967294", u32::MAX - 1)]
        {
            assert_eq!(explicit_uid(Some(OsStr::new(value))).unwrap(), Some(uid), "{value}");
        }
        for value in ["", "abc", "-1", "+5", " 0", "0 ", "1e3", "0x10", "4294967295", "99999999999"]
        {
            let e = explicit_uid(Some(OsStr::new(value))).unwrap_err();
            assert!(matches!(&e, Error::BadUid { value: v } if v == value), "{value}: {e:?}");
            assert!(e.to_string().contains("QKEYD_MODULE_SERVER_UID="), "{e}");
        }
        assert!(explicit_uid(Some(OsStr::from_bytes(b"\xff0"))).is_err());
    }

    #[test]
    fn the_socket_setting_names_a_path_or_an_abstract_socket() {
        assert_eq!(Endpoint::parse(None), Endpoint::Path(PathBuf::from(DEFAULT_SOCKET)));
        assert_eq!(Endpoint::parse(Some("")), Endpoint::Path(PathBuf::from(DEFAULT_SOCKET)));
        assert_eq!(Endpoint::parse(Some("@q")), Endpoint::Abstract("q".into()));
        assert_eq!(Endpoint::parse(Some("/a/b.sock")).to_string(), "/a/b.sock");
        assert_eq!(Endpoint::parse(Some("@q")).to_string(), "@q");
    }
}
