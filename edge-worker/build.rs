//! Validates the gateway config at build time and embeds it in the edge artefact.
//!
//! The config file is `GATEHOUSE_CONFIG` (a path, relative to this crate or absolute),
//! or `examples/gatehouse.toml` of the repository. An invalid config fails the build
//! with the same messages `gatehouse check` prints, so a broken config can never be
//! deployed. The embedded form is the normalized JSON of the parsed config.

use std::path::PathBuf;
use std::{env, fs, process};

use gatehouse_core::Gateway;
use gatehouse_core::config::{Format, check_store_support};

fn main() {
    println!("cargo:rerun-if-env-changed=GATEHOUSE_CONFIG");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let path = match env::var_os("GATEHOUSE_CONFIG") {
        Some(path) => manifest_dir.join(path),
        None => manifest_dir.join("../examples/gatehouse.toml"),
    };
    println!("cargo:rerun-if-changed={}", path.display());

    let text = fs::read_to_string(&path).unwrap_or_else(|error| {
        eprintln!(
            "failed to read the gateway config {}: {error}",
            path.display()
        );
        eprintln!("set GATEHOUSE_CONFIG to the path of gatehouse.toml");
        process::exit(1);
    });
    let format = Format::from_file_name(&path.to_string_lossy());
    let gateway = Gateway::from_text(&text, format).unwrap_or_else(|errors| {
        eprintln!("{}: {errors}", path.display());
        process::exit(1);
    });
    // Build scripts run on the host, so the target comes from Cargo's variables.
    let worker = env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|arch| arch == "wasm32")
        && env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "unknown");
    let (platform, store_types): (&str, &[&str]) = if worker {
        ("Cloudflare Workers", &["durable_object"])
    } else {
        ("Spin", &["redis"])
    };
    let unsupported = check_store_support(gateway.config(), platform, store_types);
    if !unsupported.is_empty() {
        for problem in unsupported {
            eprintln!("{}: {problem}", path.display());
        }
        process::exit(1);
    }

    let json = serde_json::to_string(gateway.config()).unwrap_or_else(|error| {
        eprintln!("failed to serialize the gateway config: {error}");
        process::exit(1);
    });
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let out = out_dir.join("gatehouse-config.json");
    if let Err(error) = fs::write(&out, json) {
        eprintln!("failed to write {}: {error}", out.display());
        process::exit(1);
    }
}
