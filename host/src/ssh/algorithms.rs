//! The algorithms offered: OpenSSH sshd's defaults, as far as russh
//! implements them. russh's own defaults leave out aes128-gcm@openssh.com
//! and the NIST ECDH key exchanges, so a client configured with only those
//! (as some hardened configs are) could not connect.

use std::borrow::Cow;

use russh::{Preferred, cipher, kex};

/// sshd's `Ciphers` default, in its order.
const CIPHERS: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_128_CTR,
    cipher::AES_192_CTR,
    cipher::AES_256_CTR,
    cipher::AES_128_GCM,
    cipher::AES_256_GCM,
];

/// sshd's `KexAlgorithms` default without sntrup761x25519 (not in russh),
/// then russh's extra groups and the extension markers it needs.
const KEX: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::ECDH_SHA2_NISTP256,
    kex::ECDH_SHA2_NISTP384,
    kex::ECDH_SHA2_NISTP521,
    kex::DH_GEX_SHA256,
    kex::DH_G16_SHA512,
    kex::DH_G18_SHA512,
    kex::DH_G14_SHA256,
    kex::DH_G17_SHA512,
    kex::DH_G15_SHA512,
    // As in russh's defaults: the markers for both sides.
    kex::EXTENSION_SUPPORT_AS_CLIENT,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];

/// Host key algorithms and MACs stay russh's defaults: they already match
/// sshd's except for the SHA-1 and UMAC MACs, which no current OpenSSH
/// client needs (and which do not matter with the AEAD ciphers).
pub fn preferred() -> Preferred {
    Preferred { kex: Cow::Borrowed(KEX), cipher: Cow::Borrowed(CIPHERS), ..Preferred::default() }
}
