//! Compiles the gRPC service definition with protox (a pure-Rust protobuf compiler), so building
//! Drover needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/drover.proto");
    let fds = protox::compile(["proto/drover.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Objects travel as `Bytes`: the server answers with the watch cache's JSON and fans
        // one event out to every watcher without copying it.
        .bytes(".")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
