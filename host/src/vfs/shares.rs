//! Bytes of one resource the whole server shares (spool disk, upload
//! buffers, read-ahead), bounded for the server and for each tenant: a
//! tenant past its share is refused while the others still take theirs.
//!
//! One table per resource, keyed by tenant; a tenant's entry exists only
//! while it holds something, so the table is as large as the tenants using
//! the resource right now. Both bounds are checked and charged under one
//! lock (held for a few instructions, never across an await), so a take is
//! all or nothing and a give-back restores both exactly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The bytes the server and each of its tenants hold of one resource.
pub struct TenantShares {
    /// What the whole server may hold.
    total: u64,
    /// What one tenant may hold.
    per_tenant: u64,
    held: Mutex<Held>,
    /// Woken when bytes are given back, for takers short of the server's
    /// total (one at a time: any give-back may serve them).
    freed: tokio::sync::Notify,
    /// Per tenant, woken when that tenant gives bytes back, for its takers
    /// short of its own share: another tenant's give-backs cannot serve
    /// them and must not wake them.
    tenant_freed: Mutex<HashMap<Arc<str>, std::sync::Weak<tokio::sync::Notify>>>,
}

#[derive(Default)]
struct Held {
    all: u64,
    /// Only tenants holding more than nothing.
    by_tenant: HashMap<Arc<str>, u64>,
}

/// Which bound a take ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// The tenant holds its whole share.
    Tenant,
    /// The server holds its whole total (other tenants hold the rest).
    Server,
}

impl TenantShares {
    pub fn new(total: u64, per_tenant: u64) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_tenant: per_tenant.min(total),
            held: Mutex::default(),
            freed: tokio::sync::Notify::new(),
            tenant_freed: Mutex::default(),
        })
    }

    /// One tenant's view of the table.
    pub fn share(self: &Arc<Self>, tenant: &str) -> TenantShare {
        let mut by_tenant = self.tenant_freed.lock().expect("tenant shares lock");
        let freed = match by_tenant.get(tenant).and_then(std::sync::Weak::upgrade) {
            Some(freed) => freed,
            None => {
                by_tenant.retain(|_, freed| freed.strong_count() > 0);
                let freed = Arc::new(tokio::sync::Notify::new());
                by_tenant.insert(tenant.into(), Arc::downgrade(&freed));
                freed
            }
        };
        TenantShare { shares: self.clone(), tenant: tenant.into(), freed }
    }

    /// What the whole server may hold.
    pub fn limit_total(&self) -> u64 {
        self.total
    }

    /// What one tenant may hold.
    pub fn per_tenant(&self) -> u64 {
        self.per_tenant
    }

    /// What the whole server holds now.
    pub fn held(&self) -> u64 {
        self.lock().all
    }

    /// What `tenant` holds now.
    pub fn held_by(&self, tenant: &str) -> u64 {
        self.lock().by_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// Tenants holding anything now (the table's entries).
    pub fn tenants(&self) -> usize {
        self.lock().by_tenant.len()
    }

    fn take(&self, tenant: &Arc<str>, bytes: u64) -> Result<(), Shortage> {
        if bytes == 0 {
            return Ok(());
        }
        let mut held = self.lock();
        let mine = held.by_tenant.get(&**tenant).copied().unwrap_or(0);
        // A share as large as the total is no share of its own: then the
        // server is what is full.
        if self.per_tenant < self.total && mine.checked_add(bytes).is_none_or(|n| n > self.per_tenant) {
            return Err(Shortage::Tenant);
        }
        if held.all.checked_add(bytes).is_none_or(|n| n > self.total) {
            return Err(Shortage::Server);
        }
        held.all += bytes;
        *held.by_tenant.entry(tenant.clone()).or_default() += bytes;
        Ok(())
    }

    fn give_back(&self, tenant: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut held = self.lock();
        let Some(mine) = held.by_tenant.get_mut(tenant) else {
            debug_assert!(false, "tenant {tenant} gives back {bytes} bytes it does not hold");
            return;
        };
        debug_assert!(*mine >= bytes, "tenant {tenant} gives back {bytes} bytes, holds {mine}");
        let given = bytes.min(*mine);
        *mine -= given;
        if *mine == 0 {
            held.by_tenant.remove(tenant);
        }
        held.all -= given;
    }

    /// What `tenant` could take now: the least of what is left of its share
    /// and of the server's total.
    fn free_for(&self, tenant: &str) -> u64 {
        let held = self.lock();
        let mine = held.by_tenant.get(tenant).copied().unwrap_or(0);
        (self.per_tenant - mine).min(self.total - held.all)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().expect("tenant shares lock")
    }
}

