//! Compiles `proto/lobster.proto` with protox (pure Rust, so no `protoc` is needed on the machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/lobster.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
