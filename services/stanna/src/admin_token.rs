//! The admin token of an all-in-one `stanna serve` started without `STANNA_ADMIN_TOKEN`: one is
//! generated from the OS random source and printed once, with how to keep it.

use rand::RngExt;
use stanna_key_registry::AdminToken;

/// A fresh admin token for this run: 32 base62 characters from the OS random source.
pub fn generate() -> AdminToken {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let token: String = (0..32)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    token
        .parse()
        .expect("32 base62 characters make a valid admin token")
}

/// Shows a generated token once, with the `export` line that keeps it (one JSON object under
/// `STANNA_LOG_FORMAT=json`, so a log collector reads it as one record). Called only once the
/// system is built: a run refused at start shows no token nobody could use.
pub fn print(token: &AdminToken, format: stanna_telemetry::LogFormat) {
    let token = token.expose();
    match format {
        stanna_telemetry::LogFormat::Text => {
            println!("STANNA_ADMIN_TOKEN is not set, so this run generated one (shown once):");
            println!("  export STANNA_ADMIN_TOKEN={token}");
            println!("Set it before starting stanna to keep the same token across restarts.");
        }
        stanna_telemetry::LogFormat::Json => println!(
            "{}",
            serde_json::json!({
                "level": "WARN",
                "fields": {
                    "message": "STANNA_ADMIN_TOKEN is not set, so this run generated one (shown once); set it before starting stanna to keep the same token across restarts",
                    "export": format!("export STANNA_ADMIN_TOKEN={token}"),
                }
            })
        ),
    }
}
