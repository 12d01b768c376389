//! An AF_XDP socket on one queue of one interface: a packet buffer area (the UMEM) shared
//! with the kernel, and four single-producer single-consumer rings of descriptors into it:
//! fill (buffers the kernel may receive into), rx (what it received), tx (what to send),
//! completion (sent buffers coming back). Copy mode, which every driver (veth included)
//! supports; `need_wakeup`, so the kernel is only kicked when it asks.
//!
//! Written on the kernel's ABI (`linux/if_xdp.h`, through `libc`) rather than a crate: it
//! is a few hundred lines, and keeps the project's licence terms simple.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

/// Bytes per packet buffer: a page, the most a copy-mode socket takes. It holds a frame of
/// RoCE's 2048-byte MTU with every header (on links of MTU 2200 and up); 4096 of payload
/// would need more than a page.
pub const FRAME_SIZE: u32 = 4096;

/// Sizes of a socket's rings and buffer area.
#[derive(Clone, Copy, Debug)]
pub struct XskConfig {
    /// Packet buffers in the UMEM: half for receiving, half for sending.
    pub frames: u32,
    /// Descriptors per ring (a power of two).
    pub ring_size: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        // 4096 buffers of 4 KiB: 16 MiB per socket; rings of 2048 entries hold what one
        // side's half of the buffers can have in flight.
        XskConfig {
            frames: 4096,
            ring_size: 2048,
        }
    }
}

/// A memory mapping, unmapped when dropped.
pub(crate) struct Mapping {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) len: usize,
}

