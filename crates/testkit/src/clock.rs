//! Clocks a test controls, given to services as their source of "now" (`stanna_keys::Clock`).

/// A clock a test moves by hand: `as_clock()` is what services take as their source of "now"
/// (e.g. `stanna_auth_check::Clock`), so expiry and windows are tested without sleeping.
#[derive(Clone)]
pub struct ManualClock(std::sync::Arc<std::sync::Mutex<std::time::SystemTime>>);

impl ManualClock {
    /// A clock reading the real time now, until moved.
    pub fn new() -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(
            std::time::SystemTime::now(),
        )))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }

    /// The clock as a shareable function.
    pub fn as_clock(&self) -> std::sync::Arc<dyn Fn() -> std::time::SystemTime + Send + Sync> {
        let inner = self.0.clone();
        std::sync::Arc::new(move || *inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A clock that runs with the real one, shifted by what a test adds: time moves on by itself (so
/// keys created one after the other are ordered) and jumps forward on [`ShiftedClock::advance`]
/// (so expiry is tested without sleeping).
#[derive(Clone, Default)]
pub struct ShiftedClock(std::sync::Arc<std::sync::Mutex<std::time::Duration>>);

impl ShiftedClock {
    /// A clock reading the real time until moved.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }

    /// The clock as a shareable function.
    pub fn as_clock(&self) -> std::sync::Arc<dyn Fn() -> std::time::SystemTime + Send + Sync> {
        let shift = self.0.clone();
        std::sync::Arc::new(move || {
            std::time::SystemTime::now() + *shift.lock().unwrap_or_else(|p| p.into_inner())
        })
    }
}
