//! Compiles `pool_state.proto` with protox (pure Rust, no `protoc` needed).
//! The gRPC service code is generated only with the `grpc` feature, so the
//! wasm filter pulls in nothing but prost messages.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=pool_state.proto");
    let fds = protox::compile(["pool_state.proto"], ["."])?;
    if std::env::var_os("CARGO_FEATURE_GRPC").is_some() {
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(fds)?;
    } else {
        prost_build::Config::new().compile_fds(fds)?;
    }
    Ok(())
}
