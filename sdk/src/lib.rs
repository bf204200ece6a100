//! Write wasftp storage plugins in Rust.
//!
//! A plugin implements [`Guest`] (plus [`GuestSession`], [`GuestReader`] and
//! [`GuestWriter`]) and exports it with `wasftp_sdk::export_plugin!(MyPlugin);`.
//! See `README.md` for a walk-through.

// Lets the generated code (and the export macro expanded in plugin crates)
// name this crate as `wasftp_sdk` from inside it too.
extern crate self as wasftp_sdk;

/// Runtime support used by the generated code; not part of the public API.
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Bindings generated from `wit/storage.wit` (world `plugin-with-handover`:
/// the contract, and the optional hand-over of a tenant's state).
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin-with-handover",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_raw",
        default_bindings_module: "wasftp_sdk::bindings",
        runtime_path: "wasftp_sdk::__wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
    });
}

pub mod config;
pub mod error;
pub mod log;
pub mod path;

/// Exports a plugin type as the component's `backend`:
/// `wasftp_sdk::export_plugin!(MyPlugin);` where `MyPlugin: Guest`. Its
/// `handover` answers `unsupported` (a tenant starts empty on the next
/// version); `export_plugin!(MyPlugin, handover)` exports the plugin's own
/// [`Handover`] instead.
///
/// Expands to nothing on non-wasm targets, so a plugin crate can also be
/// built natively (e.g. as an `rlib` for unit tests).
#[macro_export]
macro_rules! export_plugin {
    ($ty:ident) => {
        impl $crate::Handover for $ty {
            fn export_state(
                _cursor: Option<String>,
                _max_bytes: u32,
            ) -> ::core::result::Result<(Vec<u8>, Option<String>), $crate::Error> {
                Err($crate::Error::Unsupported)
            }
            fn import_state(_piece: Vec<u8>, _last: bool) -> ::core::result::Result<(), $crate::Error> {
                Err($crate::Error::Unsupported)
            }
        }
        $crate::export_plugin!($ty, handover);
    };
    ($ty:ident, handover) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_plugin_raw!($ty with_types_in $crate::bindings);
    };
}

/// A tenant-scoped plugin's hand-over of its state to its next version
/// (see `interface handover` in the contract).
pub use bindings::exports::wasftp::storage::handover::Guest as Handover;

pub use bindings::exports::wasftp::storage::backend::{
    Guest, GuestReader, GuestSession, GuestWriter, Reader, Session, Writer,
};
pub use bindings::wasftp::storage::types::{
    Capabilities, DirEntry, DirPage, Error, FileInfo, FileKind, InstanceScope, SessionContext,
    SetAttrs, SpaceInfo, WriteOptions,
};
pub use error::{Result, conflict, invalid, io_error};

/// Everything a plugin usually needs: `use wasftp_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::error::{Result, conflict, invalid, io_error};
    pub use crate::{
        Capabilities, DirEntry, DirPage, Error, FileInfo, FileKind, Guest, GuestReader,
        GuestSession, GuestWriter, Handover, InstanceScope, Reader, Session, SessionContext, SetAttrs,
        SpaceInfo, WriteOptions, Writer, config, export_plugin, log, path,
    };
}
