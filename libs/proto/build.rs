//! Compiles every `.proto` file under `../../proto` with `protox` (pure Rust, no
//! system `protoc`) and generates prost messages plus tonic clients and servers.
//! Writes only to `OUT_DIR`: one `<package>.rs` per protobuf package and the
//! encoded descriptor set `kizuna_descriptor.bin` (for gRPC server reflection).

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use protox::prost::Message as _;

const PROTO_ROOT: &str = "../../proto";

/// Collects every `.proto` file under `dir`, recursively, in sorted order.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let root = Path::new(PROTO_ROOT);
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");

    let mut files = Vec::new();
    collect_protos(root, &mut files)?;
    if files.is_empty() {
        return Err(format!("no .proto files found under {PROTO_ROOT}").into());
    }
    // Cargo only watches a directory's own mtime for `rerun-if-changed`; list
    // every file too so edits inside nested packages trigger a rebuild.
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let fds = protox::compile(&files, [root])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("kizuna_descriptor.bin");
    // `compile_fds` does not write the descriptor set itself: do it here.
    fs::write(&descriptor_path, fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
