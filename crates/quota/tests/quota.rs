//! The quota behaviour suite, run against the in-process backend (always) and Redis (when
//! `REDIS_URL` is set; CI sets it), with injected time so hours pass in milliseconds.

use std::collections::VecDeque;
use std::time::Duration;

use stanna_keys::WindowLimit;
use stanna_quota::{
    Decision, MemoryBackend, Mode, NamedWindow, QuotaBackend, QuotaError, RedisBackend,
    RedisBackendConfig,
};
use stanna_testkit::random_suffix;

const T0: u64 = 1_800_000_000_000;

async fn memory() -> QuotaBackend {
    QuotaBackend::Memory(MemoryBackend::new())
}

async fn redis(test: &str) -> Option<QuotaBackend> {
    let url = stanna_testkit::redis_url(test)?;
    Some(QuotaBackend::Redis(
        RedisBackend::connect_lazy(&RedisBackendConfig::new(url)).expect("redis url"),
    ))
}

/// The same, on a multi-threaded runtime: decisions really run at once on several threads.
macro_rules! on_both_backends_in_parallel {
    ($($test:ident),* $(,)?) => {
        mod memory_parallel {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() { super::$test(super::memory().await).await })*
        }
        mod redis_parallel {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                if let Some(backend) = super::redis(concat!("redis::", stringify!($test))).await {
                    super::$test(backend).await
                }
            })*
        }
    };
}

on_both_backends_in_parallel!(a_thousand_concurrent_consumes_admit_exactly_the_limit);

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $test() { super::$test(super::memory().await).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $test() {
                if let Some(backend) = super::redis(concat!("redis::", stringify!($test))).await {
                    super::$test(backend).await
                }
            })*
        }
    };
}

on_both_backends!(
    hundred_are_admitted_then_the_101st_is_refused_with_retry_after,
    a_refused_call_charges_no_window,
    the_long_window_binds_after_the_burst_window_resets,
    an_abuser_never_gets_more_than_the_limit_in_any_rolling_span,
    two_full_bursts_61_seconds_apart_are_both_admitted,
    bursts_every_361_seconds_for_three_hours_are_never_refused,
    peek_never_charges,
    a_changed_limit_keeps_what_was_admitted,
    a_cost_above_the_limit_is_invalid,
    windows_report_remaining_and_reset,
);

fn window(name: &str, limit: u32, period: Duration) -> NamedWindow {
    NamedWindow {
        name: name.to_owned().into(),
        limit: WindowLimit::new(limit, period).unwrap(),
    }
}

fn product_windows() -> Vec<NamedWindow> {
    vec![
        window("burst", 100, Duration::from_secs(60)),
        window("hourly", 1000, Duration::from_secs(3600)),
    ]
}

fn subject() -> String {
    format!("test{}", random_suffix())
}

async fn consume(b: &QuotaBackend, s: &str, w: &[NamedWindow], at: u64) -> Decision {
    b.decide(s, 1, w, Mode::Consume, Some(at))
        .await
        .expect("decision")
}

async fn hundred_are_admitted_then_the_101st_is_refused_with_retry_after(b: QuotaBackend) {
    let (s, w) = (subject(), product_windows());
    for i in 0..100 {
        assert!(
            consume(&b, &s, &w, T0 + i).await.allowed,
            "request {} refused",
            i + 1
        );
    }
    let refused = consume(&b, &s, &w, T0 + 100).await;
    assert!(!refused.allowed, "the 101st is refused");
    let retry = refused.retry_after.expect("retry_after on a refusal");
    assert!(
        retry <= Duration::from_secs(60),
        "retry_after {retry:?} exceeds the window"
    );
    assert_eq!(
        retry,
        Duration::from_millis(60_000 - 100),
        "exactly when the first request leaves the window"
    );
    assert!(
        consume(&b, &s, &w, T0 + 100 + retry.as_millis() as u64)
            .await
            .allowed,
        "admitted right at retry_after"
    );
}

async fn a_refused_call_charges_no_window(b: QuotaBackend) {
    let s = subject();
    let w = vec![
        window("burst", 2, Duration::from_secs(1)),
        window("hourly", 3, Duration::from_secs(10)),
    ];
    assert!(consume(&b, &s, &w, T0).await.allowed);
    assert!(consume(&b, &s, &w, T0 + 1).await.allowed);
    for i in 0..5 {
        assert!(
            !consume(&b, &s, &w, T0 + 2 + i).await.allowed,
            "burst refuses"
        );
    }
    // Had the refusals charged the hourly window, it would be exhausted now.
    let after_burst = consume(&b, &s, &w, T0 + 1000).await;
    assert!(
        after_burst.allowed,
        "the hourly window was not charged by refused calls"
    );
    assert_eq!(after_burst.windows[1].remaining, 0);
}

