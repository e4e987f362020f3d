//! Compiles the gRPC service definition with protox (a pure-Rust protobuf compiler), so building
//! Drover needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/drover.proto");
    let fds = protox::compile(["proto/drover.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
