//! `max-file-size`: the largest file the plugin writes. The host, told
//! through `capabilities.max-file-size`, refuses a WRITE or size change
//! past it before asking; the plugin checks again for whatever reaches it
//! anyway, and refuses the one cost the host cannot see: the copy of the
//! whole current file that a write keeping the content starts with.

use wasftp_sdk::prelude::*;

/// That pending content may end at `end`: `no-space` past `max`, the
/// contract's answer for a size the plugin cannot hold.
pub fn content_fits(max: Option<u64>, end: u64) -> Result<()> {
    match max {
        Some(max) if end > max => Err(Error::NoSpace),
        _ => Ok(()),
    }
}

/// That a file of `size` bytes may be copied (the base of a write that
/// keeps the content, the source of a server-side copy): refused past
/// `max` with a message that says why, before anything is copied.
pub fn base_fits(max: Option<u64>, size: u64) -> Result<()> {
    match max {
        Some(max) if size > max => {
            Err(io_error(format!("the file is larger than {max} bytes, the most this storage takes (max-file-size)")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_may_reach_the_limit_but_not_pass_it() {
        assert_eq!(content_fits(None, u64::MAX), Ok(()));
        assert_eq!(content_fits(Some(100), 100), Ok(()));
        assert_eq!(content_fits(Some(100), 101), Err(Error::NoSpace));
    }

    #[test]
    fn a_base_past_the_limit_is_refused_with_the_reason() {
        assert_eq!(base_fits(None, u64::MAX), Ok(()));
        assert_eq!(base_fits(Some(100), 100), Ok(()));
        assert!(matches!(base_fits(Some(100), 101), Err(Error::Io(why)) if why.contains("100 bytes") && why.contains("max-file-size")));
    }
}
