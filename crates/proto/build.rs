//! Compiles `proto/stanna/keys/v1/*.proto` with protox (pure Rust: no system `protoc` needed) and
//! writes the encoded file descriptor set to `OUT_DIR` for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["registry.proto", "auth.proto", "quota.proto", "types.proto"]
        .map(|f| root.join("stanna/keys/v1").join(f));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("stanna_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // Boxed: a key's verdict (the hot path) carries a pointer, not four empty strings, so
        // the response moved through tonic stays as small as before sessions existed.
        .boxed(".stanna.keys.v1.VerifyResponse.session")
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
