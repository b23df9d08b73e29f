#![no_main]
//! `cargo fuzz run rest_query_and_path`: see `stanna_fuzz_targets::rest_query_and_path` for what each input must never do.
libfuzzer_sys::fuzz_target!(|data: &[u8]| stanna_fuzz_targets::rest_query_and_path(data));
