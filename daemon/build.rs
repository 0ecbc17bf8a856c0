//! Generates gRPC code with a pure-Rust protobuf compiler (protox), so
//! building needs no system `protoc`: the KMS v2 service from
//! `proto/kms_v2.proto`, and the etcd KV client from `proto/etcd_kv.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/kms_v2.proto");
    println!("cargo:rerun-if-changed=proto/etcd_kv.proto");
    let fds = protox::compile(["proto/kms_v2.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    // Only the client: qkeyd talks to etcd, it does not serve etcd's API.
    let fds = protox::compile(["proto/etcd_kv.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(fds)?;
    Ok(())
}
