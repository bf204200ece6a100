//! Open files, counted for the server and for each tenant. An open file
//! holds what its plugin keeps open for it: for a local folder, a file
//! descriptor of this process, which every tenant shares. Without a bound
//! per tenant, one tenant's sessions could open files until the process
//! has no descriptor left, and every other tenant's OPEN (and the server's
//! own accept) would fail.

use super::shares::{Shortage, TenantShare};
use crate::plugin::StorageError;

/// One open file's place in its tenant's count, given back when dropped.
pub struct OpenFile {
    share: TenantShare,
}

impl OpenFile {
    /// A place for one more open file, or a refusal saying whose bound it is
    /// (EMFILE on `sftp-server`, answered as a failure).
    pub fn take(share: &TenantShare) -> Result<Self, StorageError> {
        share.take(1).map_err(|shortage| {
            StorageError::Io(match shortage {
                Shortage::Tenant => format!("too many open files for this tenant (at most {})", share.limit()),
                Shortage::Server => "too many open files on this server".to_string(),
            })
        })?;
        Ok(Self { share: share.clone() })
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        self.share.give_back(1);
    }
}

#[cfg(test)]
mod tests {
    use super::super::shares::TenantShares;
    use super::*;

    #[test]
    fn a_tenant_at_its_bound_leaves_the_others_their_files() {
        let shares = TenantShares::new(5, 3);
        let (a, b) = (shares.share("a"), shares.share("b"));
        let held: Vec<_> = (0..3).map(|_| OpenFile::take(&a).unwrap()).collect();
        let refused = OpenFile::take(&a).err().expect("past a's bound");
        assert!(refused.to_string().contains("for this tenant"), "{refused}");
        let b_files: Vec<_> = (0..2).map(|_| OpenFile::take(&b).unwrap()).collect();
        assert!(OpenFile::take(&b).err().expect("the server is full").to_string().contains("on this server"));
        drop(held);
        assert_eq!(shares.held(), 2, "closed files are given back");
        assert!(OpenFile::take(&b).is_ok());
        drop(b_files);
    }
}
