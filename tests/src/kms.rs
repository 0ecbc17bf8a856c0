//! A blocking KMS v2 client over a unix socket (tonic), for the tests and the
//! KMS benchmark.

use std::{collections::HashMap, time::Duration};

use crate::kms_proto::{
    DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
    key_management_service_client::KeyManagementServiceClient,
};
use hyper_util::rt::TokioIo;
use tonic::transport::Channel;

/// A blocking KMS v2 client over a unix socket (a path, or `@name`).
pub struct Client {
    rt: tokio::runtime::Runtime,
    inner: KeyManagementServiceClient<Channel>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Connect to `socket` (a path, or `@name` for an abstract socket).
    pub fn connect(socket: &str) -> Self {
        let (rt, inner) = Self::parts(socket);
        Self { rt, inner }
    }

    /// The runtime and a client for it (the client can be cloned into tasks).
    pub fn parts(socket: &str) -> (tokio::runtime::Runtime, KeyManagementServiceClient<Channel>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let socket = socket.to_owned();
        let channel = rt
            .block_on(
                tonic::transport::Endpoint::from_static("http://localhost")
                    .connect_timeout(Duration::from_secs(5))
                    .connect_with_connector(tower::service_fn(move |_| {
                        let socket = socket.clone();
                        async move {
                            let stream = match socket.strip_prefix('@') {
                                Some(name) => {
                                    use std::os::linux::net::SocketAddrExt as _;
                                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(
                                        name.as_bytes(),
                                    )?;
                                    let s = std::os::unix::net::UnixStream::connect_addr(&addr)?;
                                    s.set_nonblocking(true)?;
                                    tokio::net::UnixStream::from_std(s)?
                                }
                                None => tokio::net::UnixStream::connect(&socket).await?,
                            };
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    })),
            )
            .expect("connect to the KMS socket");
        (rt, KeyManagementServiceClient::new(channel))
    }

    /// Status, with kube-apiserver's 3 s timeout.
    pub fn status(&mut self) -> Result<StatusResponse, tonic::Status> {
        let mut req = tonic::Request::new(StatusRequest {});
        // kube-apiserver's per-call timeout.
        req.set_timeout(Duration::from_secs(3));
        self.rt.block_on(self.inner.status(req)).map(tonic::Response::into_inner)
    }

    /// Encrypt.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<EncryptResponse, tonic::Status> {
        let mut req = tonic::Request::new(EncryptRequest {
            plaintext: plaintext.to_vec(),
            uid: "e2e-encrypt".into(),
        });
        req.set_timeout(Duration::from_secs(3));
        self.rt.block_on(self.inner.encrypt(req)).map(tonic::Response::into_inner)
    }

    /// Decrypt.
    pub fn decrypt(
        &mut self,
        key_id: &str,
        ciphertext: &[u8],
        annotations: &HashMap<String, Vec<u8>>,
    ) -> Result<Vec<u8>, tonic::Status> {
        let mut req = tonic::Request::new(DecryptRequest {
            ciphertext: ciphertext.to_vec(),
            uid: "e2e-decrypt".into(),
            key_id: key_id.into(),
            annotations: annotations.clone(),
        });
        req.set_timeout(Duration::from_secs(3));
        self.rt.block_on(self.inner.decrypt(req)).map(|r| r.into_inner().plaintext)
    }

    /// Decrypt what an Encrypt answered.
    pub fn decrypt_reply(&mut self, e: &EncryptResponse) -> Result<Vec<u8>, tonic::Status> {
        self.decrypt(&e.key_id, &e.ciphertext, &e.annotations)
    }
}
