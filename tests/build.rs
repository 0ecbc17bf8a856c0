//! Generates the tests' KMS v2 gRPC client from the daemon's
//! `daemon/proto/kms_v2.proto` (the upstream API), so the tests speak to the
//! plugin as kube-apiserver does, through the wire, not through the daemon's code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../daemon/proto/kms_v2.proto");
    let fds = protox::compile(["kms_v2.proto"], ["../daemon/proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(fds)?;
    Ok(())
}
