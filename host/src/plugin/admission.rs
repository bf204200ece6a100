//! What a plugin file must be before anything else is done with it: a
//! WebAssembly component (a core module or another file is named as
//! such, not left to the component parser's words), of bounded size.
//! Compiling it, checking its imports against its grants (`grants`), its
//! exports against the contract (`bindings`) and a smoke run (`describe`)
//! follow in `Runtime::load`.

use anyhow::bail;

/// The largest plugin file by default.
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 64 << 20;

const MAGIC: &[u8; 4] = b"\0asm";
/// Version 1 of the core module format.
const CORE_MODULE: [u8; 4] = [1, 0, 0, 0];
/// The component model's version and layer (0x0d, layer 1).
const COMPONENT: [u8; 4] = [0x0d, 0, 1, 0];

/// Checks the file's size and format header.
pub fn check_file(name: &str, wasm: &[u8], max_bytes: usize) -> anyhow::Result<()> {
    if wasm.len() > max_bytes {
        bail!("plugin {name}: the file is larger than the {max_bytes} bytes allowed (max_component_mib)");
    }
    if wasm.len() < 8 || &wasm[..4] != MAGIC {
        bail!("plugin {name}: not a WebAssembly file (it does not start with the `\\0asm` header)");
    }
    let version: [u8; 4] = wasm[4..8].try_into().expect("eight bytes checked");
    match version {
        COMPONENT => Ok(()),
        CORE_MODULE => bail!(
            "plugin {name}: this is a core WebAssembly module, not a component; build it as a component \
             against wit/storage.wit (for example for the wasm32-wasip2 target, with componentize-js or \
             componentize-py, or wrap a module with `wasm-tools component new`)"
        ),
        other => bail!("plugin {name}: a WebAssembly file of an unknown version or layer ({other:02x?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_component_of_bounded_size_passes() {
        let component = [MAGIC.as_slice(), &COMPONENT, &[0; 8]].concat();
        check_file("p", &component, 100).unwrap();
        let too_big = check_file("p", &component, 10).unwrap_err().to_string();
        assert!(too_big.contains("larger than the 10 bytes allowed (max_component_mib)"), "{too_big}");
        let module = [MAGIC.as_slice(), &CORE_MODULE].concat();
        let err = check_file("p", &module, 100).unwrap_err().to_string();
        assert!(err.contains("core WebAssembly module, not a component"), "{err}");
        let err = check_file("p", b"#!/bin/sh\necho hi\n", 100).unwrap_err().to_string();
        assert!(err.contains("not a WebAssembly file"), "{err}");
        let err = check_file("p", &[MAGIC.as_slice(), &[2, 0, 0, 0]].concat(), 100).unwrap_err().to_string();
        assert!(err.contains("unknown version"), "{err}");
    }
}
