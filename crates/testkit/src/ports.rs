//! Loopback ports for servers a test starts later (often in another process).

use rand::RngExt;

/// A loopback port nobody listens on, for a server the test starts later (often another process).
///
/// A port found by binding port 0 and letting go is not safe: the kernel may hand the same port
/// to the next port-0 bind — a second call here, a child's metrics listener, any outgoing
/// connection — before the server binds it (CI saw two services given one port). So the port is
/// drawn from below the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`),
/// where nothing is assigned automatically, is checked free by binding it, and is never handed
/// out twice by this process (another process may draw the same port; the bind check and the
/// width of the range make that unlikely, and a clash fails the start loudly). Where the
/// ephemeral range leaves no room, the kernel's pick is used, with a warning.
///
/// # Panics
/// If no free port is found in 1000 tries (a broken test machine).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let range = reserved_range();
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = match &range {
            Some(range) => rng.random_range(range.clone()),
            // No room outside the ephemeral range: fall back to the kernel's pick.
            None => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!(
                        "WARNING free_port: the kernel's ephemeral port range leaves no room; \
                         ports come from it, and a port-0 bind elsewhere may take one first"
                    );
                });
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_or(0, |a| a.port())
            }
        };
        if port != 0
            && !given.contains(&port)
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port found");
}

/// Ports the kernel never assigns on its own: between 10000 and the start of the ephemeral
/// range, or above its end; `None` when neither leaves 1000 ports.
fn reserved_range() -> Option<std::ops::Range<u16>> {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .unwrap_or((32768, 60999));
    if low >= 11_000 {
        Some(10_000..low)
    } else if high <= 64_000 {
        Some(high + 1..65_535)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{free_port, reserved_range};

    #[test]
    fn free_ports_are_never_repeated_and_never_ephemeral() {
        let ports: Vec<u16> = (0..300).map(|_| free_port()).collect();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        if let Some(range) = reserved_range() {
            assert!(ports.iter().all(|p| range.contains(p)), "{ports:?}");
            // Meanwhile the kernel's own picks land elsewhere.
            let picked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            assert!(!range.contains(&picked.local_addr().unwrap().port()));
        }
    }
}
