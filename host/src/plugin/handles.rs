//! Async handles over guest resources: a `Session`, its `Reader`s and
//! `Writer`s. Each one is tied to the instance generation that created it and
//! drops its guest resource when it goes away.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use wasmtime::component::ResourceAny;

use super::bindings::{Capabilities, DirPage, FileInfo, SessionContext, SetAttrs, SpaceInfo, WitError, WriteOptions};
use super::error::StorageError;
use super::instance::{Instance, Live};
use super::validate;

/// A guest resource pinned to the instance generation that made it.
struct Pinned {
    instance: Arc<Instance>,
    generation: u64,
    resource: ResourceAny,
}

impl Pinned {
    /// One call on this resource; flattens the contract's error into ours.
    async fn call<R>(
        &self,
        op: &'static str,
        f: impl AsyncFnOnce(&mut Live, ResourceAny) -> wasmtime::Result<Result<R, WitError>>,
    ) -> Result<R, StorageError> {
        let resource = self.resource;
        let (result, _) = self.instance.call(Some(self.generation), op, async |live: &mut Live| f(live, resource).await).await?;
        result.map_err(StorageError::from)
    }

    fn reject(&self, error: StorageError) -> StorageError {
        if matches!(error, StorageError::PluginFailed(_)) {
            self.instance.note_invalid_output();
        }
        error
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.instance.drop_resource(self.generation, self.resource);
    }
}

/// Whether a path's final symlink is followed (STAT) or described (LSTAT).
#[derive(Clone, Copy)]
enum Follow {
    FinalLink,
    NotFinalLink,
}

/// A storage session for one authenticated user.
pub struct Session {
    pinned: Pinned,
    caps: Capabilities,
}

impl Session {
    pub(super) async fn open(instance: Arc<Instance>, caps: Capabilities, context: SessionContext) -> Result<Self, StorageError> {
        let (result, generation) = instance
            .call(None, "open-session", async |live: &mut Live| {
                let (store, api) = live.parts();
                api.call_open_session(store, &context).await
            })
            .await?;
        let resource = result.map_err(StorageError::from)?;
        Ok(Self { pinned: Pinned { instance, generation, resource }, caps })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub async fn list_dir(&self, path: &str, cursor: Option<&str>, limit: u32) -> Result<DirPage, StorageError> {
        let limit = limit.clamp(1, validate::MAX_PAGE_ENTRIES);
        let mut page = self
            .pinned
            .call("list-dir", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_list_dir(store, me, path, cursor, limit).await
            })
            .await?;
        validate::dir_page(&mut page, cursor, limit).map_err(|e| self.pinned.reject(e))?;
        Ok(page)
    }

    pub async fn file_info(&self, path: &str) -> Result<FileInfo, StorageError> {
        self.info(path, Follow::FinalLink).await
    }

    /// Like `file_info`, but a final symlink is described, not followed
    /// (LSTAT). Only meaningful when the plugin declares `symlinks`.
    pub async fn link_info(&self, path: &str) -> Result<FileInfo, StorageError> {
        self.info(path, Follow::NotFinalLink).await
    }

    async fn info(&self, path: &str, follow: Follow) -> Result<FileInfo, StorageError> {
        let op = match follow {
            Follow::FinalLink => "file-info",
            Follow::NotFinalLink => "link-info",
        };
        let info = self
            .pinned
            .call(op, async |live: &mut Live, me| {
                let (store, api) = live.parts();
                match follow {
                    Follow::FinalLink => api.session().call_file_info(store, me, path).await,
                    Follow::NotFinalLink => api.session().call_link_info(store, me, path).await,
                }
            })
            .await?;
        validate::file_info(&info).map_err(|e| self.pinned.reject(e))?;
        Ok(info)
    }

