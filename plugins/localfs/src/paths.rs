//! From the contract's paths to what `wasi:filesystem` is given, and back.
//!
//! Every call goes through the one preopened directory with a relative
//! path: `/a/b` is `a/b`, `/` is `.`. Names starting with
//! [`UPLOAD_PREFIX`] belong to uploads in progress and are out of a
//! client's reach. Symbolic links are stored relative to the link's
//! directory, so they mean the same inside the sandbox and on the host.

use wasftp_sdk::prelude::*;

/// Temporary upload files are named this followed by random hex.
pub const UPLOAD_PREFIX: &str = ".wasftp-upload-";
/// Random bytes in an upload's name (hex, twice as many characters).
pub const UPLOAD_RANDOM_BYTES: usize = 16;

/// A client's path, normalised, refused when it names an upload in
/// progress (any segment with the reserved prefix: a temporary file is
/// never a directory, so nothing below one is anyone's either).
pub fn client_path(path: &str) -> Result<String> {
    let path = path::normalize(path)?;
    if path::segments(&path).any(is_reserved_name) {
        return Err(Error::PermissionDenied);
    }
    Ok(path)
}

/// Whether `name` is in the namespace of temporary upload files.
pub fn is_reserved_name(name: &str) -> bool {
    name.starts_with(UPLOAD_PREFIX)
}

/// What the preopened directory is given for a normalised contract path.
pub fn relative(path: &str) -> &str {
    match path.trim_start_matches('/') {
        "" => ".",
        rest => rest,
    }
}

/// `name` in the directory `dir`, both in contract form.
pub fn child(dir: &str, name: &str) -> String {
    if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") }
}

