//! Byte budgets for file data held in the host's memory: upload data (write
//! coalescing buffers, in-order parts) and read-ahead chunks. Each byte is
//! taken from three bounds at once: the SSH connection's, its tenant's share
//! and the whole server's, and given back to all three. Without them, 10
//! channels × 256 handles × up to 8 MiB chunks could pin gigabytes for one
//! login, and a thousand logins each within their own budget could still
//! pin far more than the machine has.
//!
//! Running short is a slower path, never an error: past the upload budget a
//! WRITE is not held at all, it goes to the plugin as its own chunk (an
//! upload to a plugin without random writes spools instead); past the
//! read-ahead budget a READ goes straight to the plugin.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::shares::{Shortage, TenantShare, TenantShares};
use super::spool::{SpoolArea, TenantSpool};

/// One connection's budget of one kind of data, within its tenant's share.
#[derive(Clone)]
pub struct ByteBudget(Arc<Budget>);

struct Budget {
    /// What the connection may hold.
    connection_limit: u64,
    connection_held: AtomicU64,
    /// Takers waiting for room (`take_within`): bytes given back go to
    /// them, not to a `try_take` that comes by meanwhile.
    waiting: AtomicUsize,
    /// The tenant's share and the server's total, counted together.
    share: TenantShare,
}

/// Bytes taken from a [`ByteBudget`], given back to the connection, the
/// tenant and the server when dropped.
pub struct BudgetPermit {
    budget: ByteBudget,
    bytes: u64,
}

impl ByteBudget {
    pub fn new(connection_limit: u64, share: TenantShare) -> Self {
        Self(Arc::new(Budget { connection_limit, connection_held: AtomicU64::new(0), waiting: AtomicUsize::new(0), share }))
    }

    /// Whether `n` bytes are free now.
    pub fn has(&self, n: usize) -> bool {
        let free_here = self.0.connection_limit.saturating_sub(self.0.connection_held.load(Ordering::SeqCst));
        free_here >= n as u64 && self.0.share.free() >= n as u64
    }

    /// Takes `n` bytes at once if the connection, the tenant and the server
    /// all have them free, and none of this connection's takers is waiting.
    pub fn try_take(&self, n: usize) -> Option<BudgetPermit> {
        if n > 0 && self.0.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        self.take_now(n)
    }

    fn take_now(&self, n: usize) -> Option<BudgetPermit> {
        self.take_or_say_why(n).ok()
    }

    /// Takes `n` bytes, or says what was short: the connection's own bound
    /// counts as its tenant's (its give-backs are the tenant's).
    fn take_or_say_why(&self, n: usize) -> Result<BudgetPermit, Shortage> {
        let n = n as u64;
        let limit = self.0.connection_limit;
        self.0
            .connection_held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| held.checked_add(n).filter(|&h| h <= limit))
            .map_err(|_| Shortage::Tenant)?;
        // Refused by the tenant or the server: the connection's part goes
        // back (a take racing with this one may have been refused meanwhile:
        // a slower path for it, never an error).
        if let Err(shortage) = self.0.share.take(n) {
            self.0.connection_held.fetch_sub(n, Ordering::SeqCst);
            return Err(shortage);
        }
        Ok(BudgetPermit { budget: self.clone(), bytes: n })
    }

    /// Takes `n` bytes, waiting up to `limit` for them to be given back
    /// (by this connection, its tenant or anyone on the server). `None`
    /// once the time is up, or at once if `n` can never fit.
    pub async fn take_within(&self, n: usize, limit: std::time::Duration) -> Option<BudgetPermit> {
        if n as u64 > self.0.connection_limit.min(self.0.share.limit()) {
            return None;
        }
        if let Some(permit) = self.try_take(n) {
            return Some(permit);
        }
        let deadline = tokio::time::Instant::now() + limit;
        let _waiting = Waiting::count(&self.0.waiting);
        let mut shortage = Shortage::Tenant;
        loop {
            let freed = self.0.share.freed(shortage);
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.take_or_say_why(n) {
                Ok(permit) => return Some(permit),
                // Waiting on the wrong kind of give-back: look again at once.
                Err(now) if now != shortage => shortage = now,
                Err(_) => tokio::time::timeout_at(deadline, freed).await.ok()?,
            }
        }
    }

    /// Bytes the connection holds now.
    pub fn held(&self) -> u64 {
        self.0.connection_held.load(Ordering::SeqCst)
    }

    fn give_back(&self, n: u64) {
        // The connection's part first: the share's give-back wakes those
        // waiting for room, and they must find it here too.
        self.0.connection_held.fetch_sub(n, Ordering::SeqCst);
        self.0.share.give_back(n);
    }
}

