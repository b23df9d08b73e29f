//! Measures what one argon2id hash and one verification cost on this machine, with the default
//! (OWASP) parameters and with any given as `M_KIB T P` arguments. A measurement, not a test.
//!
//! ```sh
//! cargo run --release -p stanna-keys --example argon2_cost [M_KIB T P]
//! ```

use std::time::{Duration, Instant};

use stanna_keys::{GeneratedKey, HashParams, KeyHasher, PresentedKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let params = match args.as_slice() {
        [] => HashParams::default(),
        [m_kib, t, p] => HashParams {
            m_kib: *m_kib,
            t: *t,
            p: *p,
        },
        _ => return Err("usage: argon2_cost [M_KIB T P]".into()),
    };
    let hasher = KeyHasher::new(params)?;
    let key = *GeneratedKey::generate()?.key();
    let stored = hasher.hash(&key)?;
    let rounds = 20;
    let hash = median(rounds, || {
        hasher.hash(&key).expect("hash");
    });
    let verify = median(rounds, || {
        assert!(hasher.verify(&key, &stored).expect("verify"));
    });
    let text = GeneratedKey::generate()?.into_secret();
    let parse = median(rounds, || {
        for _ in 0..10_000 {
            std::hint::black_box(PresentedKey::parse(std::hint::black_box(&text)).expect("parse"));
        }
    }) / 10_000;
    println!(
        "argon2id m={} KiB t={} p={} ({rounds} rounds, median)",
        params.m_kib, params.t, params.p
    );
    println!("  hash:   {:>10.2?}", hash);
    println!("  verify: {:>10.2?}", verify);
    println!(
        "  parse + checksum of a presented key: {:?} ({}x cheaper than verify)",
        parse,
        verify.as_nanos() / parse.as_nanos().max(1)
    );
    Ok(())
}

fn median(rounds: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[rounds / 2]
}
