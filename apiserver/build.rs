//! Compiles the part of etcd's v3 API that the etcd store calls, with protox (a pure-Rust
//! protobuf compiler), so building Drover needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd.proto");
    let fds = protox::compile(["proto/etcd.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Keys and values travel as `Bytes`, as the Store trait holds them.
        .bytes(".")
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
