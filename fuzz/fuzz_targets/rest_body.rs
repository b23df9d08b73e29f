#![no_main]
//! `cargo fuzz run rest_body`: see `stanna_fuzz_targets::rest_body` for what each input must never do.
libfuzzer_sys::fuzz_target!(|data: &[u8]| stanna_fuzz_targets::rest_body(data));
