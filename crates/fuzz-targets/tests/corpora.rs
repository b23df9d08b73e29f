//! Replays every committed fuzz corpus (`fuzz/corpus/<target>/*`) and every found crash
//! (`fuzz/artifacts/<target>/*`, if any were kept as regressions) through its target, on the
//! stable toolchain: what the fuzzers once reached keeps holding in CI.

use std::path::Path;

#[test]
fn every_corpus_input_keeps_its_properties() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    for (name, target) in stanna_fuzz_targets::TARGETS {
        let mut inputs = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                let data = std::fs::read(&path).expect("a corpus file");
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(
                    outcome.is_ok(),
                    "{name}: {} breaks a property (run `cargo fuzz run {name} {}` to see it)",
                    path.display(),
                    path.display()
                );
                inputs += 1;
            }
        }
        assert!(inputs > 0, "{name} has a committed corpus");
        replayed += inputs;
    }
    println!("replayed {replayed} corpus inputs");
}

/// Seeds that reach the interesting paths, so a target that stopped checking anything fails
/// here rather than passing on noise.
#[test]
fn the_targets_refuse_what_they_must() {
    use stanna_fuzz_targets as t;
    let key = "sk-".to_owned() + &"a".repeat(50);
    // Each must run without panicking on inputs of every shape.
    for (_, target) in t::TARGETS {
        for input in [
            &b""[..],
            b"\xff\xfe",
            key.as_bytes(),
            b"{}",
            b"pageSize=101",
        ] {
            target(input);
        }
    }
}