async fn the_long_window_binds_after_the_burst_window_resets(b: QuotaBackend) {
    let s = subject();
    let w = vec![
        window("burst", 5, Duration::from_secs(1)),
        window("hourly", 12, Duration::from_secs(10)),
    ];
    let mut admitted = 0;
    let mut refused_by_hourly_at = None;
    for second in 0..10u64 {
        for i in 0..6 {
            let d = consume(&b, &s, &w, T0 + second * 1000 + i).await;
            if d.allowed {
                admitted += 1;
            } else if d.windows[1].remaining == 0 && refused_by_hourly_at.is_none() {
                refused_by_hourly_at = Some(second);
                assert!(
                    d.retry_after.unwrap() > Duration::from_secs(1),
                    "the hourly window's retry is long"
                );
            }
        }
    }
    assert_eq!(admitted, 12, "exactly the long window's limit in 10 s");
    assert_eq!(
        refused_by_hourly_at,
        Some(2),
        "the long window binds once the burst has reset twice"
    );
}

/// Checks every rolling span of `period` among `admitted` times holds at most `limit`.
fn most_in_any_span(admitted: &[u64], period: u64) -> usize {
    let mut window = VecDeque::new();
    let mut most = 0;
    for &t in admitted {
        window.push_back(t);
        while let Some(&first) = window.front() {
            if first + period <= t {
                window.pop_front();
            } else {
                break;
            }
        }
        most = most.max(window.len());
    }
    most
}

async fn an_abuser_never_gets_more_than_the_limit_in_any_rolling_span(b: QuotaBackend) {
    let (s, w) = (subject(), product_windows());
    let mut admitted = Vec::new();
    // 10 requests per second for 3 hours.
    for i in 0..(3 * 3600 * 10u64) {
        let at = T0 + i * 100;
        if consume(&b, &s, &w, at).await.allowed {
            admitted.push(at);
        }
    }
    assert_eq!(
        most_in_any_span(&admitted, 60_000),
        100,
        "at most 100 in any 60 s span"
    );
    assert_eq!(
        most_in_any_span(&admitted, 3_600_000),
        1000,
        "at most 1000 in any 3600 s span"
    );
    assert_eq!(
        admitted.len(),
        3000,
        "and the full 1000 per hour is admitted"
    );
}

async fn two_full_bursts_61_seconds_apart_are_both_admitted(b: QuotaBackend) {
    let (s, w) = (subject(), product_windows());
    for burst in 0..2u64 {
        for i in 0..100 {
            let d = consume(&b, &s, &w, T0 + burst * 61_000 + i).await;
            assert!(d.allowed, "burst {burst}, request {i} refused");
        }
    }
}

async fn bursts_every_361_seconds_for_three_hours_are_never_refused(b: QuotaBackend) {
    let (s, w) = (subject(), product_windows());
    let mut start = T0;
    while start < T0 + 3 * 3_600_000 {
        for i in 0..100 {
            assert!(
                consume(&b, &s, &w, start + i).await.allowed,
                "a compliant burst at +{} s was refused",
                (start - T0) / 1000
            );
        }
        start += 361_000;
    }
}

async fn a_thousand_concurrent_consumes_admit_exactly_the_limit(b: QuotaBackend) {
    let s = subject();
    let w = vec![
        window("burst", 100, Duration::from_secs(60)),
        window("hourly", 1000, Duration::from_secs(3600)),
    ];
    // Four OS threads, each with its own runtime and 250 decisions in flight, released together: the
    // decisions run on several threads by construction. (Spawning 1000 tasks on a multi-threaded
    // runtime did not guarantee that: on a loaded 2-core CI machine one worker took them all.)
    // A peek first (it charges nothing) opens a lazy Redis connection on the test's own runtime,
    // which outlives the four: a connection opened on one of theirs would die with it.
    b.decide(&s, 1, &w, Mode::Peek, None).await.expect("peek");
    let start = std::sync::Barrier::new(4);
    let admitted: usize = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (b, s, w, start) = (&b, &s, &w, &start);
                scope.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    runtime.block_on(async {
                        let tasks: Vec<_> = (0..250)
                            .map(|_| {
                                let (b, s, w) = (b.clone(), s.clone(), w.clone());
                                tokio::spawn(async move {
                                    b.decide(&s, 1, &w, Mode::Consume, None)
                                        .await
                                        .expect("decision")
                                        .allowed
                                })
                            })
                            .collect();
                        start.wait();
                        let mut admitted = 0;
                        for task in tasks {
                            admitted += usize::from(task.await.unwrap());
                        }
                        admitted
                    })
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(admitted, 100);
}

