//! The byte budget of one instance: what file content and the tree may hold.
//! Every reservation is a [`Charge`] that is checked against the limit
//! *before* the memory is allocated and released when it is dropped, so the
//! count follows what is really held (uploads in progress, versions pinned by
//! readers, spare capacity) and can never drift.

use std::cell::Cell;
use std::rc::Rc;

use wasftp_sdk::{Error, Result};

#[derive(Debug)]
struct State {
    limit: Cell<u64>,
    held: Cell<u64>,
}

/// Shared by every charge made against it (one per instance).
#[derive(Debug, Clone)]
pub struct Budget(Rc<State>);

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget(Rc::new(State {
            limit: Cell::new(limit),
            held: Cell::new(0),
        }))
    }

    pub fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    pub fn limit(&self) -> u64 {
        self.0.limit.get()
    }

    /// A lower limit refuses new charges; what is held stays held.
    pub fn set_limit(&self, limit: u64) {
        self.0.limit.set(limit);
    }

    pub fn held(&self) -> u64 {
        self.0.held.get()
    }

    pub fn available(&self) -> u64 {
        self.limit().saturating_sub(self.held())
    }

    /// Reserves `bytes`, or `no-space` when they do not fit.
    pub fn charge(&self, bytes: u64) -> Result<Charge> {
        let mut charge = self.nothing();
        charge.resize(bytes)?;
        Ok(charge)
    }

    /// A reservation of zero bytes, to grow later.
    pub fn nothing(&self) -> Charge {
        Charge {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// Bytes reserved from a [`Budget`] until dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Budget,
    bytes: u64,
}

impl Charge {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Changes the reservation to `bytes`. Shrinking always succeeds; growing
    /// past the limit is `no-space` and leaves the reservation as it was.
    pub fn resize(&mut self, bytes: u64) -> Result<()> {
        let state = &self.budget.0;
        let others = state.held.get() - self.bytes;
        let total = others.checked_add(bytes).ok_or(Error::NoSpace)?;
        if bytes > self.bytes && total > state.limit.get() {
            return Err(Error::NoSpace);
        }
        state.held.set(total);
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let held = &self.budget.0.held;
        held.set(held.get() - self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_refused_past_the_limit_and_released_on_drop() {
        let budget = Budget::new(100);
        let a = budget.charge(60).unwrap();
        assert_eq!(budget.charge(41).unwrap_err(), Error::NoSpace);
        let mut b = budget.charge(40).unwrap();
        assert_eq!((budget.held(), budget.available()), (100, 0));
        drop(a);
        assert_eq!(budget.held(), 40);
        b.resize(100).unwrap();
        assert_eq!(b.resize(101), Err(Error::NoSpace));
        assert_eq!(b.bytes(), 100, "a refused growth keeps the old reservation");
        b.resize(10).unwrap();
        assert_eq!(budget.held(), 10);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_lower_limit_refuses_growth_but_keeps_what_is_held() {
        let budget = Budget::new(100);
        let mut a = budget.charge(80).unwrap();
        budget.set_limit(50);
        assert_eq!(budget.available(), 0);
        assert_eq!(a.resize(81), Err(Error::NoSpace));
        a.resize(70).unwrap();
        assert_eq!(budget.held(), 70);
    }

    #[test]
    fn unlimited_never_overflows() {
        let budget = Budget::unlimited();
        let _a = budget.charge(u64::MAX - 1).unwrap();
        assert_eq!(budget.charge(2).unwrap_err(), Error::NoSpace);
    }
}
