//! Generates the gRPC echo service used by end-to-end tests from `proto/echo.proto`, with
//! protox (pure Rust), so building needs no `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/echo.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/echo.proto");
    Ok(())
}
