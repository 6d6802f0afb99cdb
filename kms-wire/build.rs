//! Compiles the `.proto` files in `proto/` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/kms/v2/api.proto", "proto/kms/v1beta1/api.proto", "proto/storage/kmsv2.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).bytes(".").btree_map(".").compile_fds(descriptors)?;
    Ok(())
}
