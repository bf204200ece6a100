//! Async handles over guest resources: a `Session`, its `Reader`s and
//! `Writer`s. A session runs on one or more instances (lanes, see `pool`);
//! each reader and writer stays on the instance, and in the instance
//! generation, that created it, and drops its guest resource when it goes
//! away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use wasmtime::component::ResourceAny;

use super::bindings::{Capabilities, DirPage, FileInfo, SessionContext, SetAttrs, SpaceInfo, WitError, WriteOptions};
use super::error::StorageError;
use super::instance::{GuestFuture, Instance, Live};
use super::pool::{SessionSeat, TenantPool};
use super::tenant_gate::{Entry, Pass, Passing};
use super::validate;

/// A guest resource pinned to the instance generation that made it.
struct Pinned {
    instance: Arc<Instance>,
    generation: u64,
    resource: ResourceAny,
    /// A writer's recovery token when it goes away unfinished.
    orphan: Option<String>,
    /// A reader or writer (counted on its instance), not a session.
    child: bool,
}

impl Pinned {
    /// One call on this resource; flattens the contract's error into ours.
    async fn call<R: Send + 'static>(
        &self,
        op: &'static str,
        f: impl for<'a> FnOnce(&'a mut Live, ResourceAny) -> GuestFuture<'a, Result<R, WitError>> + Send + 'static,
    ) -> Result<R, StorageError> {
        let resource = self.resource;
        let (result, _) = self.instance.call(Some(self.generation), op, move |live: &mut Live| f(live, resource)).await?;
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
        self.instance.drop_resource(self.generation, self.resource, self.orphan.take());
        if self.child {
            self.instance.child_closed();
        }
    }
}

/// The session's guest resource on one instance.
struct Lane {
    pinned: Pinned,
    /// Readers and writers made on this lane and still open.
    children: AtomicUsize,
    seat: Arc<SessionSeat>,
}

impl Lane {
    /// Not once its instance was restarted, nor once the tenant's state
    /// moved to a newer version.
    fn usable(&self) -> bool {
        self.pinned.instance.is_live(self.pinned.generation) && !self.seat.moved()
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.seat.give_back(self.pinned.instance.clone());
    }
}

/// A reader or writer's hold on its lane.
struct LaneUse(Arc<Lane>);

impl LaneUse {
    fn new(lane: Arc<Lane>) -> Self {
        lane.children.fetch_add(1, Ordering::SeqCst);
        Self(lane)
    }
}

impl Drop for LaneUse {
    fn drop(&mut self) {
        self.0.children.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A lane being opened, counted in `Lanes::opening` until it is open, has
/// failed, or the call opening it was cancelled; waiters are woken then.
struct Opening<'a> {
    lanes: &'a Mutex<Lanes>,
    opened: &'a Notify,
    done: bool,
}

impl Opening<'_> {
    fn finish(mut self, lane: Option<&Arc<Lane>>) {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        lanes.opening -= 1;
        lanes.open.extend(lane.cloned());
        drop(lanes);
        self.done = true;
        self.opened.notify_waiters();
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.lanes.lock().expect("lanes lock").opening -= 1;
            self.opened.notify_waiters();
        }
    }
}

#[derive(Default)]
struct Lanes {
    open: Vec<Arc<Lane>>,
    /// Lanes being opened right now (they count against the cap).
    opening: usize,
}

/// Whether a call makes a resource that will keep its lane busy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Call,
    NewResource,
}

/// Whether a path's final symlink is followed (STAT) or described (LSTAT).
#[derive(Clone, Copy)]
enum Follow {
    FinalLink,
    NotFinalLink,
}

/// A storage session for one authenticated user.
pub struct Session {
    /// Replaced when the tenant's state moves to a newer version.
    seat: Mutex<Arc<SessionSeat>>,
    context: SessionContext,
    caps: Capabilities,
    lanes: Mutex<Lanes>,
    lane_opened: Notify,
}

