//! Generates the KMS v2 gRPC code from `proto/kms_v2.proto` with a pure-Rust
//! protobuf compiler (protox), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/kms_v2.proto");
    let fds = protox::compile(["proto/kms_v2.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
