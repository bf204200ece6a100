//! A temporary file on the server's disk holding content the plugin cannot
//! take yet: unlinked at creation, so nothing is left behind whatever
//! happens to the server, and bounded in size: per file, per tenant and for
//! the whole server (`SpoolArea`), so one tenant's spooling cannot fill the
//! disk space every other tenant's uploads need.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::PathBuf;
use std::sync::Arc;

use super::shares::{Shortage, TenantShare, TenantShares};
use crate::plugin::StorageError;

/// Where spool files go, and the bytes all of them, and those of each
/// tenant, may hold together.
pub struct SpoolArea {
    dir: PathBuf,
    space: Arc<TenantShares>,
}

impl SpoolArea {
    pub fn new(dir: PathBuf, total: u64, per_tenant: u64) -> Arc<Self> {
        Arc::new(Self { dir, space: TenantShares::new(total, per_tenant) })
    }

    /// Where `tenant`'s spool files go, charged to its share.
    pub fn for_tenant(self: &Arc<Self>, tenant: &str) -> TenantSpool {
        TenantSpool { dir: self.dir.clone(), space: self.space.share(tenant) }
    }

    /// Bytes the server's spool files hold now.
    pub fn used(&self) -> u64 {
        self.space.held()
    }

    /// Bytes `tenant`'s spool files hold now.
    pub fn used_by(&self, tenant: &str) -> u64 {
        self.space.held_by(tenant)
    }

    /// Tenants with spool files holding disk now.
    pub fn tenants(&self) -> usize {
        self.space.tenants()
    }
}

/// One tenant's part of the spool area.
#[derive(Clone)]
pub struct TenantSpool {
    dir: PathBuf,
    space: TenantShare,
}

impl TenantSpool {
    /// Takes `bytes` more, if both the tenant's share and the area have room.
    fn take(&self, bytes: u64) -> Result<(), StorageError> {
        self.space.take(bytes).map_err(|shortage| match shortage {
            Shortage::Tenant => {
                let share = self.space.limit();
                tracing::warn!(tenant = self.space.tenant(), share, "a tenant's spool share is full");
                StorageError::Io(format!(
                    "this tenant's spool share ({} MiB) is full; try again when its other transfers are done",
                    share >> 20
                ))
            }
            Shortage::Server => {
                tracing::warn!(tenant = self.space.tenant(), "the server's spool space is full");
                StorageError::Io("the server's spool space is full; try again later".into())
            }
        })
    }

    fn give_back(&self, bytes: u64) {
        self.space.give_back(bytes);
    }
}

/// Disk space is counted in blocks of the spool file's filesystem, at
/// least this large.
const MIN_BLOCK: u64 = 4096;

/// The blocks of a file that writes touched, as disjoint ranges: a sparse
/// file takes disk only there, and a range written twice takes it once.
struct Touched {
    /// Start to end, block-aligned, never adjacent or overlapping.
    ranges: BTreeMap<u64, u64>,
    bytes: u64,
    block: u64,
}

impl Touched {
    fn new(block: u64) -> Self {
        Self { ranges: BTreeMap::new(), bytes: 0, block: block.max(MIN_BLOCK) }
    }

    /// Bytes of blocks touched if `start..end` were written too.
    fn with(&self, start: u64, end: u64) -> u64 {
        let (start, end) = (start / self.block * self.block, end.next_multiple_of(self.block));
        let covered: u64 = self.ranges.range(..end).rev().take_while(|(_, e)| **e > start).map(|(s, e)| (*e).min(end) - (*s).max(start)).sum();
        self.bytes + (end - start) - covered
    }

    fn add(&mut self, start: u64, end: u64) {
        self.bytes = self.with(start, end);
        let (mut start, mut end) = (start / self.block * self.block, end.next_multiple_of(self.block));
        let merged: Vec<(u64, u64)> =
            self.ranges.range(..=end).rev().take_while(|(_, e)| **e >= start).map(|(s, e)| (*s, *e)).collect();
        for (s, e) in merged {
            self.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// Forgets what lies past `len` (the file was cut).
    fn cut(&mut self, len: u64) {
        let len = len.next_multiple_of(self.block);
        let past: Vec<(u64, u64)> = self.ranges.range(..).rev().take_while(|(_, e)| **e > len).map(|(s, e)| (*s, *e)).collect();
        for (s, e) in past {
            self.ranges.remove(&s);
            self.bytes -= e - s;
            if s < len {
                self.ranges.insert(s, len);
                self.bytes += len - s;
            }
        }
    }
}

pub struct Spool {
    share: TenantSpool,
    /// Bytes of the tenant's share this file holds: the blocks its writes
    /// touched. Given back as they are cut and, all of it, on drop.
    charged: u64,
    touched: Touched,
    file: Arc<File>,
    /// The file offset the spool starts at (what comes before is elsewhere:
    /// an in-order upload's bytes the plugin already has).
    base: u64,
    /// Most bytes the spool may hold.
    max: u64,
    /// The file's size: the end of the furthest write, or the last size set.
    len: u64,
}

impl Spool {
    /// A spool for a file's bytes from offset `base` on.
    pub async fn create(share: &TenantSpool, base: u64, max: u64) -> Result<Self, StorageError> {
        let dir = share.dir.clone();
        let (file, block) = blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let file = tempfile::tempfile_in(dir)?;
            let block = file.metadata()?.blksize();
            Ok((file, block))
        })
        .await?;
        Ok(Self { share: share.clone(), charged: 0, touched: Touched::new(block), file: Arc::new(file), base, max, len: base })
    }

