//! Compiles `proto/lobster.proto` with protox (pure Rust, so no `protoc` is needed on the machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/lobster.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // Messages that carry a secret get a redacting `Debug` (src/proto.rs), never a derived one.
        .skip_debug([
            ".lobster.v1.JoinRequest",
            ".lobster.v1.JoinReply",
            ".lobster.v1.Attach",
            ".lobster.v1.DrainRequest",
        ])
        // Histograms arrive as `Bytes` slices of the message's buffer, not one allocation and
        // copy each (30 per interval of a slave with 10 endpoints; the master reads thousands
        // a second).
        .bytes(".lobster.v1.EndpointStats")
        .bytes(".lobster.v1.FlowCounts")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