/// One tenant's share of a resource: what its connections take and give back.
#[derive(Clone)]
pub struct TenantShare {
    shares: Arc<TenantShares>,
    tenant: Arc<str>,
    /// The tenant's give-backs (see `TenantShares::tenant_freed`).
    freed: Arc<tokio::sync::Notify>,
}

impl TenantShare {
    /// Takes `bytes` from the tenant's share and the server's total
    /// together, or nothing.
    pub fn take(&self, bytes: u64) -> Result<(), Shortage> {
        self.shares.take(&self.tenant, bytes)
    }

    /// Gives back `bytes` taken before, waking who may use them: this
    /// tenant's waiters, and one waiter short of the server's total.
    pub fn give_back(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.shares.give_back(&self.tenant, bytes);
        self.freed.notify_waiters();
        self.shares.freed.notify_one();
    }

    /// What could be taken now.
    pub fn free(&self) -> u64 {
        self.shares.free_for(&self.tenant)
    }

    /// Resolves once bytes that may end `shortage` are given back: by this
    /// tenant for its own share, by anyone for the server's total (enable
    /// it before a take that may fail, so no give-back is missed).
    pub fn freed(&self, shortage: Shortage) -> tokio::sync::futures::Notified<'_> {
        match shortage {
            Shortage::Tenant => self.freed.notified(),
            Shortage::Server => self.shares.freed.notified(),
        }
    }

    /// The most this tenant may hold.
    pub fn limit(&self) -> u64 {
        self.shares.per_tenant
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_past_its_share_leaves_the_others_theirs() {
        let shares = TenantShares::new(100, 40);
        let (a, b) = (shares.share("a"), shares.share("b"));
        a.take(30).unwrap();
        assert_eq!(a.take(11), Err(Shortage::Tenant), "30 + 11 is past a's share of 40");
        a.take(10).unwrap();
        assert_eq!(a.free(), 0);
        assert_eq!(b.free(), 40, "b's share is untouched");
        b.take(40).unwrap();
        assert_eq!((shares.held_by("a"), shares.held_by("b"), shares.held()), (40, 40, 80));
        // The server's total caps the tenants together: c is within its
        // share but only 20 are left.
        let c = shares.share("c");
        assert_eq!(c.free(), 20);
        assert_eq!(c.take(21), Err(Shortage::Server));
        assert_eq!(shares.held_by("c"), 0, "a refused take holds nothing");
        c.take(20).unwrap();
        assert_eq!(shares.held(), 100);
        assert_eq!(shares.share("d").take(1), Err(Shortage::Server));
    }

    #[test]
    fn what_is_given_back_is_free_again_and_an_idle_tenant_leaves_the_table() {
        let shares = TenantShares::new(100, 40);
        let a = shares.share("a");
        a.take(25).unwrap();
        shares.share("b").take(5).unwrap();
        assert_eq!(shares.tenants(), 2);
        a.give_back(20);
        assert_eq!((shares.held_by("a"), shares.held()), (5, 10));
        a.give_back(5);
        assert_eq!(shares.tenants(), 1, "a holds nothing: its entry is gone");
        assert_eq!(a.free(), 40);
        assert_eq!(a.take(0), Ok(()));
        assert_eq!(shares.tenants(), 1, "taking nothing makes no entry");
        shares.share("b").give_back(5);
        assert_eq!((shares.held(), shares.tenants()), (0, 0));
    }

    #[test]
    fn a_share_as_large_as_the_total_is_the_servers_bound() {
        let shares = TenantShares::new(10, 40);
        assert_eq!(shares.per_tenant(), 10);
        assert_eq!(shares.share("a").take(11), Err(Shortage::Server));
        shares.share("a").take(10).unwrap();
        assert_eq!(shares.share("a").take(1), Err(Shortage::Server));
    }
}
