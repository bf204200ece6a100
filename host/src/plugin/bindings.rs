//! Host-side bindings of the contract in `wit/`. The generated records are
//! plain Rust data (no wasmtime types), so the rest of the host uses them
//! directly; resources and calls stay inside `plugin/`.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    exports: { default: async },
});

pub use self::exports::wasftp::storage::backend::Guest as BackendExports;
pub use self::wasftp::storage::log::Level as LogLevel;
pub use self::wasftp::storage::types::{
    Capabilities, DirEntry, DirPage, Error as WitError, FileInfo, FileKind, InstanceScope,
    SessionContext, SetAttrs, SpaceInfo, WriteOptions,
};
