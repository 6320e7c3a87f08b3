//! Generates the demo app's gRPC echo service (`proto/echo_test.proto`) with protox (pure
//! Rust), so building needs no `protoc`. The client is generated too: the end-to-end tests
//! of this crate call the service with it.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/echo_test.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/echo_test.proto");
    Ok(())
}