async fn peek_never_charges(b: QuotaBackend) {
    let s = subject();
    let w = vec![window("burst", 3, Duration::from_secs(1))];
    for _ in 0..10 {
        let d = b.decide(&s, 1, &w, Mode::Peek, Some(T0)).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.windows[0].remaining, 3);
    }
    for _ in 0..3 {
        assert!(consume(&b, &s, &w, T0).await.allowed);
    }
    let peek = b.decide(&s, 1, &w, Mode::Peek, Some(T0 + 1)).await.unwrap();
    assert!(!peek.allowed && peek.retry_after == Some(Duration::from_millis(999)));
}

async fn a_changed_limit_keeps_what_was_admitted(b: QuotaBackend) {
    let s = subject();
    for i in 0..5 {
        assert!(
            consume(
                &b,
                &s,
                &[window("burst", 10, Duration::from_secs(60))],
                T0 + i
            )
            .await
            .allowed
        );
    }
    // Lowered to 6: only one more fits, because the 5 already admitted still count.
    let lowered = [window("burst", 6, Duration::from_secs(60))];
    assert!(consume(&b, &s, &lowered, T0 + 10).await.allowed);
    assert!(!consume(&b, &s, &lowered, T0 + 11).await.allowed);
    // Raised to 8: two more.
    let raised = [window("burst", 8, Duration::from_secs(60))];
    assert!(consume(&b, &s, &raised, T0 + 12).await.allowed);
    assert!(consume(&b, &s, &raised, T0 + 13).await.allowed);
    assert!(!consume(&b, &s, &raised, T0 + 14).await.allowed);
}

async fn a_cost_above_the_limit_is_invalid(b: QuotaBackend) {
    let w = vec![window("burst", 5, Duration::from_secs(1))];
    let result = b.decide(&subject(), 6, &w, Mode::Consume, Some(T0)).await;
    assert!(matches!(result, Err(QuotaError::InvalidArgument { field, .. }) if field == "cost"));
    assert!(matches!(
        b.decide(&subject(), 1, &[], Mode::Consume, Some(T0)).await,
        Err(QuotaError::InvalidArgument { .. })
    ));
}

async fn windows_report_remaining_and_reset(b: QuotaBackend) {
    let (s, w) = (subject(), product_windows());
    let first = consume(&b, &s, &w, T0).await;
    assert_eq!(
        (first.windows[0].remaining, first.windows[1].remaining),
        (99, 999)
    );
    assert_eq!(first.windows[0].reset_after, Duration::from_secs(60));
    assert_eq!(first.windows[1].reset_after, Duration::from_secs(3600));
    let later = consume(&b, &s, &w, T0 + 10_000).await;
    assert_eq!(
        (later.windows[0].remaining, later.windows[0].reset_after),
        (98, Duration::from_secs(60))
    );
    let peek = b
        .decide(&s, 1, &w, Mode::Peek, Some(T0 + 65_000))
        .await
        .unwrap();
    assert_eq!(
        peek.windows[0].remaining, 99,
        "the first burst admission has left the minute"
    );
    assert_eq!(peek.windows[0].reset_after, Duration::from_secs(5));
    let peek = b
        .decide(&s, 1, &w, Mode::Peek, Some(T0 + 71_000))
        .await
        .unwrap();
    assert_eq!(
        peek.windows[0].remaining, 100,
        "both burst admissions have left the minute"
    );
    assert_eq!(peek.windows[1].remaining, 998);
    assert_eq!(
        peek.windows[1].reset_after,
        Duration::from_millis(3_610_000 - 71_000)
    );
    assert_eq!(first.windows[0].name, "burst");
}

