#![no_main]
//! `cargo fuzz run key_parser`: see `stanna_fuzz_targets::key_parser` for what each input must never do.
libfuzzer_sys::fuzz_target!(|data: &[u8]| stanna_fuzz_targets::key_parser(data));
