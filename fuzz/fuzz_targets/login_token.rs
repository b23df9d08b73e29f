#![no_main]
//! `cargo fuzz run login_token`: see `stanna_fuzz_targets::login_token` for what each input must never do.
libfuzzer_sys::fuzz_target!(|data: &[u8]| stanna_fuzz_targets::login_token(data));