    /// Opens the current version of a file, or exactly `version` (a
    /// changed file is `Conflict`).
    pub async fn open_read(&self, path: &str, version: Option<&str>) -> Result<Reader, StorageError> {
        let resource = self
            .pinned
            .call("open-read", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_open_read(store, me, path, version).await
            })
            .await?;
        Ok(Reader { pinned: self.child(resource) })
    }

    pub async fn begin_write(&self, path: &str, options: WriteOptions) -> Result<Writer, StorageError> {
        let resource = self
            .pinned
            .call("begin-write", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_begin_write(store, me, path, options).await
            })
            .await?;
        Ok(Writer { pinned: self.child(resource) })
    }

    pub async fn make_dir(&self, path: &str, permissions: Option<u32>) -> Result<(), StorageError> {
        self.pinned
            .call("make-dir", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_make_dir(store, me, path, permissions).await
            })
            .await
    }

    pub async fn remove_dir(&self, path: &str) -> Result<(), StorageError> {
        self.pinned
            .call("remove-dir", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_remove_dir(store, me, path).await
            })
            .await
    }

    pub async fn remove_file(&self, path: &str) -> Result<(), StorageError> {
        self.pinned
            .call("remove-file", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_remove_file(store, me, path).await
            })
            .await
    }

    pub async fn rename(&self, src: &str, dst: &str, overwrite: bool) -> Result<(), StorageError> {
        self.pinned
            .call("rename", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_rename(store, me, src, dst, overwrite).await
            })
            .await
    }

    pub async fn copy_file(&self, src: &str, dst: &str, overwrite: bool) -> Result<(), StorageError> {
        self.pinned
            .call("copy-file", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_copy_file(store, me, src, dst, overwrite).await
            })
            .await
    }

    pub async fn set_info(&self, path: &str, attrs: SetAttrs) -> Result<(), StorageError> {
        self.pinned
            .call("set-info", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_set_info(store, me, path, attrs).await
            })
            .await
    }

    pub async fn read_link(&self, path: &str) -> Result<String, StorageError> {
        let target = self
            .pinned
            .call("read-link", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_read_link(store, me, path).await
            })
            .await?;
        validate::path(&target).map_err(|e| self.pinned.reject(e))?;
        Ok(target)
    }

    pub async fn make_link(&self, target: &str, path: &str) -> Result<(), StorageError> {
        self.pinned
            .call("make-link", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_make_link(store, me, target, path).await
            })
            .await
    }

    pub async fn hard_link(&self, src: &str, dst: &str) -> Result<(), StorageError> {
        self.pinned
            .call("hard-link", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_hard_link(store, me, src, dst).await
            })
            .await
    }

    pub async fn space(&self, path: &str) -> Result<SpaceInfo, StorageError> {
        self.pinned
            .call("space", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.session().call_space(store, me, path).await
            })
            .await
    }

    fn child(&self, resource: ResourceAny) -> Pinned {
        Pinned { instance: self.pinned.instance.clone(), generation: self.pinned.generation, resource }
    }
}

/// Reads one pinned version of a file.
pub struct Reader {
    pinned: Pinned,
}

impl Reader {
    /// Up to `len` bytes at `offset`; empty means end of file.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        let data = self
            .pinned
            .call("read", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.reader().call_read(store, me, offset, len).await
            })
            .await?;
        validate::read(data.len(), len).map_err(|e| self.pinned.reject(e))?;
        Ok(data)
    }

    /// The version being read, as pinned at open.
    pub async fn info(&self) -> Result<FileInfo, StorageError> {
        let info = self
            .pinned
            .call("reader-info", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.reader().call_info(store, me).await.map(Ok)
            })
            .await?;
        validate::file_info(&info).map_err(|e| self.pinned.reject(e))?;
        Ok(info)
    }
}

/// New content, invisible until `finish` succeeds.
pub struct Writer {
    pinned: Pinned,
}

impl Writer {
    pub async fn write_chunk(&self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.pinned
            .call("write-chunk", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.writer().call_write_chunk(store, me, offset, data).await
            })
            .await
    }

    /// Commits; the result is what the client gets on CLOSE.
    pub async fn finish(&self) -> Result<FileInfo, StorageError> {
        let info = self
            .pinned
            .call("finish", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.writer().call_finish(store, me).await
            })
            .await?;
        validate::file_info(&info).map_err(|e| self.pinned.reject(e))?;
        Ok(info)
    }

    /// Cuts or zero-extends the pending content (truncate on an open upload).
    pub async fn set_size(&self, size: u64) -> Result<(), StorageError> {
        self.pinned
            .call("set-size", async |live: &mut Live, me| {
                let (store, api) = live.parts();
                api.writer().call_set_size(store, me, size).await
            })
            .await
    }

    pub async fn abort(&self) -> Result<(), StorageError> {
        let resource = self.pinned.resource;
        self.pinned
            .instance
            .call(Some(self.pinned.generation), "abort", async |live: &mut Live| {
                let (store, api) = live.parts();
                api.writer().call_abort(store, resource).await
            })
            .await
            .map(|_| ())
    }
}

impl Instance {
    pub(super) fn note_invalid_output(&self) {
        self.stats().invalid_outputs.fetch_add(1, Ordering::Relaxed);
    }
}
