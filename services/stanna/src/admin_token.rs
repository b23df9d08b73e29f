//! The admin token of an all-in-one `stanna serve` started without `STANNA_ADMIN_TOKEN`: kept in
//! an owner-only file of the state directory (`state.rs`) and never printed — what is printed is
//! where it is and the `export` line that reads it, so logs never hold it.

use crate::state::Kept;

/// Says where the admin token is kept, with the `export` line that reads it (one JSON object
/// under `STANNA_LOG_FORMAT=json`, so a log collector reads it as one record). Called only once
/// the system is built: a run refused at start says nothing of a token nobody could use.
pub fn print(kept: &Kept, format: stanna_telemetry::LogFormat) {
    let path = kept.path.display();
    let how = if kept.generated {
        "STANNA_ADMIN_TOKEN is not set, so this run generated one, kept in"
    } else {
        "STANNA_ADMIN_TOKEN is not set: using the admin token kept in"
    };
    let export = format!("export STANNA_ADMIN_TOKEN=$(cat {path})");
    match format {
        stanna_telemetry::LogFormat::Text => {
            println!("{how} {path} (owner-only; reused across restarts):");
            println!("  {export}");
        }
        stanna_telemetry::LogFormat::Json => println!(
            "{}",
            serde_json::json!({
                "level": "WARN",
                "fields": {
                    "message": format!("{how} {path} (owner-only; reused across restarts)"),
                    "export": export,
                }
            })
        ),
    }
}
