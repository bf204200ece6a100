//! Client paths to plugin paths. The client sees its root as `/`; `..` stops
//! there, so no path escapes the user's root (their home in the plugin).

/// Normalises a client path against `/`: collapses `.`, `..` (clamped at
/// the root) and repeated separators. `None` for a path with NUL.
pub fn normalize(client_path: &str) -> Option<String> {
    if client_path.contains('\0') {
        return None;
    }
    collapse(client_path, true)
}

/// A plugin's absolute path with `.` and `..` resolved; `None` when it is
/// not absolute or climbs above `/` (it could then name anything).
pub fn normalize_absolute(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    collapse(path, false)
}

/// `path` from `/` with `.`, `..` and repeated separators resolved; a `..`
/// at the root stays there (`clamp_at_root`) or gives `None`.
fn collapse(path: &str, clamp_at_root: bool) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() && !clamp_at_root {
                    return None;
                }
            }
            name => parts.push(name),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Whether a client path ends as only a directory's may (`a/`, `a/.`):
/// its last name must then be a directory, a symlink followed to one.
pub fn ends_as_directory(client_path: &str) -> bool {
    client_path.len() > 1 && (client_path.ends_with('/') || client_path.ends_with("/."))
}

/// The directory holding a plugin path (`/` for a name at the root).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Length in bytes of the longest name in a normalised path.
pub fn longest_segment(path: &str) -> usize {
    path.split('/').map(str::len).max().unwrap_or(0)
}

/// Maps a normalised client path into the plugin namespace under `root`.
pub fn to_plugin(root: &str, client: &str) -> String {
    match (root, client) {
        ("/", _) => client.to_string(),
        (_, "/") => root.to_string(),
        _ => format!("{root}{client}"),
    }
}

/// Maps a plugin path back to what the client sees; `None` when it is not
/// an absolute path under `root`.
pub fn to_client(root: &str, plugin: &str) -> Option<String> {
    if !plugin.starts_with('/') {
        return None;
    }
    if root == "/" {
        return Some(plugin.to_string());
    }
    match plugin.strip_prefix(root)? {
        "" => Some("/".into()),
        rest if rest.starts_with('/') => Some(rest.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_a_plugin_path() {
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
    }

    #[test]
    fn a_trailing_slash_or_dot_asks_for_a_directory() {
        for path in ["latest/", "/a/b/", "a/.", "/a/./", "./"] {
            assert!(ends_as_directory(path), "{path}");
        }
        for path in ["/", "latest", "/a/b", ".", "a/..", "a.", "a/.x"] {
            assert!(!ends_as_directory(path), "{path}");
        }
    }

    #[test]
    fn dot_dot_never_escapes_root() {
        assert_eq!(normalize("../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(normalize("/a/../../b").unwrap(), "/b");
        assert_eq!(normalize(".").unwrap(), "/");
        assert_eq!(normalize("").unwrap(), "/");
        assert_eq!(normalize("a//b/./c/").unwrap(), "/a/b/c");
        assert!(normalize("a\0b").is_none());
    }

    #[test]
    fn plugin_link_targets_are_resolved_before_confinement() {
        assert_eq!(normalize_absolute("/home/alice/../bob/x").as_deref(), Some("/home/bob/x"));
        assert_eq!(to_client("/home/alice", &normalize_absolute("/home/alice/../bob/x").unwrap()), None);
        assert_eq!(normalize_absolute("/../etc"), None);
        assert_eq!(normalize_absolute("relative"), None);
    }

    #[test]
    fn plugin_paths_live_under_root() {
        assert_eq!(to_plugin("/", "/x"), "/x");
        assert_eq!(to_plugin("/home/alice", "/"), "/home/alice");
        assert_eq!(to_plugin("/home/alice", "/x/y"), "/home/alice/x/y");
        assert_eq!(to_client("/home/alice", "/home/alice/x/y").as_deref(), Some("/x/y"));
        assert_eq!(to_client("/home/alice", "/home/alice").as_deref(), Some("/"));
        assert_eq!(to_client("/home/alice", "/home/alicebob/x"), None);
        assert_eq!(to_client("/home/alice", "x"), None);
        assert_eq!(to_client("/", "/x").as_deref(), Some("/x"));
    }
}
