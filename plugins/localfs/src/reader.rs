//! Downloads: an open file, read by offset. What it reads stays the file
//! opened, whatever is renamed over its name meanwhile (every upload is).

use wasftp_sdk::prelude::*;
use wasi::filesystem::types::Descriptor;

use crate::errors::fs_error;

/// Most bytes one `read` returns, whatever it asks (a shorter read is
/// not the end: the host asks again).
const MAX_READ: u32 = 8 << 20;

pub struct LocalReader {
    file: Descriptor,
    /// As at open: the version pinned and its size.
    info: FileInfo,
}

impl LocalReader {
    pub fn new(file: Descriptor, info: FileInfo) -> LocalReader {
        LocalReader { file, info }
    }
}

impl GuestReader for LocalReader {
    fn info(&self) -> FileInfo {
        self.info.clone()
    }

    fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        let want = u64::from(len.min(MAX_READ));
        let mut data: Vec<u8> = Vec::new();
        // The host answers one read with 64 KiB at most: a larger one takes several.
        while (data.len() as u64) < want {
            let Some(at) = offset.checked_add(data.len() as u64) else { break };
            let asked = want - data.len() as u64;
            let (bytes, end) = self.file.read(asked, at).map_err(fs_error)?;
            let got = bytes.len() as u64;
            if data.is_empty() {
                data = bytes;
            } else {
                data.try_reserve(bytes.len()).map_err(|_| Error::NoSpace)?;
                data.extend_from_slice(&bytes);
            }
            if !read_on(asked, got, end, at.saturating_add(got), self.info.size) {
                break;
            }
        }
        Ok(data)
    }
}

/// Whether to read again after a read that asked `asked` bytes, got `got`
/// and reached `reached`: not at the end (`end`, or nothing read), and not
/// after a short read at or past the size the file had at open, which is
/// its end unless it grew since. That saves a host call on the last read
/// of nearly every file; a file that did grow loses nothing, since only an
/// empty answer is the end for the host, which asks again from there.
pub fn read_on(asked: u64, got: u64, end: bool, reached: u64, size_at_open: u64) -> bool {
    let at_known_end = got < asked && reached >= size_at_open;
    !(end || got == 0 || at_known_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 256 << 10;
    /// What the host gives one read at most.
    const HOST_READ: u64 = 64 << 10;

    #[test]
    fn a_small_file_is_read_whole_in_one_call() {
        // 4 KiB asked as a 256 KiB chunk: all of it, and its end, at once.
        assert!(!read_on(CHUNK, 4096, false, 4096, 4096));
        assert!(!read_on(CHUNK, 0, true, 4096, 4096), "at the end");
    }

    #[test]
    fn a_large_file_is_read_on_until_the_chunk_is_full() {
        // The host's 64 KiB limit is a short read, but not at the end.
        assert!(read_on(CHUNK, HOST_READ, false, HOST_READ, 1 << 30));
        assert!(read_on(CHUNK - HOST_READ, HOST_READ, false, 2 * HOST_READ, 1 << 30));
        // Exactly at the size known: the end (the host asks again if it grew).
        assert!(!read_on(CHUNK, HOST_READ, false, HOST_READ, HOST_READ));
    }
}
