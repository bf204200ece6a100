//! Plugins compiled by the build script and embedded in the binary.

include!(concat!(env!("OUT_DIR"), "/bundled_plugins.rs"));

/// The component bytes of a bundled plugin, by name (`memory`, …).
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    BUNDLED.iter().map(|(n, _)| *n)
}
