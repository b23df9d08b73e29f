//! End-to-end tests: the real `stanna` binary as child processes, driven by the real clients its
//! users have (grpcurl, curl, Python, HTTP and gRPC clients), on PostgreSQL and Redis where the
//! environment names them. One test binary, each story a module.

mod admin;
mod admin_with_grpcurl;
mod audit;
mod browser;
mod compose;
mod dashboard;
mod dashboard_http;
mod edge;
mod gateway_split;
mod http;
mod key_changes;
mod keys_cli;
mod operability;
mod read_replica;
mod readme_public_api;
mod schemathesis;
mod scopes;
mod search;
mod seed;
mod split_mode;
mod store_outage;
mod telemetry;
mod tls;
mod usage;
