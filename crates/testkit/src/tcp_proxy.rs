//! A TCP proxy the test owns, between a service and a shared server (PostgreSQL, Redis), so a
//! test can make that server "go away" without touching it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// [`TcpProxy::cut`] drops every connection and refuses new ones; [`TcpProxy::restore`] lets
/// them through again; [`TcpProxy::retarget`] sends new connections elsewhere (a load balancer
/// in front of several servers).
pub struct TcpProxy {
    addr: SocketAddr,
    target: Arc<std::sync::Mutex<SocketAddr>>,
    open: Arc<AtomicBool>,
    /// Connections being forwarded right now.
    live: Arc<AtomicUsize>,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

/// Counts a forwarded connection while it lives.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `target`.
    ///
    /// # Panics
    /// If it cannot bind a port.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let open = Arc::new(AtomicBool::new(true));
        let live = Arc::new(AtomicUsize::new(0));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let target = Arc::new(std::sync::Mutex::new(target));
        let (accepting, counting, targets) = (open.clone(), live.clone(), target.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !accepting.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                counting.fetch_add(1, Ordering::SeqCst);
                let live = Live(counting.clone());
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                let target = *targets.lock().unwrap_or_else(|p| p.into_inner());
                tokio::spawn(async move {
                    let _live = live;
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {},
                        _ = cuts.changed() => {},
                    }
                });
            }
        });
        Self {
            addr,
            target,
            open,
            live,
            cut,
            task,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones; returns once every connection is closed.
    ///
    /// # Panics
    /// If connections are still open after 10 s.
    pub async fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.live.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "the proxy's connections did not close"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Drops every open connection and forwards new ones to `target` from now on.
    ///
    /// # Panics
    /// As [`TcpProxy::cut`].
    pub async fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = target;
        self.cut().await;
        self.restore();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
