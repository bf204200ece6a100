//! Resolving symbolic links the way the filesystem will, in the contract's
//! namespace. A link is stored relative to its directory, and `..` in it
//! climbs from where the directory really is: through `/a -> sub/deep`, a
//! link `/a/l -> ../x` points at `/sub/x`, not `/x`. So the directory a
//! link is read or made in is first resolved component by component.

use wasftp_sdk::prelude::*;

use crate::paths::link_target;

/// What one path is, as far as resolving goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A symbolic link, with the text it stores.
    Link(String),
    /// Anything else that exists.
    Present,
    /// Nothing there (what follows it is taken as it is written).
    Missing,
}

/// Links followed in one resolution at most, as Linux's ELOOP.
pub const MAX_LINK_HOPS: usize = 40;

/// Error for more links than [`MAX_LINK_HOPS`].
pub fn too_many_links() -> Error {
    io_error("too many levels of symbolic links")
}

/// `path` with every symbolic link in it followed, the last segment
/// included; `lookup` tells what a link-free contract path is (it sees
/// only paths whose every directory has been resolved already). Absolute
/// links and climbs above `/` are permission-denied, as in the sandbox.
pub fn resolve(path: &str, mut lookup: impl FnMut(&str) -> Result<Node>) -> Result<String> {
    let mut resolved = String::from("/");
    // Segments still to walk, the next one last.
    let mut pending: Vec<String> = path::segments(path).map(String::from).collect();
    pending.reverse();
    let mut hops = 0;
    let mut missing = false;
    while let Some(segment) = pending.pop() {
        if segment == "." {
            continue;
        }
        if segment == ".." {
            resolved = path::parent(&resolved).ok_or(Error::PermissionDenied)?.to_string();
            continue;
        }
        let candidate = crate::paths::child(&resolved, &segment);
        // Below something missing there is nothing to look up.
        let node = if missing { Node::Missing } else { lookup(&candidate)? };
        match node {
            Node::Present => resolved = candidate,
            Node::Missing => {
                missing = true;
                resolved = candidate;
            }
            Node::Link(text) => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(too_many_links());
                }
                // Checked as a whole (absolute, empty), then walked segment by segment.
                link_target(&resolved, &text)?;
                pending.extend(text.split('/').filter(|s| !s.is_empty()).rev().map(String::from));
            }
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A tree given as links; every other path in `present` exists.
    fn tree<'a>(links: &'a [(&str, &str)], present: &'a [&str]) -> impl FnMut(&str) -> Result<Node> + 'a {
        let links: HashMap<&str, &str> = links.iter().copied().collect();
        move |p: &str| {
            Ok(match links.get(p) {
                Some(text) => Node::Link(text.to_string()),
                None if present.contains(&p) => Node::Present,
                None => Node::Missing,
            })
        }
    }

    #[test]
    fn paths_without_links_are_themselves() {
        assert_eq!(resolve("/", tree(&[], &[])).unwrap(), "/");
        assert_eq!(resolve("/a/b", tree(&[], &["/a", "/a/b"])).unwrap(), "/a/b");
        assert_eq!(resolve("/a/new/deeper", tree(&[], &["/a"])).unwrap(), "/a/new/deeper");
    }

    #[test]
    fn links_are_followed_from_where_they_really_are() {
        let links = [("/a", "sub/deep")];
        let present = ["/sub", "/sub/deep", "/sub/x"];
        assert_eq!(resolve("/a", tree(&links, &present)).unwrap(), "/sub/deep");
        assert_eq!(resolve("/a/..", tree(&links, &present)).unwrap(), "/sub");
        let chained = [("/l1", "l2"), ("/l2", "d/l3"), ("/d/l3", "../target")];
        assert_eq!(resolve("/l1", tree(&chained, &["/d", "/target"])).unwrap(), "/target");
    }

    #[test]
    fn what_the_sandbox_refuses_is_refused() {
        assert_eq!(resolve("/l", tree(&[("/l", "/etc")], &[])), Err(Error::PermissionDenied));
        assert_eq!(resolve("/l", tree(&[("/l", "../x")], &[])), Err(Error::PermissionDenied));
        assert_eq!(resolve("/d/l", tree(&[("/d/l", "../../x")], &["/d"])), Err(Error::PermissionDenied));
        let looped = [("/a", "b"), ("/b", "a")];
        assert_eq!(resolve("/a", tree(&looped, &[])), Err(too_many_links()));
    }

    #[test]
    fn lookups_stop_below_a_missing_segment() {
        let mut asked = Vec::new();
        let got = resolve("/gone/x/y", |p: &str| {
            asked.push(p.to_string());
            Ok(Node::Missing)
        })
        .unwrap();
        assert_eq!(got, "/gone/x/y");
        assert_eq!(asked, ["/gone"]);
    }
}
