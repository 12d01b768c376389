//! Shared memory between an application and the worker: memory file descriptors (memfd)
//! mapped by both, handed over a Unix socket.

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

use crate::xsk::Mapping;

/// A memfd mapped read-write into this process.
pub struct Shared {
    fd: OwnedFd,
    map: Mapping,
}

// SAFETY: the mapping is owned; what is shared with other processes is accessed only
// through atomics and the rings' ownership protocol, or as plain bytes.
unsafe impl Send for Shared {}
// SAFETY: as above: `&Shared` hands out raw memory only to code that synchronises on it.
unsafe impl Sync for Shared {}

impl Shared {
    /// A new memfd of `len` bytes (zeroed), named `name` (shown in /proc/PID/fd).
    pub fn create(name: &CStr, len: usize) -> io::Result<Shared> {
        // SAFETY: plain syscall with a valid C string; the descriptor is owned at once.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just returned to us.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on our descriptor.
        if unsafe { libc::ftruncate(raw, len as libc::off_t) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Self::map(fd)
    }

    /// Maps a memfd received from another process, as long as it is.
    pub fn map(fd: OwnedFd) -> io::Result<Shared> {
        // SAFETY: zeroed plain data filled by fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is writable.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let len = st.st_size as usize;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty memory file",
            ));
        }
        let map = Mapping::new(Some(fd.as_raw_fd()), len, 0)?;
        Ok(Shared { fd, map })
    }

    pub fn len(&self) -> usize {
        self.map.len
    }

    pub fn is_empty(&self) -> bool {
        self.map.len == 0
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr.as_ptr()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: our descriptor, open while `self` lives.
        unsafe { BorrowedFd::borrow_raw(self.fd.as_raw_fd()) }
    }

    /// Copies `out.len()` bytes at `offset` out (bounds checked).
    pub fn read(&self, offset: u64, out: &mut [u8]) {
        let at = self.checked(offset, out.len());
        // SAFETY: inside the mapping (checked); the other side may write concurrently,
        // which makes the bytes read unspecified but never unsound for plain bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_ptr().add(at), out.as_mut_ptr(), out.len())
        };
    }

    /// Copies `data` in at `offset` (bounds checked).
    pub fn write(&self, offset: u64, data: &[u8]) {
        let at = self.checked(offset, data.len());
        // SAFETY: as in `read`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(at), data.len()) };
    }

    fn checked(&self, offset: u64, len: usize) -> usize {
        let at = usize::try_from(offset).expect("offset fits");
        assert!(
            at.checked_add(len).is_some_and(|end| end <= self.map.len),
            "{len} bytes at {offset} outside {} bytes of shared memory",
            self.map.len
        );
        at
    }
}

/// Sends `data` with descriptors `fds` over Unix socket `sock`.
pub fn send_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    let space = cmsg_space(fds.len());
    let mut control = vec![0u8; space];
    // SAFETY: zeroed plain data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is sized for one header with `fds.len()` descriptors.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
        }
    }
    // SAFETY: `msg` points at live buffers for the call.
    if unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn cmsg_space(n: usize) -> usize {
    // SAFETY: pure arithmetic macro.
    unsafe { libc::CMSG_SPACE((n * size_of::<RawFd>()) as u32) as usize }
}

/// Receives one message into `buf` with up to `max_fds` descriptors: its length and the
/// descriptors (owned). A length of 0 is the peer closing.
pub fn recv_fds(sock: RawFd, buf: &mut [u8], max_fds: usize) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let space = cmsg_space(max_fds.max(1));
    let mut control = vec![0u8; space];
    // SAFETY: zeroed plain data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at live buffers for the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..bytes / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, fds))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_memfd_handed_over_a_socket_is_the_same_memory() {
        let a = Shared::create(c"xnic-test", 8192).unwrap();
        let (s1, s2) = UnixStream::pair().unwrap();
        send_fds(s1.as_raw_fd(), b"region", &[a.fd().as_raw_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, mut fds) = recv_fds(s2.as_raw_fd(), &mut buf, 4).unwrap();
        assert_eq!(&buf[..n], b"region");
        let b = Shared::map(fds.pop().unwrap()).unwrap();
        assert_eq!(b.len(), 8192);
        a.write(100, b"hello");
        let mut out = [0u8; 5];
        b.read(100, &mut out);
        assert_eq!(&out, b"hello");
        assert_ne!(a.as_ptr(), b.as_ptr());
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn access_past_the_end_is_refused() {
        let a = Shared::create(c"xnic-test", 4096).unwrap();
        a.write(4090, &[0; 8]);
    }
}
