//! Generates the control protocol's Rust types from `proto/control.proto`. The .proto is
//! compiled by protox (pure Rust), so building needs no `protoc` on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/control.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/control.proto");
    Ok(())
}
