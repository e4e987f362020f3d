//! Compiles the part of etcd's v3 API that the etcd store calls, with protox (a pure-Rust
//! protobuf compiler), so building Drover needs no system protoc.
//!
//! With the `conformance` feature it also compiles TiKV's and PD's protos (`proto/kvproto`, as
//! the `tikv-client` crate ships them), server side only, for the loopback TiKV double that the
//! TiKV store is tested against. The release binary is built without that feature.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd.proto");
    let fds = protox::compile(["proto/etcd.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Keys and values travel as `Bytes`, as the Store trait holds them.
        .bytes(".")
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;

    if std::env::var_os("CARGO_FEATURE_CONFORMANCE").is_some() {
        println!("cargo:rerun-if-changed=proto/kvproto");
        let fds = protox::compile(
            ["proto/kvproto/pdpb.proto", "proto/kvproto/tikvpb.proto"],
            ["proto/kvproto", "proto/kvproto/include"],
        )?;
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(false)
            // The double serves only the RPCs the client calls; every other one answers
            // UNIMPLEMENTED.
            .generate_default_stubs(true)
            .include_file("kvproto.rs")
            .compile_fds(fds)?;
    }
    Ok(())
}