impl Session {
    pub(super) async fn open(seat: SessionSeat, caps: Capabilities, context: SessionContext) -> Result<Self, StorageError> {
        let session = Self {
            seat: Mutex::new(Arc::new(seat)),
            context,
            caps,
            lanes: Mutex::default(),
            lane_opened: Notify::new(),
        };
        // The first lane now, so a plugin that refuses the user says so at login.
        let _pass = session.enter(Passing::Call).await;
        let lane = session.open_lane().await?;
        session.lanes.lock().expect("lanes lock").open.push(lane);
        Ok(session)
    }

    fn seat(&self) -> Arc<SessionSeat> {
        self.seat.lock().expect("seat lock").clone()
    }

    /// Passes the tenant's gate (held while its state moves to a newer
    /// version), following the tenant there once it has moved.
    async fn enter(&self, passing: Passing) -> Option<Pass> {
        // A tenant moves once per swap, always to a newer pool: a session
        // idle over several swaps follows the chain to its end.
        loop {
            let seat = self.seat();
            match seat.enter(passing).await {
                Entry::Open(pass) => return pass,
                Entry::Moved(pool) => self.follow(&seat, pool),
            }
        }
    }

    /// Takes a seat on the pool the tenant moved to; the lanes on the old
    /// version's instance are let go (readers keep theirs).
    fn follow(&self, from: &Arc<SessionSeat>, pool: Arc<TenantPool>) {
        let mut seat = self.seat.lock().expect("seat lock");
        if Arc::ptr_eq(&seat, from) {
            *seat = Arc::new(SessionSeat::on(pool));
            drop(seat);
            self.lanes.lock().expect("lanes lock").open.clear();
        }
    }

    /// Instances this session is using now.
    pub fn instances(&self) -> usize {
        self.lanes.lock().expect("lanes lock").open.len()
    }

    /// A lane to run a call on: a free one, else a new one while under the
    /// cap, else the least loaded one (the call waits for it). A lane whose
    /// instance was dropped after a failure is replaced: the session goes on
    /// on a fresh instance.
    async fn lane(&self, purpose: Purpose) -> Result<Arc<Lane>, StorageError> {
        loop {
            let wait = {
                let mut lanes = self.lanes.lock().expect("lanes lock");
                lanes.open.retain(|lane| lane.usable());
                let free = |lane: &&Arc<Lane>| !lane.pinned.instance.busy();
                let idle = |lane: &&Arc<Lane>| lane.children.load(Ordering::SeqCst) == 0;
                let pick = match purpose {
                    Purpose::NewResource => lanes.open.iter().filter(free).find(idle),
                    Purpose::Call => lanes.open.iter().find(free),
                };
                if let Some(lane) = pick {
                    return Ok(lane.clone());
                }
                if lanes.open.len() + lanes.opening < self.seat().max_instances() {
                    lanes.opening += 1;
                    None
                } else if let Some(lane) = lanes.open.iter().min_by_key(|lane| lane.children.load(Ordering::SeqCst)) {
                    return Ok(lane.clone());
                } else {
                    // Every lane is being opened by other calls: wait for one.
                    Some(self.lane_opened.notified())
                }
            };
            match wait {
                Some(opened) => opened.await,
                None => {
                    let opening = Opening { lanes: &self.lanes, opened: &self.lane_opened, done: false };
                    let lane = self.open_lane().await;
                    opening.finish(lane.as_ref().ok());
                    return lane;
                }
            }
        }
    }