/// The name of a new temporary upload file from random bytes.
pub fn upload_name(random: &[u8; UPLOAD_RANDOM_BYTES]) -> String {
    let mut name = String::with_capacity(UPLOAD_PREFIX.len() + 2 * UPLOAD_RANDOM_BYTES);
    name.push_str(UPLOAD_PREFIX);
    for byte in random {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

/// Whether `name` is one [`upload_name`] makes (not just any reserved name).
pub fn is_upload_name(name: &str) -> bool {
    name.strip_prefix(UPLOAD_PREFIX).is_some_and(|hex| {
        hex.len() == 2 * UPLOAD_RANDOM_BYTES && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The temporary file a recovery token names, checked: a normalised path
/// whose last segment is an upload's name, so a token can remove nothing else.
pub fn upload_from_token(token: &str) -> Result<String> {
    let path = path::normalize(token)?;
    if token != path || !path::file_name(&path).is_some_and(is_upload_name) {
        return Err(invalid("not a recovery token of this plugin"));
    }
    Ok(path)
}

/// What a symbolic link in `link_dir` stores to point at `target` (both
/// normalised contract paths, `link_dir` free of symbolic links): the way
/// from the one to the other, `..` up to where they part, then down.
pub fn link_text(link_dir: &str, target: &str) -> String {
    let from: Vec<&str> = path::segments(link_dir).collect();
    let to: Vec<&str> = path::segments(target).collect();
    let shared = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let ups = std::iter::repeat_n("..", from.len() - shared);
    let text: Vec<&str> = ups.chain(to[shared..].iter().copied()).collect();
    if text.is_empty() { ".".into() } else { text.join("/") }
}

/// Where a link in `link_dir` storing `text` points, as a contract path;
/// permission-denied for what the sandbox would refuse too: an absolute
/// target (the host's own root) or one climbing above `/`.
pub fn link_target(link_dir: &str, text: &str) -> Result<String> {
    if text.starts_with('/') {
        return Err(Error::PermissionDenied);
    }
    if text.is_empty() || text.contains('\0') {
        return Err(io_error("an empty or unreadable link target"));
    }
    let mut segments: Vec<&str> = path::segments(link_dir).collect();
    for segment in text.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(Error::PermissionDenied)?;
            }
            name => segments.push(name),
        }
    }
    Ok(format!("/{}", segments.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_paths_become_relative_ones() {
        assert_eq!(relative("/"), ".");
        assert_eq!(relative("/a"), "a");
        assert_eq!(relative("/a/b c/d"), "a/b c/d");
        assert_eq!(child("/", "a"), "/a");
        assert_eq!(child("/a", "b"), "/a/b");
    }

    #[test]
    fn client_paths_are_normalised_and_never_reach_an_upload() {
        assert_eq!(client_path("/a//b/").unwrap(), "/a/b");
        assert_eq!(client_path("/").unwrap(), "/");
        assert!(matches!(client_path("/a/../b"), Err(Error::InvalidInput(_))));
        for reserved in ["/.wasftp-upload-0123", "/a/.wasftp-upload-", "/.wasftp-upload-x/y"] {
            assert_eq!(client_path(reserved), Err(Error::PermissionDenied), "{reserved}");
        }
        assert!(client_path("/a/.wasftp-uploads").is_ok(), "only the prefix is reserved");
        assert!(client_path("/a/x.wasftp-upload-1").is_ok());
    }

    #[test]
    fn upload_names_are_the_prefix_and_hex() {
        let name = upload_name(&[0xab; UPLOAD_RANDOM_BYTES]);
        assert_eq!(name, format!("{UPLOAD_PREFIX}{}", "ab".repeat(UPLOAD_RANDOM_BYTES)));
        assert!(is_upload_name(&name));
        assert!(is_reserved_name(&name));
        assert!(!is_upload_name(".wasftp-upload-abc"), "too short");
        assert!(!is_upload_name(&format!("{UPLOAD_PREFIX}{}", "AB".repeat(UPLOAD_RANDOM_BYTES))));
        assert!(!is_upload_name(&format!("x{name}")));
    }

    #[test]
    fn recovery_tokens_name_only_uploads() {
        let name = upload_name(&[7; UPLOAD_RANDOM_BYTES]);
        let token = format!("/dir/{name}");
        assert_eq!(upload_from_token(&token).unwrap(), token);
        assert_eq!(upload_from_token(&format!("/{name}")).unwrap(), format!("/{name}"));
        for bad in ["/dir/file", "/", "", "/a/../b", &format!("dir/{name}"), &format!("/dir//{name}"), &format!("/dir/{name}/")] {
            assert!(matches!(upload_from_token(bad), Err(Error::InvalidInput(_))), "{bad:?}");
        }
    }

    #[test]
    fn links_are_stored_relative_to_their_directory() {
        assert_eq!(link_text("/a", "/docs/x"), "../docs/x");
        assert_eq!(link_text("/a", "/"), "..");
        assert_eq!(link_text("/", "/"), ".");
        assert_eq!(link_text("/", "/docs/x"), "docs/x");
        assert_eq!(link_text("/a/b", "/a/b"), ".");
        assert_eq!(link_text("/a/b", "/a/b/c"), "c");
        assert_eq!(link_text("/a/b/c", "/a/x"), "../../x");
        assert_eq!(link_text("/ab", "/a/b"), "../a/b", "segments, not characters");
    }

    #[test]
    fn stored_links_read_back_as_contract_paths() {
        assert_eq!(link_target("/a", "../docs/x").unwrap(), "/docs/x");
        assert_eq!(link_target("/", "sub/x").unwrap(), "/sub/x");
        assert_eq!(link_target("/a", "..").unwrap(), "/");
        assert_eq!(link_target("/", ".").unwrap(), "/");
        assert_eq!(link_target("/a", "./b//c/").unwrap(), "/a/b/c");
        assert_eq!(link_target("/a/b", "x/../../y").unwrap(), "/a/y");
        assert_eq!(link_target("/", ".."), Err(Error::PermissionDenied), "above the root");
        assert_eq!(link_target("/a", "../../etc"), Err(Error::PermissionDenied));
        assert_eq!(link_target("/a", "/etc"), Err(Error::PermissionDenied), "absolute on disk");
        assert!(matches!(link_target("/a", ""), Err(Error::Io(_))));
    }

    #[test]
    fn a_link_made_reads_back_as_its_target() {
        for (dir, target) in [("/a", "/docs/x"), ("/", "/"), ("/a/b/c", "/a/x"), ("/x", "/x/y/z"), ("/p/q", "/")] {
            assert_eq!(link_target(dir, &link_text(dir, target)).unwrap(), target, "{dir} -> {target}");
        }
    }
}
