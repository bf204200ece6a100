//! File bytes whose memory is charged to the [`Budget`]. Every growth is
//! checked against the budget and then allocated fallibly (`try_reserve`), so
//! a size that does not fit is `no-space`, never an allocation failure that
//! aborts (a trap would drop the tenant's whole instance). There is
//! deliberately no `Clone`: copies go through [`Blob::copy_resized`], which
//! can fail.

use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use wasftp_sdk::{Error, Result};

use crate::budget::{Budget, Charge};

#[derive(Debug)]
pub struct Blob {
    bytes: Vec<u8>,
    /// Always the capacity of `bytes`: spare capacity is memory too.
    charge: Charge,
}

/// A size the plugin could never address is `no-space` too.
fn to_usize(len: u64) -> Result<usize> {
    usize::try_from(len).map_err(|_| Error::NoSpace)
}

impl Blob {
    pub fn new(budget: &Budget) -> Self {
        Blob {
            bytes: Vec::new(),
            charge: budget.nothing(),
        }
    }

    /// A copy of `src` cut or zero-extended to `len` bytes, in one exact
    /// allocation.
    pub fn copy_resized(budget: &Budget, src: &[u8], len: u64) -> Result<Self> {
        let mut blob = Blob::new(budget);
        let len = to_usize(len)?;
        blob.reserve_exact(len)?;
        blob.bytes.extend_from_slice(&src[..src.len().min(len)]);
        blob.bytes.resize(len, 0);
        Ok(blob)
    }

    pub fn budget(&self) -> &Budget {
        self.charge.budget()
    }

    /// Bytes charged for this blob (its capacity).
    pub fn charged(&self) -> u64 {
        self.charge.bytes()
    }

    /// Zero-extends or truncates to exactly `len` bytes; a truncation gives
    /// the spare memory back.
    pub fn set_len(&mut self, len: u64) -> Result<()> {
        let len = to_usize(len)?;
        if len > self.bytes.len() {
            self.reserve_exact(len)?;
            self.bytes.resize(len, 0);
        } else {
            self.bytes.truncate(len);
            self.shrink_to_fit();
        }
        Ok(())
    }

    /// Writes `data` at `offset`, zero-filling any hole before it.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(Error::NoSpace)?;
        let end = to_usize(end)?;
        if end > self.bytes.len() {
            self.reserve_amortised(end)?;
            self.bytes.resize(end, 0);
        }
        self.bytes[end - data.len()..end].copy_from_slice(data);
        Ok(())
    }

    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        self.write_at(self.bytes.len() as u64, data)
    }

    /// Gives spare capacity back. Shrinking reallocates in place with
    /// wasi-libc's dlmalloc (no mmap), so it needs no new memory.
    pub fn shrink_to_fit(&mut self) {
        if self.bytes.capacity() > self.bytes.len() {
            self.bytes.shrink_to_fit();
            self.release_spare_charge();
        }
    }

    /// Room for `len` bytes with amortised growth (x1.5), so a sequential
    /// upload copies its bytes a bounded number of times; falls back to the
    /// exact size when the budget or the memory cannot give more.
    fn reserve_amortised(&mut self, len: usize) -> Result<()> {
        let capacity = self.bytes.capacity();
        if len <= capacity {
            return Ok(());
        }
        let amortised = len.max(capacity.saturating_add(capacity / 2));
        if amortised > len && self.reserve_exact(amortised).is_ok() {
            return Ok(());
        }
        self.reserve_exact(len)
    }

    /// Capacity for exactly `capacity` bytes: charged first, then allocated
    /// fallibly; on failure nothing changes.
    fn reserve_exact(&mut self, capacity: usize) -> Result<()> {
        if capacity <= self.bytes.capacity() {
            return Ok(());
        }
        self.charge.resize(capacity as u64)?;
        if self
            .bytes
            .try_reserve_exact(capacity - self.bytes.len())
            .is_err()
        {
            self.release_spare_charge();
            return Err(Error::NoSpace);
        }
        debug_assert_eq!(
            self.bytes.capacity(),
            capacity,
            "the charge is the capacity"
        );
        Ok(())
    }

    /// Lowers the charge to the capacity held, after a shrink or a failed
    /// reservation (lowering a charge cannot fail).
    fn release_spare_charge(&mut self) {
        let held = self.bytes.capacity() as u64;
        debug_assert!(held <= self.charge.bytes());
        let _ = self.charge.resize(held);
    }
}

impl Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl DerefMut for Blob {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

/// `content` as a blob only its holder uses, ready to be changed. When a
/// reader or another file shares it, it is replaced by a private copy of
/// `len` bytes (cut or zero-extended); otherwise it is left as it is.
pub fn unshare(content: &mut Rc<Blob>, len: u64) -> Result<&mut Blob> {
    if Rc::get_mut(content).is_none() {
        let copy = Blob::copy_resized(content.budget(), content, len)?;
        *content = Rc::new(copy);
    }
    Ok(Rc::get_mut(content).expect("unshared above"))
}