impl Mapping {
    pub(crate) fn new(fd: Option<RawFd>, len: usize, offset: i64) -> io::Result<Mapping> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        // SAFETY: a fresh mapping at an address the kernel picks; arguments checked by it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned null"),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping this value made, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One ring as the kernel lays it out: producer and consumer indexes, flags, descriptors.
struct Ring<T> {
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    /// Our copy of the index we advance (producer or consumer, by the ring's direction).
    cached: u32,
}

impl<T: Copy> Ring<T> {
    /// Maps the ring of `size` entries at `pgoff` of `fd`, laid out as `off` says.
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, size: u32, pgoff: i64) -> io::Result<Self> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        let map = Mapping::new(Some(fd), len, pgoff)?;
        let base = map.ptr.as_ptr();
        // SAFETY: the offsets the kernel gave for this ring, inside the mapping of `len`
        // bytes; the index words are u32s the kernel aligns.
        let (producer, consumer, flags, descs) = unsafe {
            (
                base.add(off.producer as usize).cast::<AtomicU32>(),
                base.add(off.consumer as usize).cast::<AtomicU32>(),
                base.add(off.flags as usize).cast::<AtomicU32>(),
                base.add(off.desc as usize).cast::<T>(),
            )
        };
        Ok(Ring {
            _map: map,
            producer,
            consumer,
            flags,
            descs,
            mask: size - 1,
            cached: 0,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping for the ring's lifetime.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as above.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: masked into the ring's `mask + 1` entries.
        unsafe { self.descs.add((index & self.mask) as usize) }
    }

    /// Producer side: entries free to fill.
    fn free(&self) -> u32 {
        let consumer = self.consumer().load(Ordering::Acquire);
        self.mask + 1 - self.cached.wrapping_sub(consumer)
    }

    /// Producer side: puts `v` in the next entry (publish with [`Ring::publish`]).
    fn push(&mut self, v: T) {
        // SAFETY: an entry the consumer gave back (the caller checked `free`).
        unsafe { self.slot(self.cached).write(v) };
        self.cached = self.cached.wrapping_add(1);
    }

    fn publish(&self) {
        self.producer().store(self.cached, Ordering::Release);
    }

    /// Consumer side: entries ready to read.
    fn ready(&self) -> u32 {
        self.producer()
            .load(Ordering::Acquire)
            .wrapping_sub(self.cached)
    }

    /// Consumer side: the next entry (give it back with [`Ring::release`]).
    fn pop(&mut self) -> T {
        // SAFETY: an entry the producer published (the caller checked `ready`).
        let v = unsafe { self.slot(self.cached).read() };
        self.cached = self.cached.wrapping_add(1);
        v
    }

    fn release(&self) {
        self.consumer().store(self.cached, Ordering::Release);
    }
}

/// An AF_XDP socket bound to one queue of one interface.
pub struct XskSocket {
    fd: OwnedFd,
    umem: Mapping,
    fill: Ring<u64>,
    completion: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    /// Buffers of the sending half not in the kernel's hands.
    free_tx: Vec<u64>,
}

// SAFETY: the socket owns its mappings; the raw pointers into them are only used through
// `&mut self`, so moving it to another thread moves sole access with it.
unsafe impl Send for XskSocket {}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn setsockopt<T>(fd: RawFd, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size given.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
}

/// How often, and how long apart, binding is tried while the queue is still held by a
/// socket that just closed (the kernel releases it asynchronously).
/// Kicks per flush at most: a full ring (2048 descriptors) at the kernel's 32 frames per
/// kick, so one flush never spins on a device that stays busy.
const MAX_KICKS: u32 = 64;
const BIND_TRIES: u32 = 50;
const BIND_RETRY: Duration = Duration::from_millis(20);

impl XskSocket {
    /// Opens a socket on queue `queue` of interface `ifindex` (in the calling thread's
    /// network namespace).
    pub fn open(ifindex: u32, queue: u32, config: XskConfig) -> io::Result<XskSocket> {
        assert!(config.ring_size.is_power_of_two() && config.frames >= 2);
        // SAFETY: plain syscall; the descriptor is owned at once.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        check(raw)?;
        // SAFETY: a descriptor just returned to us, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = config.frames as usize * FRAME_SIZE as usize;
        let umem = Mapping::new(None, len, 0)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: len as u64,
            chunk_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::XDP_UMEM_REG, &reg)?;
        for name in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(raw, name, &config.ring_size)?;
        }
        // SAFETY: zeroed plain data, filled by the kernel.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` is writable for `optlen` bytes.
        check(unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&raw mut off).cast(),
                &mut optlen,
            )
        })?;
        let size = config.ring_size;
        let mut fill = Ring::map(raw, &off.fr, size, libc::XDP_UMEM_PGOFF_FILL_RING as i64)?;
        let completion = Ring::map(
            raw,
            &off.cr,
            size,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64,
        )?;
        let mut rx = Ring::map(raw, &off.rx, size, libc::XDP_PGOFF_RX_RING)?;
        let mut tx = Ring::map(raw, &off.tx, size, libc::XDP_PGOFF_TX_RING)?;
        // Our indexes start where the kernel's do.
        fill.cached = fill.producer().load(Ordering::Relaxed);
        tx.cached = tx.producer().load(Ordering::Relaxed);
        rx.cached = rx.consumer().load(Ordering::Relaxed);
        let mut completion = completion;
        completion.cached = completion.consumer().load(Ordering::Relaxed);

        // The first half of the buffers receive, the second half send.
        let half = config.frames / 2;
        for i in 0..half.min(size) {
            fill.push(u64::from(i) * u64::from(FRAME_SIZE));
        }
        fill.publish();
        let free_tx = (half..config.frames)
            .map(|i| u64::from(i) * u64::from(FRAME_SIZE))
            .collect();

        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        let mut tries = 0;
        loop {
            // SAFETY: `addr` is a valid sockaddr_xdp of the size given.
            let r = unsafe {
                libc::bind(
                    raw,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            match check(r) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < BIND_TRIES => {
                    tries += 1;
                    std::thread::sleep(BIND_RETRY);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(XskSocket {
            fd,
            umem,
            fill,
            completion,
            rx,
            tx,
            free_tx,
        })
    }

    fn frame(&self, addr: u64, len: usize) -> &[u8] {
        assert!(addr as usize + len <= self.umem.len);
        // SAFETY: inside the UMEM, a buffer the kernel handed to us (rx) and not back yet.
        unsafe { std::slice::from_raw_parts(self.umem.ptr.as_ptr().add(addr as usize), len) }
    }

    /// Hands every received frame to `each`, then gives the buffers back to the kernel.
    /// Returns how many there were.
    pub fn receive(&mut self, mut each: impl FnMut(&[u8])) -> usize {
        let n = self.rx.ready();
        if n == 0 {
            return 0;
        }
        for _ in 0..n {
            let d = self.rx.pop();
            each(self.frame(d.addr, d.len as usize));
            // Back to the start of its buffer (the kernel may have received at an offset).
            // The fill ring is as large as the receive half: there is always room.
            self.fill.push(d.addr - d.addr % u64::from(FRAME_SIZE));
        }
        self.rx.release();
        self.fill.publish();
        if self.fill.needs_wakeup() {
            self.wake_rx();
        }
        n as usize
    }

    /// Takes back buffers the kernel has sent.
    fn reclaim(&mut self) {
        let n = self.completion.ready();
        for _ in 0..n {
            let a = self.completion.pop();
            self.free_tx.push(a);
        }
        self.completion.release();
    }

    /// Queues `frame` for sending; `false` when no buffer or ring entry is free (send
    /// with [`XskSocket::flush`] and try again).
    pub fn send(&mut self, frame: &[u8]) -> bool {
        assert!(frame.len() <= FRAME_SIZE as usize);
        if self.free_tx.is_empty() {
            self.reclaim();
        }
        if self.tx.free() == 0 {
            return false;
        }
        let Some(addr) = self.free_tx.pop() else {
            return false;
        };
        // SAFETY: a sending buffer we own (not in any ring), inside the UMEM.
        unsafe {
            std::ptr::copy_nonoverlapping(
                frame.as_ptr(),
                self.umem.ptr.as_ptr().add(addr as usize),
                frame.len(),
            )
        };
        self.tx.push(libc::xdp_desc {
            addr,
            len: frame.len() as u32,
            options: 0,
        });
        true
    }

    /// Frames queued for sending the kernel has not taken yet.
    pub fn unsent(&self) -> u32 {
        self.tx
            .cached
            .wrapping_sub(self.tx.consumer().load(Ordering::Acquire))
    }

    /// Publishes what [`XskSocket::send`] queued and kicks the kernel until it has taken
    /// it all (copy mode sends only when asked, and at most 32 frames per kick).
    pub fn flush(&mut self) -> io::Result<()> {
        self.tx.publish();
        let mut kicks = 0;
        while self.unsent() > 0 && kicks < MAX_KICKS {
            kicks += 1;
            // SAFETY: a zero-length send on our own socket: the kernel's "transmit" signal.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // More than one kick's worth: kick again.
                    Some(libc::EAGAIN) => {}
                    // The device is busy or out of buffers: what is queued goes at the
                    // next flush.
                    Some(libc::EBUSY | libc::ENOBUFS) => break,
                    _ => return Err(e),
                }
            }
            self.reclaim();
        }
        self.reclaim();
        Ok(())
    }

    fn wake_rx(&self) {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) };
    }

    /// Waits up to `timeout` for something to receive.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        if self.rx.ready() > 0 {
            return Ok(true);
        }
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
        check(r)?;
        Ok(r > 0)
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