    async fn open_lane(&self) -> Result<Arc<Lane>, StorageError> {
        let seat = self.seat();
        let instance = seat.lease();
        let context = self.context.clone();
        let opened = instance
            .call(None, "open-session", move |live: &mut Live| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.call_open_session(store, &context).await
                })
            })
            .await;
        let (result, generation) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                seat.give_back(instance);
                return Err(e);
            }
        };
        match result {
            Ok(resource) => Ok(Arc::new(Lane {
                pinned: Pinned { instance, generation, resource, orphan: None, child: false },
                children: AtomicUsize::new(0),
                seat,
            })),
            Err(e) => {
                seat.give_back(instance);
                Err(StorageError::from(e))
            }
        }
    }

    /// One session call on some lane.
    async fn call<R: Send + 'static>(
        &self,
        op: &'static str,
        f: impl for<'a> FnOnce(&'a mut Live, ResourceAny) -> GuestFuture<'a, Result<R, WitError>> + Send + 'static,
    ) -> Result<R, StorageError> {
        let _pass = self.enter(Passing::Call).await;
        self.lane(Purpose::Call).await?.pinned.call(op, f).await
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub async fn list_dir(&self, path: &str, cursor: Option<&str>, limit: u32) -> Result<DirPage, StorageError> {
        let limit = limit.clamp(1, validate::MAX_PAGE_ENTRIES);
        let (path_owned, cursor_owned) = (path.to_string(), cursor.map(str::to_string));
        let mut page = self
            .call("list-dir", move |live: &mut Live, me| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.session().call_list_dir(store, me, &path_owned, cursor_owned.as_deref(), limit).await
                })
            })
            .await?;
        let left_out = validate::dir_page(&mut page, cursor, limit).map_err(|e| self.rejected(e))?;
        if left_out > 0 {
            self.seat().warn(format_args!(
                "left {left_out} names longer than {} bytes out of a listing of {path:?}",
                validate::MAX_NAME_LEN
            ));
        }
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
        let path = path.to_string();
        let info = self
            .call(op, move |live: &mut Live, me| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    match follow {
                        Follow::FinalLink => api.session().call_file_info(store, me, &path).await,
                        Follow::NotFinalLink => api.session().call_link_info(store, me, &path).await,
                    }
                })
            })
            .await?;
        validate::file_info(&info).map_err(|e| self.rejected(e))?;
        Ok(info)
    }

    /// Opens the current version of a file, or exactly `version` (a
    /// changed file is `Conflict`).
    pub async fn open_read(&self, path: &str, version: Option<&str>) -> Result<Reader, StorageError> {
        let (path, version) = (path.to_string(), version.map(str::to_string));
        let _pass = self.enter(Passing::Call).await;
        let lane = self.lane(Purpose::NewResource).await?;
        let resource = lane
            .pinned
            .call("open-read", move |live: &mut Live, me| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.session().call_open_read(store, me, &path, version.as_deref()).await
                })
            })
            .await?;
        Ok(Reader { pinned: child(&lane, resource), _lane: LaneUse::new(lane) })
    }

    pub async fn begin_write(&self, path: &str, options: WriteOptions) -> Result<Writer, StorageError> {
        let path = path.to_string();
        // Held for the upload's life: a tenant's state moves only while no
        // upload is open.
        let pass = self.enter(Passing::Upload).await;
        let lane = self.lane(Purpose::NewResource).await?;
        // An upload that keeps the current content may start by copying it
        // (object storage: UploadPartCopy): allow it a commit's time.
        let op = if options.truncate { "begin-write" } else { "begin-write-keep" };
        let resource = lane
            .pinned
            .call(op, move |live: &mut Live, me| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.session().call_begin_write(store, me, &path, options).await
                })
            })
            .await?;
        let recovery = self.caps.abort_orphans.then(Mutex::default);
        let writer = Writer { pinned: child(&lane, resource), _lane: LaneUse::new(lane), recovery, _pass: pass };
        // Such a start may already have left something outside the instance.
        if !options.truncate {
            writer.note_recovery_token().await?;
        }
        Ok(writer)
    }

    pub async fn make_dir(&self, path: &str, permissions: Option<u32>) -> Result<(), StorageError> {
        let path = path.to_string();
        self.call("make-dir", move |live: &mut Live, me| {
            Box::pin(async move {
                let (store, api) = live.parts();
                api.session().call_make_dir(store, me, &path, permissions).await
            })
        })
        .await
    }

    pub async fn remove_dir(&self, path: &str) -> Result<(), StorageError> {
        let path = path.to_string();
        self.call("remove-dir", move |live: &mut Live, me| {
            Box::pin(async move {
                let (store, api) = live.parts();
                api.session().call_remove_dir(store, me, &path).await
            })
        })
        .await
    }

    pub async fn remove_file(&self, path: &str) -> Result<(), StorageError> {
        let path = path.to_string();
        self.call("remove-file", move |live: &mut Live, me| {
            Box::pin(async move {
                let (store, api) = live.parts();
                api.session().call_remove_file(store, me, &path).await
            })
        })
        .await
    }

    pub async fn rename(&self, src: &str, dst: &str, overwrite: bool) -> Result<(), StorageError> {
        let (src, dst) = (src.to_string(), dst.to_string());
        self.call("rename", move |live: &mut Live, me| {
            Box::pin(async move {
                let (store, api) = live.parts();
                api.session().call_rename(store, me, &src, &dst, overwrite).await
            })
        })
        .await
    }

    pub async fn copy_file(&self, src: &str, dst: &str, overwrite: bool) -> Result<(), StorageError> {
        let (src, dst) = (src.to_string(), dst.to_string());
        self.call("copy-file", move |live: &mut Live, me| {
            Box::pin(async move {
                let (store, api) = live.parts();
                api.session().call_copy_file(store, me, &src, &dst, overwrite).await
            })
        })
        .await
    }

    pub async fn set_info(&self, path: &str, attrs: SetAttrs) -> Result<(), StorageError> {
        let path = path.to_string();
        self.call("set-info", move |live: &mut Live, me| {
            Box::pin(async move {
                let (store, api) = live.parts();
                api.session().call_set_info(store, me, &path, attrs).await
            })
        })
        .await
    }

    pub async fn read_link(&self, path: &str) -> Result<String, StorageError> {
        let path = path.to_string();
        let target = self
            .call("read-link", move |live: &mut Live, me| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.session().call_read_link(store, me, &path).await
                })
            })
            .await?;
        validate::path(&target).map_err(|e| self.rejected(e))?;
        Ok(target)
    }

    pub async fn make_link(&self, target: &str, path: &str) -> Result<(), StorageError> {
        let (target, path) = (target.to_string(), path.to_string());
        self.call("make-link", move |live: &mut Live, me| {
            Box::pin(async move {
                let (store, api) = live.parts();
                api.session().call_make_link(store, me, &target, &path).await
            })
        })
        .await
    }

    pub async fn hard_link(&self, src: &str, dst: &str) -> Result<(), StorageError> {
        let (src, dst) = (src.to_string(), dst.to_string());
        self.call("hard-link", move |live: &mut Live, me| {
            Box::pin(async move {
                let (store, api) = live.parts();
                api.session().call_hard_link(store, me, &src, &dst).await
            })
        })
        .await
    }

    pub async fn space(&self, path: &str) -> Result<SpaceInfo, StorageError> {
        let path = path.to_string();
        self.call("space", move |live: &mut Live, me| {
            Box::pin(async move {
                let (store, api) = live.parts();
                api.session().call_space(store, me, &path).await
            })
        })
        .await
    }

    /// Counts a plugin output that broke the contract.
    fn rejected(&self, error: StorageError) -> StorageError {
        if matches!(error, StorageError::PluginFailed(_)) {
            self.seat().note_invalid_output();
        }
        error
    }
}