    /// Charges the tenant's share for `size` bytes of disk (or gives back);
    /// refused, nothing changes.
    fn charge(&mut self, size: u64) -> Result<(), StorageError> {
        if size > self.charged {
            self.share.take(size - self.charged)?;
        } else {
            self.share.give_back(self.charged - size);
        }
        self.charged = size;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// The file offset the spool starts at.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Writes at `offset`; past the size bound, nothing is written.
    pub async fn write_at(&mut self, offset: u64, data: Vec<u8>) -> Result<(), StorageError> {
        let at = offset.checked_sub(self.base).expect("no write before the spool's start");
        let end = offset.checked_add(data.len() as u64).filter(|end| end - self.base <= self.max);
        let Some(end) = end else { return Err(too_large(self.max)) };
        let space = self.touched.with(at, end - self.base);
        if space > self.charged {
            self.charge(space)?;
        }
        self.touched.add(at, end - self.base);
        let file = self.file.clone();
        blocking(move || file.write_all_at(&data, at)).await?;
        self.len = self.len.max(end);
        Ok(())
    }

    /// Cuts the content, or extends it with zeros.
    pub async fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        let physical = len.checked_sub(self.base).expect("no size before the spool's start");
        if physical > self.max {
            return Err(too_large(self.max));
        }
        // Zeros added by an extension take no disk; a cut frees what was past it.
        let file = self.file.clone();
        blocking(move || file.set_len(physical)).await?;
        self.touched.cut(physical);
        if self.touched.bytes < self.charged {
            self.charge(self.touched.bytes)?;
        }
        self.len = len;
        Ok(())
    }

    /// Up to `len` bytes at `offset` (fewer at the end); never-written
    /// ranges read as zeros.
    pub async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        if offset >= self.len {
            return Ok(Vec::new());
        }
        let len = (self.len - offset).min(u64::from(len)) as usize;
        let at = offset.checked_sub(self.base).expect("no read before the spool's start");
        let file = self.file.clone();
        blocking(move || {
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, at)?;
            Ok(buf)
        })
        .await
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.share.give_back(self.charged);
    }
}

pub fn too_large(max: u64) -> StorageError {
    StorageError::Io(format!("the server spools at most {max} bytes of this file"))
}

fn spool_error(e: std::io::Error) -> StorageError {
    tracing::warn!("spool file: {e}");
    StorageError::Io("the server's spool file failed".into())
}

