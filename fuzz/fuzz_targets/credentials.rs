#![no_main]
//! `cargo fuzz run credentials`: see `stanna_fuzz_targets::credentials` for what each input must never do.
libfuzzer_sys::fuzz_target!(|data: &[u8]| stanna_fuzz_targets::credentials(data));