fn child(lane: &Lane, resource: ResourceAny) -> Pinned {
    lane.pinned.instance.child_opened();
    Pinned { instance: lane.pinned.instance.clone(), generation: lane.pinned.generation, resource, orphan: None, child: true }
}

/// Reads one pinned version of a file.
pub struct Reader {
    pinned: Pinned,
    _lane: LaneUse,
}

impl Reader {
    /// Up to `len` bytes at `offset`; empty means end of file.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        let data = self
            .pinned
            .call("read", move |live: &mut Live, me| {
                Box::pin(async move {
                    live.expect_read(len);
                    let (store, api) = live.parts();
                    api.reader().call_read(store, me, offset, len).await
                })
            })
            .await?;
        validate::read(data.len(), len).map_err(|e| self.pinned.reject(e))?;
        Ok(data)
    }

    /// The version being read, as pinned at open.
    pub async fn info(&self) -> Result<FileInfo, StorageError> {
        let info = self
            .pinned
            .call("reader-info", move |live: &mut Live, me| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.reader().call_info(store, me).await.map(Ok)
                })
            })
            .await?;
        validate::file_info(&info).map_err(|e| self.pinned.reject(e))?;
        Ok(info)
    }
}

/// New content, invisible until `finish` succeeds.
pub struct Writer {
    pinned: Pinned,
    _lane: LaneUse,
    /// With `abort-orphans`: the plugin's last recovery token, until the
    /// upload is finished or aborted.
    recovery: Option<Mutex<Option<String>>>,
    /// Counted at the tenant's gate (see `tenant_gate`) while open.
    _pass: Option<Pass>,
}

