#![no_main]
//! `cargo fuzz run rate_limit_headers`: see `stanna_fuzz_targets::rate_limit_headers` for what each input must never do.
libfuzzer_sys::fuzz_target!(|data: &[u8]| stanna_fuzz_targets::rate_limit_headers(data));
