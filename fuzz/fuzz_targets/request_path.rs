#![no_main]
//! `cargo fuzz run request_path`: see `stanna_fuzz_targets::request_path` for what each input must never do.
libfuzzer_sys::fuzz_target!(|data: &[u8]| stanna_fuzz_targets::request_path(data));