impl Writer {
    pub async fn write_chunk(&self, offset: u64, data: impl Into<Vec<u8>>) -> Result<(), StorageError> {
        let data = data.into();
        self.pinned
            .call("write-chunk", move |live: &mut Live, me| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.writer().call_write_chunk(store, me, offset, &data).await
                })
            })
            .await?;
        self.note_recovery_token().await
    }

    /// Asks the plugin how to abort this upload from another instance.
    async fn note_recovery_token(&self) -> Result<(), StorageError> {
        let Some(recovery) = &self.recovery else { return Ok(()) };
        let token = self
            .pinned
            .call("recovery-token", move |live: &mut Live, me| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.writer().call_recovery_token(store, me).await.map(Ok)
                })
            })
            .await?;
        if token.as_ref().is_some_and(|t| t.len() > validate::MAX_RECOVERY_TOKEN_LEN) {
            return Err(self.pinned.reject(StorageError::PluginFailed(format!(
                "recovery-token: longer than {} bytes",
                validate::MAX_RECOVERY_TOKEN_LEN
            ))));
        }
        *recovery.lock().expect("recovery token lock") = token;
        Ok(())
    }

    fn forget_recovery_token(&self) {
        if let Some(recovery) = &self.recovery {
            recovery.lock().expect("recovery token lock").take();
        }
    }

    /// Commits; the result is what the client gets on CLOSE.
    pub async fn finish(&self) -> Result<FileInfo, StorageError> {
        let info = self
            .pinned
            .call("finish", move |live: &mut Live, me| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.writer().call_finish(store, me).await
                })
            })
            .await?;
        self.forget_recovery_token();
        validate::file_info(&info).map_err(|e| self.pinned.reject(e))?;
        Ok(info)
    }

    /// Cuts or zero-extends the pending content (truncate on an open upload).
    pub async fn set_size(&self, size: u64) -> Result<(), StorageError> {
        self.pinned
            .call("set-size", move |live: &mut Live, me| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.writer().call_set_size(store, me, size).await
                })
            })
            .await?;
        self.note_recovery_token().await
    }

    pub async fn abort(&self) -> Result<(), StorageError> {
        self.pinned
            .call("abort", move |live: &mut Live, me| {
                Box::pin(async move {
                    let (store, api) = live.parts();
                    api.writer().call_abort(store, me).await.map(Ok)
                })
            })
            .await?;
        self.forget_recovery_token();
        Ok(())
    }
}

/// An upload neither finished nor aborted goes with its recovery token to
/// the resource drop: see `Instance::drop_resource`.
impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(recovery) = &self.recovery {
            self.pinned.orphan = recovery.lock().map(|mut t| t.take()).unwrap_or_default();
        }
    }
}

impl Instance {
    pub(super) fn note_invalid_output(&self) {
        self.stats().invalid_outputs.fetch_add(1, Ordering::Relaxed);
    }
}