/// Runs blocking file I/O off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| spool_error(std::io::Error::other(e)))?.map_err(spool_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[tokio::test]
    async fn the_area_is_charged_for_the_blocks_written_not_the_extent() {
        let dir = tempfile::tempdir().unwrap();
        let area = SpoolArea::new(dir.path().to_path_buf(), MIB, MIB);
        let mut spool = Spool::create(&area.for_tenant("t"), 0, 1 << 30).await.unwrap();
        const BLOCK: u64 = 4096;
        assert_eq!(spool.touched.block, BLOCK, "figures below are for 4 KiB blocks");
        // One byte far out: a sparse file, one block of disk.
        spool.write_at(512 * MIB, vec![1]).await.unwrap();
        assert_eq!(area.used(), BLOCK);
        assert_eq!(spool.len(), 512 * MIB + 1);
        // A range rewritten again and again counts once.
        for _ in 0..64 {
            spool.write_at(0, vec![2; 64 << 10]).await.unwrap();
        }
        assert_eq!(area.used(), (64 << 10) + BLOCK);
        // Unaligned writes that meet count the blocks they share once.
        spool.write_at(100_000, vec![3; 10_000]).await.unwrap();
        spool.write_at(110_000, vec![3; 10_000]).await.unwrap();
        assert_eq!(area.used(), (64 << 10) + BLOCK + (122_880 - 98_304));
        assert_eq!(spool.read_at(512 * MIB, 10).await.unwrap(), vec![1]);
        // Past the area's bound, refused.
        let full = spool.write_at(MIB, vec![4; MIB as usize]).await;
        assert!(matches!(&full, Err(StorageError::Io(m)) if m.contains("spool space is full")), "{full:?}");
        // A cut gives back what lay past it.
        spool.set_len(100_000).await.unwrap();
        assert_eq!(area.used(), (64 << 10) + (102_400 - 98_304));
        spool.set_len(MIB).await.unwrap();
        assert_eq!(area.used(), (64 << 10) + (102_400 - 98_304), "zeros take no disk");
        drop(spool);
        assert_eq!(area.used(), 0);
    }

    #[tokio::test]
    async fn a_tenant_past_its_share_is_refused_naming_it_and_the_others_still_spool() {
        let dir = tempfile::tempdir().unwrap();
        // 8 MiB for the server, 3 MiB for each tenant.
        let area = SpoolArea::new(dir.path().to_path_buf(), 8 * MIB, 3 * MIB);
        let (a, b) = (area.for_tenant("a"), area.for_tenant("b"));
        let mut first = Spool::create(&a, 0, 1 << 30).await.unwrap();
        first.write_at(0, vec![1; 2 * MIB as usize]).await.unwrap();
        let mut second = Spool::create(&a, 0, 1 << 30).await.unwrap();
        second.write_at(0, vec![2; MIB as usize]).await.unwrap();
        let refused = second.write_at(MIB, vec![2; 4096]).await;
        assert!(
            matches!(&refused, Err(StorageError::Io(m)) if m.contains("this tenant's spool share (3 MiB) is full")),
            "{refused:?}"
        );
        assert_eq!(area.used_by("a"), 3 * MIB, "the refused write took nothing");
        // b has its whole share, a's spools notwithstanding.
        let mut theirs = Spool::create(&b, 0, 1 << 30).await.unwrap();
        theirs.write_at(0, vec![3; 3 * MIB as usize]).await.unwrap();
        assert_eq!((area.used_by("b"), area.used()), (3 * MIB, 6 * MIB));
        // Past b's share it is refused too, not a's.
        assert!(theirs.write_at(3 * MIB, vec![3; 4096]).await.is_err());
        assert_eq!(area.used_by("a"), 3 * MIB);
        drop(theirs);
        assert_eq!((area.used_by("b"), area.tenants()), (0, 1), "b holds nothing and leaves the table");
    }

    #[tokio::test]
    async fn the_servers_total_caps_the_tenants_together() {
        let dir = tempfile::tempdir().unwrap();
        let area = SpoolArea::new(dir.path().to_path_buf(), 4 * MIB, 3 * MIB);
        let mut a = Spool::create(&area.for_tenant("a"), 0, 1 << 30).await.unwrap();
        a.write_at(0, vec![1; 3 * MIB as usize]).await.unwrap();
        let mut b = Spool::create(&area.for_tenant("b"), 0, 1 << 30).await.unwrap();
        b.write_at(0, vec![2; MIB as usize]).await.unwrap();
        let refused = b.write_at(MIB, vec![2; 4096]).await;
        let server_full = matches!(&refused, Err(StorageError::Io(m)) if m.contains("the server's spool space is full"));
        assert!(server_full, "{refused:?}");
        assert_eq!((area.used_by("b"), area.used()), (MIB, 4 * MIB));
        // What a gives back, b may take.
        a.set_len(MIB).await.unwrap();
        b.write_at(MIB, vec![2; 2 * MIB as usize]).await.unwrap();
        assert_eq!((area.used_by("a"), area.used_by("b"), area.used()), (MIB, 3 * MIB, 4 * MIB));
    }

    /// Every way a spool ends or shrinks gives back exactly what it held:
    /// a cut, a refused write, a failed file operation, and the drop.
    #[tokio::test]
    async fn every_release_path_gives_back_everything() {
        let dir = tempfile::tempdir().unwrap();
        let area = SpoolArea::new(dir.path().to_path_buf(), 64 * MIB, 2 * MIB);
        let share = area.for_tenant("a");
        let mut spool = Spool::create(&share, 0, 4 * MIB).await.unwrap();
        spool.write_at(0, vec![1; MIB as usize + 10]).await.unwrap();
        assert_eq!(area.used_by("a"), MIB + 4096);
        // Refused by the tenant's share (2 MiB and a block): nothing more
        // is charged...
        assert!(spool.write_at(MIB, vec![1; MIB as usize + 1]).await.is_err());
        assert_eq!(area.used_by("a"), MIB + 4096);
        // ...nor by the file's own bound.
        assert!(spool.write_at(4 * MIB, vec![1]).await.is_err());
        assert!(spool.set_len(4 * MIB + 1).await.is_err());
        assert_eq!(area.used_by("a"), MIB + 4096);
        // A cut to nothing gives back everything, and the share takes again.
        spool.set_len(0).await.unwrap();
        assert_eq!((area.used_by("a"), area.tenants()), (0, 0));
        spool.write_at(0, vec![1; 2 * MIB as usize]).await.unwrap();
        assert_eq!(area.used_by("a"), 2 * MIB);
        drop(spool);
        assert_eq!((area.used(), area.tenants()), (0, 0));

        // A spool whose file cannot be created takes nothing.
        let gone = SpoolArea::new(dir.path().join("file").join("under-a-file"), 64 * MIB, 2 * MIB);
        std::fs::write(dir.path().join("file"), b"not a directory").unwrap();
        assert!(Spool::create(&gone.for_tenant("a"), 0, MIB).await.is_err());
        assert_eq!(gone.used(), 0);
    }
}