/// The local over-limit cache answers refusals without Redis until `retry_after`, never longer.
#[tokio::test]
async fn redis_refusals_are_cached_locally_until_retry_after_and_no_longer() {
    let Some(url) = stanna_testkit::redis_url(
        "redis_refusals_are_cached_locally_until_retry_after_and_no_longer",
    ) else {
        return;
    };
    let b = QuotaBackend::Redis(
        RedisBackend::connect_lazy(&RedisBackendConfig::new(url.clone())).unwrap(),
    );
    let (s, w) = (subject(), vec![window("burst", 2, Duration::from_secs(1))]);
    assert!(consume(&b, &s, &w, T0).await.allowed);
    assert!(consume(&b, &s, &w, T0).await.allowed);
    assert!(!consume(&b, &s, &w, T0 + 10).await.allowed);
    // Wipe the state in Redis: only the local cache can still refuse now.
    let mut redis = redis_connection(&url).await;
    let _: () = ::redis::cmd("DEL")
        .arg(format!("q2:{{{s}}}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let cached = consume(&b, &s, &w, T0 + 500).await;
    assert!(
        !cached.allowed,
        "refused from the local cache, without Redis"
    );
    assert_eq!(cached.retry_after, Some(Duration::from_millis(500)));
    assert!(
        consume(&b, &s, &w, T0 + 1000).await.allowed,
        "at retry_after the cache no longer refuses"
    );
}

/// State lives in one hash-tagged key per subject, with an expiry.
#[tokio::test]
async fn redis_state_is_one_hash_tagged_key_with_an_expiry() {
    let Some(url) = stanna_testkit::redis_url("redis_state_is_one_hash_tagged_key_with_an_expiry")
    else {
        return;
    };
    let b = QuotaBackend::Redis(
        RedisBackend::connect_lazy(&RedisBackendConfig::new(url.clone())).unwrap(),
    );
    let s = subject();
    for _ in 0..3 {
        b.decide(&s, 1, &product_windows(), Mode::Consume, None)
            .await
            .unwrap();
    }
    let ttl = pttl(&url, &s).await;
    assert!(
        ttl > 3_600_000 && ttl <= 7_200_000,
        "expires after twice the longest window, got {ttl} ms"
    );
    let mut redis = redis_connection(&url).await;
    let mut keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("*{s}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [format!("q2:{{{s}}}")],
        "both windows live in one key, hash-tagged by the subject"
    );
}

/// The remaining life of `subject`'s Redis state, in ms.
async fn pttl(url: &str, subject: &str) -> i64 {
    let mut redis = redis_connection(url).await;
    ::redis::cmd("PTTL")
        .arg(format!("q2:{{{subject}}}"))
        .query_async(&mut redis)
        .await
        .unwrap()
}

/// A window that grows must extend the state's life: 1000 per minute spent, then the window
/// becomes 1000 per hour, and the key must still be refused (and kept) for the hour.
/// The exact guarantee across Redis's expiry: once a window grows, the state lives as long as the
/// new window counts its admissions — also when the only decision since is a refusal (which
/// charges nothing). 3 admitted under 3 per 1 s (the key then expires 2 s later), the window grows
/// to 3 per 10 s and a Consume is refused; past the old expiry another quota process (no local
/// over-limit cache) must still refuse: the three admissions are inside the 10 s window.
#[tokio::test]
async fn a_refusal_after_a_window_grew_keeps_the_state_while_the_window_counts_it() {
    let Some(url) = stanna_testkit::redis_url(
        "a_refusal_after_a_window_grew_keeps_the_state_while_the_window_counts_it",
    ) else {
        return;
    };
    let backend = || {
        QuotaBackend::Redis(
            RedisBackend::connect_lazy(&RedisBackendConfig::new(url.clone())).unwrap(),
        )
    };
    let (b, s) = (backend(), subject());
    let short = [window("hourly", 3, Duration::from_secs(1))];
    for _ in 0..3 {
        let d = b.decide(&s, 1, &short, Mode::Consume, None).await.unwrap();
        assert!(d.allowed);
    }
    let long = [window("hourly", 3, Duration::from_secs(10))];
    let refused = b.decide(&s, 1, &long, Mode::Consume, None).await.unwrap();
    assert!(!refused.allowed, "three in the last 10 s");
    let ttl = pttl(&url, &s).await;
    assert!(
        ttl > 9_000,
        "the key must outlive the 10 s window, not the old 1 s one: PTTL {ttl} ms"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let elsewhere = backend();
    let later = elsewhere
        .decide(&s, 1, &long, Mode::Consume, None)
        .await
        .unwrap();
    assert!(
        !later.allowed,
        "past the old expiry, another quota process must still count the three admissions"
    );
    assert_eq!(later.windows[0].remaining, 0);
}

/// Two quota processes that disagree on a key's limit (the change-poll lag after an override, a
/// rolling deploy): a refusal under the smaller limit must not cut the larger one's record. 4
/// admitted under 5 per 10 s, refused under 2 per 10 s; back under 5, exactly one more fits.
#[tokio::test]
async fn a_refusal_under_a_smaller_limit_keeps_what_the_larger_one_counted() {
    let Some(url) = stanna_testkit::redis_url(
        "a_refusal_under_a_smaller_limit_keeps_what_the_larger_one_counted",
    ) else {
        return;
    };
    // A fresh backend per decision: no local over-limit cache answers for Redis.
    let s = subject();
    let decide = |limit: u32| {
        let (url, s) = (url.clone(), s.clone());
        async move {
            let b = QuotaBackend::Redis(
                RedisBackend::connect_lazy(&RedisBackendConfig::new(url)).unwrap(),
            );
            let w = [window("hourly", limit, Duration::from_secs(10))];
            b.decide(&s, 1, &w, Mode::Consume, None).await.unwrap()
        }
    };
    for _ in 0..4 {
        assert!(decide(5).await.allowed);
    }
    assert!(!decide(2).await.allowed, "4 admitted is over 2");
    assert!(decide(5).await.allowed, "the fifth of five");
    let sixth = decide(5).await;
    assert!(
        !sixth.allowed,
        "five admitted in 10 s: the refusal under 2 must not have dropped three of them"
    );
}

/// The Lua script against the Rust reference, decision by decision, on a random workload:
/// time jumps small and large (and now and then back), costs 1 to 3, peeks, and limits that change
/// under way. The script is called directly (the backend's local over-limit cache would answer
/// some refusals itself).
#[tokio::test]
async fn the_redis_script_decides_exactly_as_the_reference_log() {
    let Some(url) =
        stanna_testkit::redis_url("the_redis_script_decides_exactly_as_the_reference_log")
    else {
        return;
    };
    let mut redis = redis_connection(&url).await;
    let script = ::redis::Script::new(stanna_quota::REDIS_SCRIPT);
    let memory = QuotaBackend::Memory(MemoryBackend::new());
    let s = subject();
    let shapes = [
        vec![
            window("burst", 5, Duration::from_secs(1)),
            window("hourly", 12, Duration::from_secs(10)),
        ],
        vec![
            window("burst", 3, Duration::from_secs(2)),
            window("hourly", 12, Duration::from_secs(10)),
        ],
        vec![
            window("burst", 8, Duration::from_secs(1)),
            window("hourly", 20, Duration::from_secs(30)),
        ],
        // The first shape's limits with longer periods: a window that grows in time only, and
        // the longest window growing after a rebuild.
        vec![
            window("burst", 5, Duration::from_secs(3)),
            window("hourly", 12, Duration::from_secs(10)),
        ],
        vec![
            window("burst", 5, Duration::from_secs(1)),
            window("hourly", 12, Duration::from_secs(40)),
        ],
        vec![window("hourly", 12, Duration::from_secs(10))],
    ];
    // A small deterministic generator (xorshift), so a failure is reproducible.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut now = T0;
    let mut shape = 0;
    for step in 0..3000 {
        now += match next(10) {
            0 => next(60_000),
            1..=3 => 0,
            _ => next(700),
        };
        // Now and then the clock steps back (another process's clock, an NTP step).
        if next(40) == 0 {
            now -= next(1500);
        }
        if next(100) == 0 {
            shape = next(shapes.len() as u64) as usize;
        }
        let windows = &shapes[shape];
        let cost = 1 + next(3) as u32;
        let mode = if next(10) == 0 {
            Mode::Peek
        } else {
            Mode::Consume
        };
        let expected = memory
            .decide(&s, cost, windows, mode, Some(now))
            .await
            .unwrap();
        let mut call = script.key(format!("q2:{{{s}}}"));
        call.arg(now)
            .arg(stanna_quota::redis_decision_params(cost, mode, windows));
        let reply: Vec<i64> = call.invoke_async(&mut redis).await.unwrap();
        assert_eq!(
            reply,
            reference_reply(&expected),
            "step {step}: t=+{} ms cost {cost} {mode:?} shape {shape}: script vs reference",
            now - T0
        );
    }
}

/// The script and the reference once more, where the script's state can be lost and the
/// reference's cannot: windows grow (a longer period with the same limit — the script's fast
/// path — and a new shape — its slow path), refusals follow (they charge nothing), and real time
/// passes beyond the expiry the short windows gave the key. Every decision must still agree.
#[tokio::test]
async fn the_script_agrees_with_the_reference_after_growth_refusals_and_the_old_expiry() {
    let Some(url) = stanna_testkit::redis_url(
        "the_script_agrees_with_the_reference_after_growth_refusals_and_the_old_expiry",
    ) else {
        return;
    };
    let mut redis = redis_connection(&url).await;
    let script = ::redis::Script::new(stanna_quota::REDIS_SCRIPT);
    let short = vec![window("burst", 3, Duration::from_secs(1))];
    let longer = vec![window("burst", 3, Duration::from_secs(10))];
    let reshaped = vec![
        window("burst", 3, Duration::from_secs(10)),
        window("hourly", 6, Duration::from_secs(20)),
    ];
    for grown in [longer, reshaped] {
        let memory = QuotaBackend::Memory(MemoryBackend::new());
        let s = subject();
        let mut step = 0;
        let mut both = async |now: u64, windows: &[NamedWindow]| -> bool {
            step += 1;
            let expected = memory
                .decide(&s, 1, windows, Mode::Consume, Some(now))
                .await
                .unwrap();
            let mut call = script.key(format!("q2:{{{s}}}"));
            call.arg(now).arg(stanna_quota::redis_decision_params(
                1,
                Mode::Consume,
                windows,
            ));
            let reply: Vec<i64> = call.invoke_async(&mut redis).await.unwrap();
            assert_eq!(
                reply,
                reference_reply(&expected),
                "decision {step} at +{} ms",
                now - T0
            );
            expected.allowed
        };
        for i in 0..3 {
            assert!(both(T0 + i, &short).await);
        }
        assert!(
            !both(T0 + 500, &grown).await,
            "refused under the grown window"
        );
        assert!(!both(T0 + 900, &grown).await);
        // The short windows' expiry (2 s) passes in real time; the grown window still counts.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !both(T0 + 3_000, &grown).await,
            "still refused after the old expiry"
        );
        assert!(
            both(T0 + 10_000, &grown).await,
            "admitted once the first leaves"
        );
    }
}

/// A connection of the test's own to the Redis at `url`.
async fn redis_connection(url: &str) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// What the reference says for one decision, as the script replies it.
fn reference_reply(expected: &Decision) -> Vec<i64> {
    let mut want = vec![
        i64::from(expected.allowed),
        expected.retry_after.map_or(-1, |r| r.as_millis() as i64),
    ];
    for w in &expected.windows {
        want.push(i64::from(w.remaining));
        want.push(w.reset_after.as_millis() as i64);
    }
    want
}

/// Several decisions in one call, as the backend batches them: three subjects, one of them more
/// than once in the same call (each of its decisions must see the one before), with costs that
/// stage, flush and wrap the rings. Every call's reply must be the reference's, decision by
/// decision, in order.
#[tokio::test]
async fn a_batch_of_decisions_is_decided_in_order_exactly_as_the_reference() {
    let Some(url) = stanna_testkit::redis_url(
        "a_batch_of_decisions_is_decided_in_order_exactly_as_the_reference",
    ) else {
        return;
    };
    let mut redis = redis_connection(&url).await;
    let script = ::redis::Script::new(stanna_quota::REDIS_SCRIPT);
    let memory = QuotaBackend::Memory(MemoryBackend::new());
    let subjects = [subject(), subject(), subject()];
    let windows = vec![
        window("burst", 5, Duration::from_secs(1)),
        window("hourly", 40, Duration::from_secs(10)),
    ];
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut now = T0;
    for call_no in 0..300 {
        now += next(400);
        let size = 1 + next(stanna_quota::REDIS_MAX_BATCH as u64) as usize;
        let mut call = script.prepare_invoke();
        call.arg(now);
        let mut want = Vec::new();
        for _ in 0..size {
            // Subject 0 twice as often, so it comes more than once in most calls.
            let s = &subjects[(next(4) as usize).saturating_sub(1)];
            let cost = 1 + next(2) as u32;
            let mode = if next(8) == 0 {
                Mode::Peek
            } else {
                Mode::Consume
            };
            call.key(format!("q2:{{{s}}}"))
                .arg(stanna_quota::redis_decision_params(cost, mode, &windows));
            let expected = memory
                .decide(s, cost, &windows, mode, Some(now))
                .await
                .unwrap();
            want.extend(reference_reply(&expected));
        }
        let reply: Vec<i64> = call.invoke_async(&mut redis).await.unwrap();
        assert_eq!(
            reply,
            want,
            "call {call_no} of {size} decisions at +{} ms",
            now - T0
        );
    }
}

/// One Consume of cost 1 by the previous script, on the previous layout's key (`q:{subject}`),
/// the way a process not yet upgraded decides; whether it was admitted.
async fn consume_the_previous_way(
    redis: &mut ::redis::aio::MultiplexedConnection,
    subject: &str,
    windows: &[NamedWindow],
) -> bool {
    let previous = ::redis::Script::new(include_str!("fixtures/rolling_log_v1.lua"));
    let mut call = previous.key(format!("q:{{{subject}}}"));
    call.arg(1).arg("").arg("c").arg(windows.len());
    for w in windows {
        call.arg(w.limit.limit())
            .arg(w.limit.period().as_millis() as u64);
    }
    let reply: Vec<i64> = call.invoke_async(redis).await.unwrap();
    reply[0] == 1
}

/// An upgrade forgets nothing: a subject whose admissions the previous script counted under its
/// key (`q:{subject}`, the previous layout) keeps them when the new script first decides for it.
/// Four of five admitted the old way, then one more fits and the next is refused.
#[tokio::test]
async fn admissions_counted_by_the_previous_layout_are_kept_after_an_upgrade() {
    let Some(url) = stanna_testkit::redis_url(
        "admissions_counted_by_the_previous_layout_are_kept_after_an_upgrade",
    ) else {
        return;
    };
    let mut redis = redis_connection(&url).await;
    let s = subject();
    let windows = [
        window("burst", 5, Duration::from_secs(60)),
        window("hourly", 50, Duration::from_secs(3600)),
    ];
    for _ in 0..4 {
        assert!(
            consume_the_previous_way(&mut redis, &s, &windows).await,
            "the previous script admits"
        );
    }
    let b = QuotaBackend::Redis(RedisBackend::connect_lazy(&RedisBackendConfig::new(url)).unwrap());
    let fifth = b
        .decide(&s, 1, &windows, Mode::Consume, None)
        .await
        .unwrap();
    assert!(fifth.allowed);
    assert_eq!(
        fifth.windows[0].remaining, 0,
        "four carried over and this one"
    );
    assert_eq!(fifth.windows[1].remaining, 45);
    let sixth = b
        .decide(&s, 1, &windows, Mode::Consume, None)
        .await
        .unwrap();
    assert!(
        !sixth.allowed,
        "the burst window holds five, four of them counted before the upgrade"
    );
}

/// A refusal right after an upgrade must keep what the previous layout counted alive: three
/// admitted the old way under 3 per 1 s (that key expires 2 s later), then under 3 per 10 s the new
/// script refuses — and 2.5 s later, past the old expiry, another process must still refuse.
#[tokio::test]
async fn a_refusal_right_after_an_upgrade_keeps_the_previous_layouts_admissions() {
    let Some(url) = stanna_testkit::redis_url(
        "a_refusal_right_after_an_upgrade_keeps_the_previous_layouts_admissions",
    ) else {
        return;
    };
    let mut redis = redis_connection(&url).await;
    let s = subject();
    let short = [window("hourly", 3, Duration::from_secs(1))];
    for _ in 0..3 {
        assert!(
            consume_the_previous_way(&mut redis, &s, &short).await,
            "the previous script admits"
        );
    }
    let long = [window("hourly", 3, Duration::from_secs(10))];
    let fresh = || {
        QuotaBackend::Redis(
            RedisBackend::connect_lazy(&RedisBackendConfig::new(url.clone())).unwrap(),
        )
    };
    let refused = fresh()
        .decide(&s, 1, &long, Mode::Consume, None)
        .await
        .unwrap();
    assert!(
        !refused.allowed,
        "three in the last 10 s, counted before the upgrade"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = fresh()
        .decide(&s, 1, &long, Mode::Consume, None)
        .await
        .unwrap();
    assert!(
        !later.allowed,
        "past the previous key's old expiry the three admissions must still count"
    );
}

/// The whole behaviour suite once more, on a Redis Cluster of the test's own (three masters,
/// three replicas) reached through its seed list, the way `STANNA_REDIS_URL` names one: the
/// script runs where the subject's slot lives, and decides as on one server. One cluster serves
/// every case, in turn (each starts its own subjects).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_behaviour_suite_holds_on_a_redis_cluster() {
    let Some(cluster) =
        stanna_testkit::OwnRedisCluster::start("the_behaviour_suite_holds_on_a_redis_cluster")
    else {
        return;
    };
    let backend = RedisBackend::connect_lazy(&RedisBackendConfig::new(cluster.seeds())).unwrap();
    assert!(backend.is_cluster(), "a seed list means a cluster");
    let b = QuotaBackend::Redis(backend);
    assert_eq!(b.kind(), "redis-cluster");
    b.ping().await.expect("every master answers PING");
    hundred_are_admitted_then_the_101st_is_refused_with_retry_after(b.clone()).await;
    a_refused_call_charges_no_window(b.clone()).await;
    the_long_window_binds_after_the_burst_window_resets(b.clone()).await;
    an_abuser_never_gets_more_than_the_limit_in_any_rolling_span(b.clone()).await;
    two_full_bursts_61_seconds_apart_are_both_admitted(b.clone()).await;
    bursts_every_361_seconds_for_three_hours_are_never_refused(b.clone()).await;
    peek_never_charges(b.clone()).await;
    a_changed_limit_keeps_what_was_admitted(b.clone()).await;
    a_cost_above_the_limit_is_invalid(b.clone()).await;
    windows_report_remaining_and_reset(b.clone()).await;
    a_thousand_concurrent_consumes_admit_exactly_the_limit(b).await;
}

/// Each subject's state is one key on the master that owns its slot, and 300 subjects spread
/// over all three masters (a cluster shards by API key, as the hash tag intends); no key lands
/// anywhere else.
#[tokio::test]
async fn subjects_spread_over_every_master_of_a_redis_cluster() {
    let Some(cluster) = stanna_testkit::OwnRedisCluster::start(
        "subjects_spread_over_every_master_of_a_redis_cluster",
    ) else {
        return;
    };
    let b = QuotaBackend::Redis(
        RedisBackend::connect_lazy(&RedisBackendConfig::new(cluster.seeds())).unwrap(),
    );
    let subjects: Vec<String> = (0..300).map(|_| subject()).collect();
    for s in &subjects {
        assert!(
            b.decide(s, 1, &product_windows(), Mode::Consume, None)
                .await
                .unwrap()
                .allowed
        );
    }
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "three masters");
    let mut expected = std::collections::BTreeMap::<u16, u64>::new();
    for s in &subjects {
        *expected
            .entry(cluster.master_of(&format!("q2:{{{s}}}")))
            .or_default() += 1;
    }
    for &master in &masters {
        let held = cluster.keys_on(master);
        assert!(
            held >= 30,
            "master {master} holds {held} of 300 subjects: not spread"
        );
        assert_eq!(
            Some(&held),
            expected.get(&master),
            "master {master} holds exactly the subjects whose slots it owns"
        );
    }
}

/// One node of a cluster given as if it were a server answers most decisions with `MOVED`: the
/// failure says what to write instead, naming the setting.
#[tokio::test]
async fn one_cluster_node_named_as_a_server_fails_saying_what_to_write() {
    let Some(cluster) = stanna_testkit::OwnRedisCluster::start(
        "one_cluster_node_named_as_a_server_fails_saying_what_to_write",
    ) else {
        return;
    };
    let node = cluster.seeds().split(',').next().unwrap().to_owned();
    let b =
        QuotaBackend::Redis(RedisBackend::connect_lazy(&RedisBackendConfig::new(node)).unwrap());
    // Of a few subjects, about two in three live on another master.
    let mut hints = 0;
    for _ in 0..12 {
        if let Err(QuotaError::Unavailable(why)) = b
            .decide(&subject(), 1, &product_windows(), Mode::Consume, None)
            .await
        {
            assert!(
                why.to_string()
                    .contains("STANNA_REDIS_URL names one node of a Redis Cluster")
                    && why.to_string().contains("comma-separated"),
                "{why}"
            );
            hints += 1;
        }
    }
    assert!(hints > 0, "no subject was on another node");
}