/// One taker counted as waiting, for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::SeqCst);
        Self(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl BudgetPermit {
    pub fn bytes(&self) -> usize {
        self.bytes as usize
    }

    /// Joins `other`, taken from the same budget, to this permit.
    pub fn merge(&mut self, mut other: BudgetPermit) {
        assert!(Arc::ptr_eq(&self.budget.0, &other.budget.0), "permits of different budgets merged");
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Splits `n` bytes off into a permit of their own; `None` if this one
    /// holds fewer.
    pub fn split(&mut self, n: usize) -> Option<BudgetPermit> {
        let n = n as u64;
        self.bytes = self.bytes.checked_sub(n)?;
        Some(BudgetPermit { budget: self.budget.clone(), bytes: n })
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give_back(self.bytes);
        }
    }
}

/// One kind of data across the server: what one connection may hold, and
/// the server's total with each tenant's share of it.
pub struct ServerBudget {
    per_connection: u64,
    shares: Arc<TenantShares>,
}

impl ServerBudget {
    pub fn new(per_connection: u64, total: u64, per_tenant: u64) -> Self {
        Self { per_connection, shares: TenantShares::new(total, per_tenant) }
    }

    /// A new connection's budget, within `tenant`'s share.
    pub fn for_connection(&self, tenant: &str) -> ByteBudget {
        ByteBudget::new(self.per_connection, self.shares.share(tenant))
    }

    /// The server's and the tenants' holdings.
    pub fn shares(&self) -> &TenantShares {
        &self.shares
    }
}

/// What every connection draws on: upload buffers, read-ahead, spool disk.
pub struct ServerBudgets {
    pub upload: ServerBudget,
    pub read_ahead: ServerBudget,
    pub spool: Arc<SpoolArea>,
    /// Open files, counted for the server and each tenant (see `OpenFile`).
    pub open_files: Arc<TenantShares>,
}

impl ServerBudgets {
    /// The budgets of a new connection of `tenant`.
    pub fn for_connection(&self, tenant: &str) -> FileBudgets {
        FileBudgets {
            upload: self.upload.for_connection(tenant),
            read_ahead: self.read_ahead.for_connection(tenant),
            spool: self.spool.for_tenant(tenant),
            open_files: self.open_files.share(tenant),
        }
    }
}

/// The budgets of one connection, shared by its SFTP sessions.
#[derive(Clone)]
pub struct FileBudgets {
    pub upload: ByteBudget,
    pub read_ahead: ByteBudget,
    /// Its tenant's part of the spool area (disk, not memory: no
    /// connection bound, each file has its own).
    pub spool: TenantSpool,
    /// Its tenant's count of open files.
    pub open_files: TenantShare,
}

#[cfg(test)]
impl ByteBudget {
    /// A connection's budget of `limit` bytes, alone on a server that
    /// bounds nothing else.
    pub fn alone(limit: u64) -> Self {
        Self::new(limit, TenantShares::new(u64::MAX, u64::MAX).share("tenant"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_is_taken_from_the_connection_the_tenant_and_the_server_together() {
        // 100 per connection, 150 per tenant, 250 for the server.
        let server = ServerBudget::new(100, 250, 150);
        let (a1, a2, b) = (server.for_connection("a"), server.for_connection("a"), server.for_connection("b"));
        let first = a1.try_take(100).expect("within all three");
        assert!(a1.try_take(1).is_none(), "the connection's own bound");
        let second = a2.try_take(50).expect("the tenant's share has 50 left");
        assert!(!a2.has(1) && a2.try_take(1).is_none(), "a's share (150) is spent, a2's own budget is not");
        assert_eq!((server.shares().held_by("a"), a2.held()), (150, 50), "a refused take holds nothing");
        // b is untouched by a's share being spent, up to what the server has left.
        let theirs = b.try_take(100).expect("b's share is whole");
        assert_eq!(server.shares().held(), 250);
        let c = server.for_connection("c");
        assert!(c.try_take(1).is_none(), "the server's total holds over the tenants");
        drop(theirs);
        assert!(c.try_take(100).is_some(), "what b gave back, c may take");
        drop((first, second));
        assert_eq!((server.shares().held(), server.shares().tenants()), (0, 0));
        assert_eq!((a1.held(), a2.held(), b.held()), (0, 0, 0));
    }

    #[test]
    fn split_and_merged_permits_give_back_exactly_what_they_hold() {
        let server = ServerBudget::new(1000, 1000, 1000);
        let budget = server.for_connection("a");
        let mut held = budget.try_take(300).unwrap();
        held.merge(budget.try_take(200).unwrap());
        assert_eq!(held.bytes(), 500);
        let part = held.split(120).expect("holds 500");
        assert!(held.split(381).is_none(), "holds 380 now");
        assert_eq!((held.bytes(), part.bytes()), (380, 120));
        drop(part);
        assert_eq!((budget.held(), server.shares().held_by("a")), (380, 380));
        let empty = held.split(380).unwrap();
        assert_eq!(held.bytes(), 0);
        drop(held);
        assert_eq!(budget.held(), 380, "an empty permit gives back nothing");
        drop(empty);
        assert_eq!((budget.held(), server.shares().held(), server.shares().tenants()), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_take_waits_briefly_for_bytes_given_back_anywhere_on_the_server() {
        use std::time::Duration;
        let server = ServerBudget::new(100, 100, 100);
        let (a, b) = (server.for_connection("a"), server.for_connection("b"));
        let held_by_b = b.try_take(80).unwrap();
        let started = std::time::Instant::now();
        assert!(a.take_within(30, Duration::from_millis(100)).await.is_none(), "nothing is given back");
        assert!(started.elapsed() >= Duration::from_millis(100));
        let give_back = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(held_by_b);
        });
        let waited = a.take_within(30, Duration::from_secs(10)).await.expect("b's bytes come back");
        assert!(started.elapsed() < Duration::from_secs(5), "woken by the give-back, not the limit");
        give_back.await.unwrap();
        assert_eq!(waited.bytes(), 30);
        // A waiting taker gets what is given back before one that comes by.
        let held = a.try_take(70).unwrap();
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.take_within(50, Duration::from_secs(10)).await.map(|p| p.bytes()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(a.try_take(1).is_none(), "a taker is waiting: it goes first");
        drop((held, waited));
        assert_eq!(waiter.await.unwrap(), Some(50));
        assert!(a.try_take(100).is_some(), "nobody waits any more");
        let never = std::time::Instant::now();
        assert!(a.take_within(101, Duration::from_secs(10)).await.is_none(), "past every bound: no wait");
        assert!(never.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_connection_budget_of_nothing_takes_nothing() {
        let server = ServerBudget::new(0, 1000, 1000);
        let budget = server.for_connection("a");
        assert!(budget.try_take(1).is_none());
        assert_eq!(server.shares().tenants(), 0);
    }

    // ---- review tests ----

    struct Counted<F> {
        inner: std::pin::Pin<Box<F>>,
        polls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl<F: std::future::Future> std::future::Future for Counted<F> {
        type Output = F::Output;
        fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
            let this = self.get_mut();
            this.polls.fetch_add(1, Ordering::Relaxed);
            this.inner.as_mut().poll(cx)
        }
    }

    /// Waiters of a tenant at its own share cannot be served by bytes
    /// another tenant gives back, yet every give-back anywhere on the server
    /// wakes all of them (one `Notify` per resource, `notify_waiters`): with
    /// a thousand waiting, each give-back costs a thousand polls, each
    /// taking the table's lock.
    #[tokio::test]
    async fn a_full_tenants_waiters_are_not_woken_by_another_tenants_give_backs() {
        use std::time::Duration;
        let server = ServerBudget::new(1 << 30, 1 << 20, 1000);
        let a = server.for_connection("a");
        let _full = a.try_take(1000).unwrap();
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut waiters = Vec::new();
        for _ in 0..1000 {
            let a = server.for_connection("a");
            let polls = polls.clone();
            waiters.push(tokio::spawn(Counted {
                inner: Box::pin(async move { a.take_within(10, Duration::from_secs(30)).await.is_some() }),
                polls,
            }));
        }
        tokio::task::yield_now().await;
        let before = polls.load(Ordering::Relaxed);
        let b = server.for_connection("b");
        for _ in 0..100 {
            drop(b.try_take(10).unwrap());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let woken = polls.load(Ordering::Relaxed) - before;
        for w in waiters {
            w.abort();
        }
        assert!(woken < 1000, "100 give-backs by tenant b polled tenant a's waiters {woken} times");
    }
}
