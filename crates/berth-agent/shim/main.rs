//! `berth-shim`: the per-task shim (DESIGN §5), a freestanding Linux x86-64 program.
//!
//! One runs for every task, so it is built to cost almost nothing: no libc, no std, raw system
//! calls, a static non-PIE executable of a few KiB (`build.rs` compiles it with `rustc` and the
//! agent embeds it, see `berth_agent::shim`). Its resident set is a few dozen KiB where a shim
//! linked against glibc costs a megabyte.
//!
//! The same executable is also a container's init process when the container definition asks
//! for one (`berth-shim -- <command>`, see `init`).
//!
//! Invocation (by the agent): `berth-shim shim <task-dir> <runtime> [<runtime copy>]`, in a
//! session of its own, with a listening Unix stream socket as fd 0 (the agent binds it at
//! `<task-dir>/ctl/shim.sock`, directory 0700, socket 0600). `<runtime copy>` is the
//! agent's sealed in-memory copy of the runtime binary (`/proc/<pid>/fd/<n>`, see the agent's
//! `runtime` module); the shim opens it at once (so it outlives the agent) and executes it with
//! `execveat`, falling back to `<runtime>` looked up in `$PATH`. It:
//! - is the child subreaper of the task's containers: it runs `<runtime> run --detach` for each
//!   container on request, and the container's pid 1 becomes its child;
//! - owns each container's stdout and stderr (pipes) and appends every line to `c<idx>/log` as
//!   `<epoch ms> <1|2> <line>\n` (lines longer than 256 KiB are split);
//! - waits for each pid 1 and records `c<idx>/exit` (`{"idx":0,"code":137,"oom":true}`, written
//!   to a temporary file and renamed) once the container's output reached end of file (or 2 s
//!   after pid 1 ended), reading the container cgroups' OOM-kill counters at that moment.
//!
//! Who may talk to it: a connecting process must run as uid 0 or as the shim's own uid
//! (`SO_PEERCRED`); any other connection is closed at once, and the current client keeps its
//! connection. A `start` names the bundle the agent prepared, which must be the task's own
//! `<task-dir>/c<idx>`; any other bundle is refused (`failed`).
//!
//! Protocol (one line per message, fields separated by tabs; a new accepted connection
//! replaces the previous one; what happened while nobody was connected is on disk):
//! - requests: `start <idx> <container-id> <bundle> [<oom-file>...]`, `kill <idx> <signal>`,
//!   `bye` (the shim exits);
//! - events: `started <idx> <pid>`, `failed <idx> <message>` (the runtime's log is in
//!   `c<idx>/runtime.log`), `log <idx>` (new lines in `c<idx>/log`),
//!   `exit <idx> <code> <oom 0|1>` (code: the exit status, or 128 + signal).
#![no_std]
#![no_main]
#![no_builtins]

extern crate alloc;

use alloc::vec::Vec;
use core::arch::{asm, global_asm};

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("berth-shim is written for Linux on x86-64");

/// Longest log line; longer lines are split.
const MAX_LINE: usize = 256 * 1024;
/// How long after pid 1 exits the shim waits for the output pipes to reach end of file.
const DRAIN_WAIT_MS: u64 = 2000;

// ---------------------------------------------------------------------------------------------
// System calls (x86-64 Linux ABI).

mod sys {
    use core::arch::asm;

    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const CLOSE: usize = 3;
    pub const POLL: usize = 7;
    pub const MMAP: usize = 9;
    pub const MUNMAP: usize = 11;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const MREMAP: usize = 25;
    pub const SENDTO: usize = 44;
    pub const GETSOCKOPT: usize = 55;
    pub const GETUID: usize = 102;
    pub const CLONE: usize = 56;
    pub const EXECVE: usize = 59;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const FCNTL: usize = 72;
    pub const RENAME: usize = 82;
    pub const MKDIR: usize = 83;
    pub const PRCTL: usize = 157;
    pub const CLOCK_GETTIME: usize = 228;
    pub const EXIT_GROUP: usize = 231;
    pub const OPENAT: usize = 257;
    pub const ACCEPT4: usize = 288;
    pub const SIGNALFD4: usize = 289;
    pub const DUP3: usize = 292;
    pub const PIPE2: usize = 293;
    pub const EXECVEAT: usize = 322;
    pub const AT_EMPTY_PATH: usize = 0x1000;

    pub const EINTR: isize = 4;
    pub const EAGAIN: isize = 11;
    pub const AT_FDCWD: isize = -100;
    pub const O_RDONLY: usize = 0;
    pub const O_WRONLY: usize = 1;
    pub const O_RDWR: usize = 2;
    pub const O_CREAT: usize = 0o100;
    pub const O_TRUNC: usize = 0o1000;
    pub const O_APPEND: usize = 0o2000;
    pub const O_NONBLOCK: usize = 0o4000;
    pub const O_CLOEXEC: usize = 0o2000000;
    pub const F_GETFL: usize = 3;
    pub const F_SETFL: usize = 4;
    pub const POLLIN: i16 = 1;
    pub const WNOHANG: usize = 1;
    pub const WALL: usize = 0x4000_0000;
    pub const SIGCHLD: usize = 17;
    pub const MSG_NOSIGNAL: usize = 0x4000;
    pub const SOL_SOCKET: usize = 1;
    pub const SO_PEERCRED: usize = 17;
    pub const PR_SET_CHILD_SUBREAPER: usize = 36;

    /// A raw system call with up to six arguments; returns the kernel's value (negative errno
    /// on failure).
    ///
    /// # Safety
    /// The arguments must be valid for system call `n`.
    #[inline(always)]
    pub unsafe fn call(n: usize, a: [usize; 6]) -> isize {
        let r: isize;
        // SAFETY: the caller guarantees the arguments; rcx and r11 are clobbered by `syscall`.
        unsafe {
            asm!("syscall", inlateout("rax") n as isize => r, in("rdi") a[0], in("rsi") a[1],
                 in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
                 lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        r
    }

    /// `call` with fewer arguments.
    #[inline(always)]
    pub unsafe fn c3(n: usize, a: usize, b: usize, c: usize) -> isize {
        // SAFETY: forwarded from the caller.
        unsafe { call(n, [a, b, c, 0, 0, 0]) }
    }

    pub fn exit(code: i32) -> ! {
        loop {
            // SAFETY: exit_group takes a plain integer.
            unsafe { c3(EXIT_GROUP, code as usize, 0, 0) };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Program entry, panics, the symbols the compiler expects, the heap.

global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    let msg = b"berth-shim: internal error\n";
    // SAFETY: writing a static buffer to stderr.
    unsafe { sys::c3(sys::WRITE, 2, msg.as_ptr() as usize, msg.len()) };
    sys::exit(101)
}

/// Referenced by the precompiled `core`/`alloc`; never called with `panic=abort`.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// # Safety
/// C `memcpy` contract.
#[no_mangle]
pub unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees non-overlapping valid ranges.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") d => _, inout("rsi") s => _,
             options(nostack, preserves_flags));
    }
    d
}

/// # Safety
/// C `memmove` contract.
#[no_mangle]
pub unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    if (d as usize) <= (s as usize) || (d as usize) >= (s as usize) + n {
        // SAFETY: a forward copy is correct when the destination starts before the source.
        return unsafe { memcpy(d, s, n) };
    }
    let mut i = n;
    while i > 0 {
        i -= 1;
        // SAFETY: i < n, inside both ranges.
        unsafe { *d.add(i) = *s.add(i) };
    }
    d
}

/// # Safety
/// C `memset` contract.
#[no_mangle]
pub unsafe extern "C" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees a valid range.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") d => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    d
}

/// # Safety
/// C `memcmp` contract.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, inside both ranges.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// # Safety
/// C `bcmp` contract.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

/// The heap: blocks of up to 2 KiB come from 64 KiB arenas in power-of-two size classes with
/// free lists; bigger ones are their own anonymous mappings (grown with mremap).
mod heap {
    use super::sys;
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;

    const CLASSES: usize = 8; // 16 .. 2048 bytes
    const ARENA: usize = 64 * 1024;

    struct State {
        free: [usize; CLASSES],
        bump: usize,
        end: usize,
    }

    pub struct Heap(UnsafeCell<State>);
    // SAFETY: the shim is single-threaded (no threads are ever created).
    unsafe impl Sync for Heap {}

    #[global_allocator]
    static HEAP: Heap = Heap(UnsafeCell::new(State {
        free: [0; CLASSES],
        bump: 0,
        end: 0,
    }));

    fn class(l: &Layout) -> Option<usize> {
        let size = l.size().max(l.align()).max(16);
        if size > 2048 {
            return None;
        }
        Some(size.next_power_of_two().trailing_zeros() as usize - 4)
    }

    fn map(len: usize) -> *mut u8 {
        // SAFETY: an anonymous private mapping.
        let r = unsafe { sys::call(sys::MMAP, [0, len, 3, 0x22, usize::MAX, 0]) };
        if r < 0 {
            core::ptr::null_mut()
        } else {
            r as *mut u8
        }
    }

    fn pages(n: usize) -> usize {
        (n + 4095) & !4095
    }

    unsafe impl GlobalAlloc for Heap {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            // SAFETY: single-threaded; no other reference to the state is live.
            let st = unsafe { &mut *self.0.get() };
            let Some(c) = class(&l) else {
                return map(pages(l.size()));
            };
            if st.free[c] != 0 {
                let p = st.free[c];
                // SAFETY: a free block stores the next free block's address.
                st.free[c] = unsafe { *(p as *const usize) };
                return p as *mut u8;
            }
            let size = 16usize << c;
            let start = (st.bump + size - 1) & !(size - 1);
            if st.bump == 0 || start + size > st.end {
                let a = map(ARENA);
                if a.is_null() {
                    return a;
                }
                st.bump = a as usize;
                st.end = st.bump + ARENA;
                st.bump += size;
                return a;
            }
            st.bump = start + size;
            start as *mut u8
        }

        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: single-threaded; no other reference to the state is live.
            let st = unsafe { &mut *self.0.get() };
            match class(&l) {
                Some(c) => {
                    // SAFETY: the block is at least 16 bytes and ours again.
                    unsafe { *(p as *mut usize) = st.free[c] };
                    st.free[c] = p as usize;
                }
                None => {
                    // SAFETY: a mapping of this length made by `alloc`.
                    unsafe { sys::c3(sys::MUNMAP, p as usize, pages(l.size()), 0) };
                }
            }
        }

        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            let nl = match Layout::from_size_align(new, l.align()) {
                Ok(nl) => nl,
                Err(_) => return core::ptr::null_mut(),
            };
            if class(&l).is_none() && class(&nl).is_none() {
                // SAFETY: remapping our own mapping; MREMAP_MAYMOVE.
                let r = unsafe {
                    sys::call(
                        sys::MREMAP,
                        [p as usize, pages(l.size()), pages(new), 1, 0, 0],
                    )
                };
                return if r < 0 {
                    core::ptr::null_mut()
                } else {
                    r as *mut u8
                };
            }
            if class(&l).is_some() && class(&l) == class(&nl) {
                return p;
            }
            // SAFETY: GlobalAlloc contract, forwarded.
            unsafe {
                let q = self.alloc(nl);
                if !q.is_null() {
                    core::ptr::copy_nonoverlapping(p, q, l.size().min(new));
                    self.dealloc(p, l);
                }
                q
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers over the system calls.

fn c_string(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p);
    }
    v.push(0);
    v
}

fn open(path: &[u8], flags: usize, mode: usize) -> i32 {
    // SAFETY: path is NUL-terminated (callers build it with `c_string`).
    unsafe {
        sys::call(
            sys::OPENAT,
            [
                sys::AT_FDCWD as usize,
                path.as_ptr() as usize,
                flags,
                mode,
                0,
                0,
            ],
        ) as i32
    }
}

fn close(fd: i32) {
    if fd >= 0 {
        // SAFETY: closing a descriptor we own.
        unsafe { sys::c3(sys::CLOSE, fd as usize, 0, 0) };
    }
}

fn read(fd: i32, buf: &mut [u8]) -> isize {
    // SAFETY: reading into a buffer we own.
    unsafe { sys::c3(sys::READ, fd as usize, buf.as_mut_ptr() as usize, buf.len()) }
}

fn write_all(fd: i32, mut buf: &[u8], socket: bool) -> bool {
    while !buf.is_empty() {
        // SAFETY: writing from a buffer we own; MSG_NOSIGNAL so a closed peer is an EPIPE,
        // not a SIGPIPE.
        let n = unsafe {
            if socket {
                sys::call(
                    sys::SENDTO,
                    [
                        fd as usize,
                        buf.as_ptr() as usize,
                        buf.len(),
                        sys::MSG_NOSIGNAL,
                        0,
                        0,
                    ],
                )
            } else {
                sys::c3(sys::WRITE, fd as usize, buf.as_ptr() as usize, buf.len())
            }
        };
        if n == -sys::EINTR {
            continue;
        }
        if n <= 0 {
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

/// A whole (small) file, or `None`.
fn read_file(path: &[u8]) -> Option<Vec<u8>> {
    let fd = open(path, sys::O_RDONLY | sys::O_CLOEXEC, 0);
    if fd < 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = read(fd, &mut buf);
        if n == -sys::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    close(fd);
    Some(out)
}

fn set_nonblocking(fd: i32) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = sys::c3(sys::FCNTL, fd as usize, sys::F_GETFL, 0);
        if fl >= 0 {
            sys::c3(
                sys::FCNTL,
                fd as usize,
                sys::F_SETFL,
                fl as usize | sys::O_NONBLOCK,
            );
        }
    }
}

/// The uid of the process that connected socket `fd` (`SO_PEERCRED`, taken by the kernel at
/// `connect` time), or `None` when the kernel does not say.
fn peer_uid(fd: i32) -> Option<u32> {
    // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
    let mut cred = [0u32; 3];
    let mut len: u32 = 12;
    // SAFETY: getsockopt into a 12-byte buffer whose length we pass.
    let r = unsafe {
        sys::call(
            sys::GETSOCKOPT,
            [
                fd as usize,
                sys::SOL_SOCKET,
                sys::SO_PEERCRED,
                cred.as_mut_ptr() as usize,
                &mut len as *mut u32 as usize,
                0,
            ],
        )
    };
    (r == 0 && len == 12).then_some(cred[1])
}

/// Whether a client running as `peer` may send requests to a shim running as `own`: root, or
/// the shim's own user.
fn peer_allowed(peer: Option<u32>, own: u32) -> bool {
    matches!(peer, Some(u) if u == 0 || u == own)
}

fn pipe() -> Option<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid 2-element array.
    let r = unsafe { sys::c3(sys::PIPE2, fds.as_mut_ptr() as usize, sys::O_CLOEXEC, 0) };
    (r == 0).then_some((fds[0], fds[1]))
}

fn clock_ms(clock: usize) -> u64 {
    let mut ts = [0i64; 2];
    // SAFETY: ts is a valid timespec.
    unsafe { sys::c3(sys::CLOCK_GETTIME, clock, ts.as_mut_ptr() as usize, 0) };
    ts[0] as u64 * 1000 + ts[1] as u64 / 1_000_000
}

fn push_num(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn parse_num(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (b - b'0') as u64;
    }
    Some(n)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !first.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !last.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    s
}

/// True when cgroup `memory.oom_control` (v1) or `memory.events` (v2) text records at least one
/// OOM kill.
fn oom_killed(text: &[u8]) -> bool {
    text.split(|b| *b == b'\n').any(|l| {
        l.strip_prefix(b"oom_kill ")
            .and_then(|n| parse_num(trim(n)))
            .is_some_and(|n| n > 0)
    })
}

/// A NUL-terminated C string from the kernel-provided argument or environment block.
///
/// # Safety
/// `p` points to a NUL-terminated string that lives for the whole process.
unsafe fn c_str(p: *const u8) -> &'static [u8] {
    let mut n = 0;
    // SAFETY: the caller guarantees termination.
    unsafe {
        while *p.add(n) != 0 {
            n += 1;
        }
        core::slice::from_raw_parts(p, n)
    }
}

// ---------------------------------------------------------------------------------------------
// The shim.

struct Stream {
    fd: i32,
    partial: Vec<u8>,
}

struct Ctr {
    idx: u64,
    dir: Vec<u8>,
    log: i32,
    streams: [Stream; 2],
    runtime_pid: i32,
    pid: i32,
    status: Option<i32>,
    exited_at: u64,
    oom_files: Vec<Vec<u8>>,
    done: bool,
}

impl Ctr {
    /// Closes the container's output pipes and log file; it is done.
    fn finish(&mut self) {
        for st in self.streams.iter_mut() {
            close(st.fd);
            st.fd = -1;
        }
        close(self.log);
        self.log = -1;
        self.done = true;
    }
}

struct Shim {
    task_dir: &'static [u8],
    runtime: &'static [u8],
    /// Absolute candidates for the runtime binary (PATH lookup done once).
    runtime_paths: Vec<Vec<u8>>,
    /// The agent's sealed in-memory copy of the runtime binary, executed first when open.
    runtime_fd: i32,
    envp: *const *const u8,
    dev_null: i32,
    client: i32,
    inbuf: Vec<u8>,
    ctrs: Vec<Ctr>,
    /// Exit statuses of children reaped before their pid was known.
    unclaimed: Vec<(i32, i32)>,
    readbuf: Vec<u8>,
}

impl Shim {
    fn send(&mut self, parts: &[&[u8]]) {
        if self.client < 0 {
            return;
        }
        let mut line = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                line.push(b'\t');
            }
            line.extend_from_slice(p);
        }
        line.push(b'\n');
        if !write_all(self.client, &line, true) {
            close(self.client);
            self.client = -1;
        }
    }

    fn send_num(&mut self, ev: &[u8], idx: u64, n: i64, extra: Option<&[u8]>) {
        let mut a = Vec::new();
        push_num(&mut a, idx);
        let mut b = Vec::new();
        if n < 0 {
            b.push(b'-');
        }
        push_num(&mut b, n.unsigned_abs());
        match extra {
            Some(x) => self.send(&[ev, &a, &b, x]),
            None => self.send(&[ev, &a, &b]),
        }
    }

    fn fail(&mut self, idx: u64, msg: &[u8]) {
        let mut a = Vec::new();
        push_num(&mut a, idx);
        self.send(&[b"failed", &a, msg]);
    }

    fn ctr(&mut self, idx: u64) -> Option<&mut Ctr> {
        self.ctrs.iter_mut().find(|c| c.idx == idx)
    }

    fn start(&mut self, idx: u64, id: &[u8], bundle: &[u8], oom: Vec<Vec<u8>>) {
        if self.ctrs.iter().any(|c| c.idx == idx) {
            return self.fail(idx, b"container already started");
        }
        let mut dir = Vec::from(self.task_dir);
        dir.extend_from_slice(b"/c");
        push_num(&mut dir, idx);
        // Only the task's own bundle runs, whatever the request names.
        if bundle != dir.as_slice() {
            return self.fail(idx, b"refused: the bundle is not this task's own");
        }
        // SAFETY: a NUL-terminated path.
        unsafe { sys::c3(sys::MKDIR, c_string(&[&dir]).as_ptr() as usize, 0o755, 0) };
        let log = open(
            &c_string(&[&dir, b"/log"]),
            sys::O_WRONLY | sys::O_CREAT | sys::O_APPEND | sys::O_CLOEXEC,
            0o644,
        );
        if log < 0 {
            return self.fail(idx, b"cannot open the container log");
        }
        let (Some((out_r, out_w)), Some((err_r, err_w))) = (pipe(), pipe()) else {
            close(log);
            return self.fail(idx, b"cannot create pipes");
        };
        // Everything the child needs is built before fork.
        let args: [Vec<u8>; 8] = [
            c_string(&[b"--log=", &dir, b"/runtime.log"]),
            c_string(&[b"run"]),
            c_string(&[b"--detach"]),
            c_string(&[b"--pid-file"]),
            c_string(&[&dir, b"/pid"]),
            c_string(&[b"--bundle"]),
            c_string(&[bundle]),
            c_string(&[id]),
        ];
        let name = c_string(&[self.runtime]);
        let mut argv: Vec<*const u8> = Vec::with_capacity(args.len() + 2);
        argv.push(name.as_ptr());
        argv.extend(args.iter().map(|a| a.as_ptr()));
        argv.push(core::ptr::null());
        // SAFETY: fork (clone with SIGCHLD only); the child only makes system calls.
        let pid = unsafe { sys::call(sys::CLONE, [sys::SIGCHLD, 0, 0, 0, 0, 0]) };
        if pid == 0 {
            // The child: stdin /dev/null, stdout/stderr the pipes, no blocked signals, exec.
            // SAFETY: plain system calls on descriptors we own, then execve.
            unsafe {
                sys::c3(sys::DUP3, self.dev_null as usize, 0, 0);
                sys::c3(sys::DUP3, out_w as usize, 1, 0);
                sys::c3(sys::DUP3, err_w as usize, 2, 0);
            }
            exec_child(
                self.runtime_fd,
                &self.runtime_paths,
                argv.as_ptr(),
                self.envp,
            );
            let msg = b"berth-shim: cannot execute the runtime\n";
            write_all(2, msg, false);
            sys::exit(127);
        }
        close(out_w);
        close(err_w);
        if pid < 0 {
            close(out_r);
            close(err_r);
            close(log);
            return self.fail(idx, b"cannot fork");
        }
        set_nonblocking(out_r);
        set_nonblocking(err_r);
        self.ctrs.push(Ctr {
            idx,
            dir,
            log,
            streams: [
                Stream {
                    fd: out_r,
                    partial: Vec::new(),
                },
                Stream {
                    fd: err_r,
                    partial: Vec::new(),
                },
            ],
            runtime_pid: pid as i32,
            pid: 0,
            status: None,
            exited_at: 0,
            oom_files: oom,
            done: false,
        });
    }

    /// Handles one request line; false for `bye`.
    fn handle_line(&mut self, line: &[u8]) -> bool {
        let f: Vec<&[u8]> = line.split(|b| *b == b'\t').collect();
        match f.as_slice() {
            [b"start", idx, id, bundle, oom @ ..] => {
                if let Some(idx) = parse_num(idx) {
                    let oom = oom.iter().map(|p| c_string(&[p])).collect::<Vec<Vec<u8>>>();
                    self.start(idx, id, bundle, oom);
                }
            }
            [b"kill", idx, sig] => {
                if let (Some(idx), Some(sig)) = (parse_num(idx), parse_num(sig)) {
                    if let Some(c) = self.ctr(idx) {
                        if c.pid > 0 && c.status.is_none() {
                            // SAFETY: pid is our unreaped child, so it cannot have been reused.
                            unsafe { sys::c3(sys::KILL, c.pid as usize, sig as usize, 0) };
                        }
                    }
                }
            }
            [b"bye"] => return false,
            _ => {}
        }
        true
    }

    fn read_client(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let n = read(self.client, &mut buf);
        if n == -sys::EINTR || n == -sys::EAGAIN {
            return true;
        }
        if n <= 0 {
            close(self.client);
            self.client = -1;
            self.inbuf.clear();
            return true;
        }
        self.inbuf.extend_from_slice(&buf[..n as usize]);
        while let Some(p) = self.inbuf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.inbuf.drain(..=p).collect();
            if !self.handle_line(&line[..line.len() - 1]) {
                return false;
            }
        }
        true
    }

    /// Reads what is available on one output stream and appends complete lines to the log.
    /// Returns true when something was written.
    fn read_stream(&mut self, ci: usize, s: usize) -> bool {
        if self.readbuf.is_empty() {
            self.readbuf.resize(64 * 1024, 0);
        }
        let buf = &mut self.readbuf;
        let c = &mut self.ctrs[ci];
        let st = &mut c.streams[s];
        if st.fd < 0 {
            return false;
        }
        let mut eof = false;
        loop {
            let n = read(st.fd, buf);
            if n > 0 {
                st.partial.extend_from_slice(&buf[..n as usize]);
                if (n as usize) < buf.len() {
                    break;
                }
                continue;
            }
            if n == -sys::EINTR {
                continue;
            }
            if n != -sys::EAGAIN {
                eof = true;
            }
            break;
        }
        let mut ts = Vec::new();
        push_num(&mut ts, clock_ms(0));
        ts.push(b' ');
        ts.push(if s == 0 { b'1' } else { b'2' });
        ts.push(b' ');
        let mut out = Vec::new();
        let frame = |line: &[u8], out: &mut Vec<u8>| {
            out.extend_from_slice(&ts);
            out.extend_from_slice(line);
            out.push(b'\n');
        };
        let mut start = 0;
        while let Some(p) = st.partial[start..].iter().position(|b| *b == b'\n') {
            let end = start + p;
            let mut line = &st.partial[start..end];
            while line.len() > MAX_LINE {
                frame(&line[..MAX_LINE], &mut out);
                line = &line[MAX_LINE..];
            }
            frame(line, &mut out);
            start = end + 1;
        }
        st.partial.drain(..start);
        while st.partial.len() > MAX_LINE {
            let head: Vec<u8> = st.partial.drain(..MAX_LINE).collect();
            frame(&head, &mut out);
        }
        if eof {
            if !st.partial.is_empty() {
                let rest = core::mem::take(&mut st.partial);
                frame(&rest, &mut out);
            }
            close(st.fd);
            st.fd = -1;
            st.partial = Vec::new();
        }
        if out.is_empty() {
            return false;
        }
        write_all(c.log, &out, false);
        true
    }

    fn reap(&mut self) {
        while let Some((pid, code)) = reap_one() {
            self.on_reaped(pid, code);
        }
    }

    fn on_reaped(&mut self, pid: i32, code: i32) {
        let now = clock_ms(1);
        let Some(ci) = self
            .ctrs
            .iter()
            .position(|c| c.runtime_pid == pid || (c.pid == pid && c.pid > 0))
        else {
            self.unclaimed.push((pid, code));
            return;
        };
        let c = &mut self.ctrs[ci];
        if c.pid == pid {
            c.status = Some(code);
            c.exited_at = now;
            return;
        }
        c.runtime_pid = 0;
        let idx = c.idx;
        if code != 0 {
            c.finish();
            let mut m = Vec::from(&b"the runtime exited with "[..]);
            push_num(&mut m, code as u64);
            return self.fail(idx, &m);
        }
        let pidfile = c_string(&[&c.dir, b"/pid"]);
        let p = read_file(&pidfile)
            .and_then(|t| parse_num(trim(&t)))
            .filter(|p| *p > 0 && *p < i32::MAX as u64)
            .map(|p| p as i32);
        let Some(p) = p else {
            c.finish();
            return self.fail(idx, b"the runtime wrote no pid file");
        };
        c.pid = p;
        self.send_num(b"started", idx, p as i64, None);
        if let Some(k) = self.unclaimed.iter().position(|(q, _)| *q == p) {
            let (_, code) = self.unclaimed.swap_remove(k);
            let c = &mut self.ctrs[ci];
            c.status = Some(code);
            c.exited_at = now;
        }
    }

    /// Containers whose pid 1 exited and whose output is drained (or waited for long enough)
    /// get their exit record.
    fn finish_exits(&mut self) {
        let now = clock_ms(1);
        for ci in 0..self.ctrs.len() {
            let c = &mut self.ctrs[ci];
            let Some(code) = c.status else { continue };
            if c.done {
                continue;
            }
            let draining = c.streams.iter().any(|s| s.fd >= 0);
            if draining && now.saturating_sub(c.exited_at) < DRAIN_WAIT_MS {
                continue;
            }
            c.finish();
            let oom = c
                .oom_files
                .iter()
                .any(|f| read_file(f).is_some_and(|t| oom_killed(&t)));
            let mut rec = Vec::from(&b"{\"idx\":"[..]);
            push_num(&mut rec, c.idx);
            rec.extend_from_slice(b",\"code\":");
            push_num(&mut rec, code as u64);
            rec.extend_from_slice(if oom {
                &b",\"oom\":true}"[..]
            } else {
                &b",\"oom\":false}"[..]
            });
            let tmp = c_string(&[&c.dir, b"/exit.tmp"]);
            let fd = open(
                &tmp,
                sys::O_WRONLY | sys::O_CREAT | sys::O_TRUNC | sys::O_CLOEXEC,
                0o644,
            );
            if fd >= 0 {
                let ok = write_all(fd, &rec, false);
                close(fd);
                if ok {
                    let dst = c_string(&[&c.dir, b"/exit"]);
                    // SAFETY: two NUL-terminated paths.
                    unsafe {
                        sys::c3(sys::RENAME, tmp.as_ptr() as usize, dst.as_ptr() as usize, 0)
                    };
                }
            }
            let idx = c.idx;
            let flag: &[u8] = if oom { b"1" } else { b"0" };
            self.send_num(b"exit", idx, code as i64, Some(flag));
        }
    }
}

/// The signal-set bit of signal `s`.
const fn sig_bit(s: u64) -> u64 {
    1 << (s - 1)
}

/// `sigprocmask(how, set)`: 0 = SIG_BLOCK, 2 = SIG_SETMASK.
fn sigmask(how: usize, set: u64) {
    // SAFETY: a valid 8-byte signal set.
    unsafe {
        sys::call(
            sys::RT_SIGPROCMASK,
            [how, &set as *const u64 as usize, 0, 8, 0, 0],
        )
    };
}

/// A signalfd for the signals in `set` (`flags`: O_NONBLOCK, O_CLOEXEC); negative on failure.
fn signalfd(set: u64, flags: usize) -> i32 {
    // SAFETY: a valid 8-byte signal set.
    unsafe {
        sys::call(
            sys::SIGNALFD4,
            [usize::MAX, &set as *const u64 as usize, 8, flags, 0, 0],
        ) as i32
    }
}

/// In a freshly forked child: clears the signal mask and executes `argv` (NULL-terminated)
/// from `fd` (when open, with `execveat`) or else from the first of `paths` that works.
/// Returns only when nothing could be executed.
fn exec_child(fd: i32, paths: &[Vec<u8>], argv: *const *const u8, envp: *const *const u8) {
    sigmask(2, 0);
    // SAFETY: NUL-terminated paths, NULL-terminated argv and envp arrays.
    unsafe {
        if fd >= 0 {
            sys::call(
                sys::EXECVEAT,
                [
                    fd as usize,
                    c"".as_ptr() as usize,
                    argv as usize,
                    envp as usize,
                    sys::AT_EMPTY_PATH,
                    0,
                ],
            );
        }
        for p in paths {
            sys::c3(
                sys::EXECVE,
                p.as_ptr() as usize,
                argv as usize,
                envp as usize,
            );
        }
    }
}

/// Reaps one ended child without blocking: `(pid, code)` with a shell-style code (the exit
/// status, or 128 + signal); `None` when no child has ended.
fn reap_one() -> Option<(i32, i32)> {
    loop {
        let mut status = 0i32;
        // SAFETY: waitpid(-1) without blocking; status is a valid int.
        let pid = unsafe {
            sys::call(
                sys::WAIT4,
                [
                    usize::MAX,
                    &mut status as *mut i32 as usize,
                    sys::WNOHANG | sys::WALL,
                    0,
                    0,
                    0,
                ],
            )
        };
        if pid <= 0 {
            return None;
        }
        let sig = status & 0x7f;
        if sig == 0 {
            return Some((pid as i32, (status >> 8) & 0xff));
        }
        if sig != 0x7f {
            return Some((pid as i32, 128 + sig));
        }
        // 0x7f: stopped or continued, not ended.
    }
}

/// Where to look for a program: itself when it has a slash, else in every `$PATH` entry.
fn exec_candidates(runtime: &[u8], envp: *const *const u8) -> Vec<Vec<u8>> {
    if runtime.contains(&b'/') {
        return alloc::vec![c_string(&[runtime])];
    }
    let mut path: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut e = envp;
    // SAFETY: envp is the kernel's NULL-terminated environment array.
    unsafe {
        while !(*e).is_null() {
            if let Some(v) = c_str(*e).strip_prefix(b"PATH=") {
                path = v;
            }
            e = e.add(1);
        }
    }
    path.split(|b| *b == b':')
        .filter(|d| !d.is_empty())
        .map(|d| c_string(&[d, b"/", runtime]))
        .collect()
}

extern "C" fn entry(sp: *const usize) -> ! {
    // SAFETY: the System V process entry stack: argc, argv[argc], NULL, envp..., NULL.
    let (argv, envp) = unsafe {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        let args: Vec<&'static [u8]> = (0..argc).map(|i| c_str(*argv.add(i))).collect();
        (args, argv.add(argc + 1))
    };
    if argv.len() > 2 && argv[1] == b"--" {
        // SAFETY: argv[2..] is the tail of the kernel's NULL-terminated argument array.
        let cmd = unsafe { (sp.add(1) as *const *const u8).add(2) };
        init(argv[2], cmd, envp)
    }
    if !(argv.len() == 4 || argv.len() == 5) || argv[1] != b"shim" {
        write_all(
            2,
            b"usage: berth-shim shim <task-dir> <runtime> [<runtime copy>] (started by the berth agent)\n\
              \x20      berth-shim -- <command> [<arg>...] (a container's init process)\n",
            false,
        );
        sys::exit(2);
    }
    let runtime_fd = match argv.get(4) {
        Some(p) => open(&c_string(&[p]), sys::O_RDONLY | sys::O_CLOEXEC, 0),
        None => -1,
    };
    main(argv[2], argv[3], runtime_fd, envp)
}

/// `berth-shim -- <command> [<arg>...]`: a minimal init for a container's pid 1 (ECS
/// `linuxParameters.initProcessEnabled`, Docker's `--init`). It runs the command as its child,
/// forwards every signal it receives to it, reaps every process reparented to it, and exits
/// with the command's status (128 + signal when the command was killed by one).
fn init(prog: &[u8], argv: *const *const u8, envp: *const *const u8) -> ! {
    let candidates = exec_candidates(prog, envp);
    let all: u64 = !(sig_bit(9) | sig_bit(19)); // everything but SIGKILL and SIGSTOP
    sigmask(2, all);
    let sfd = signalfd(all, sys::O_CLOEXEC);
    // SAFETY: fork (clone with SIGCHLD only); the child only makes system calls.
    let child = unsafe { sys::call(sys::CLONE, [sys::SIGCHLD, 0, 0, 0, 0, 0]) } as i32;
    if child == 0 {
        exec_child(-1, &candidates, argv, envp);
        let mut msg = Vec::from(&b"berth-init: cannot execute "[..]);
        msg.extend_from_slice(prog);
        msg.push(b'\n');
        write_all(2, &msg, false);
        sys::exit(127);
    }
    if child < 0 || sfd < 0 {
        write_all(2, b"berth-init: cannot start the command\n", false);
        sys::exit(126);
    }
    loop {
        // One struct signalfd_siginfo (128 bytes), ssi_signo first.
        let mut si = [0u32; 32];
        // SAFETY: reading one signalfd_siginfo into a 128-byte buffer.
        let n = unsafe { sys::c3(sys::READ, sfd as usize, si.as_mut_ptr() as usize, 128) };
        if n != 128 {
            continue;
        }
        let sig = si[0] as usize;
        if sig != sys::SIGCHLD {
            // SAFETY: forwarding to our own unreaped child.
            unsafe { sys::c3(sys::KILL, child as usize, sig, 0) };
            continue;
        }
        while let Some((pid, code)) = reap_one() {
            if pid == child {
                sys::exit(code);
            }
        }
    }
}

fn main(
    task_dir: &'static [u8],
    runtime: &'static [u8],
    runtime_fd: i32,
    envp: *const *const u8,
) -> ! {
    // SAFETY: prctl with plain integers.
    unsafe { sys::c3(sys::PRCTL, sys::PR_SET_CHILD_SUBREAPER, 1, 0) };
    // SIGCHLD through a signalfd. SIGHUP, SIGINT, SIGTERM and SIGPIPE are blocked too (only
    // the agent ends a shim); the runtime gets an empty mask.
    sigmask(
        0,
        sig_bit(17) | sig_bit(1) | sig_bit(2) | sig_bit(15) | sig_bit(13),
    );
    let sfd = signalfd(sig_bit(17), sys::O_NONBLOCK | sys::O_CLOEXEC);
    let dev_null = open(b"/dev/null\0", sys::O_RDWR | sys::O_CLOEXEC, 0);
    if sfd < 0 || dev_null < 0 {
        write_all(2, b"berth-shim: signalfd or /dev/null failed\n", false);
        sys::exit(1);
    }
    set_nonblocking(0);
    // SAFETY: getuid takes no arguments and cannot fail.
    let own_uid = unsafe { sys::c3(sys::GETUID, 0, 0, 0) } as u32;
    let mut shim = Shim {
        task_dir,
        runtime,
        runtime_paths: exec_candidates(runtime, envp),
        runtime_fd,
        envp,
        dev_null,
        client: -1,
        inbuf: Vec::new(),
        ctrs: Vec::new(),
        unclaimed: Vec::new(),
        readbuf: Vec::new(),
    };
    #[repr(C)]
    struct PollFd {
        fd: i32,
        events: i16,
        revents: i16,
    }
    let mut fds: Vec<PollFd> = Vec::new();
    // What each pollfd is: 0 listener, 1 signalfd, 2 client, 3 an output stream.
    let mut what: Vec<(u8, usize, usize)> = Vec::new();
    let mut logged: Vec<u64> = Vec::new();
    loop {
        fds.clear();
        what.clear();
        let mut add = |fd: i32, kind: u8, ci: usize, s: usize| {
            fds.push(PollFd {
                fd,
                events: sys::POLLIN,
                revents: 0,
            });
            what.push((kind, ci, s));
        };
        add(0, 0, 0, 0);
        add(sfd, 1, 0, 0);
        if shim.client >= 0 {
            add(shim.client, 2, 0, 0);
        }
        let mut waiting_drain = false;
        for (ci, c) in shim.ctrs.iter().enumerate() {
            for (s, st) in c.streams.iter().enumerate() {
                if st.fd >= 0 {
                    add(st.fd, 3, ci, s);
                }
            }
            waiting_drain |= c.status.is_some() && !c.done;
        }
        let timeout: isize = if waiting_drain { 100 } else { -1 };
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe {
            sys::c3(
                sys::POLL,
                fds.as_mut_ptr() as usize,
                fds.len(),
                timeout as usize,
            )
        };
        if n < 0 {
            if n == -sys::EINTR {
                continue;
            }
            sys::exit(1);
        }
        logged.clear();
        for (p, &(kind, ci, s)) in fds.iter().zip(what.iter()) {
            if p.revents == 0 {
                continue;
            }
            match kind {
                0 => loop {
                    // SAFETY: accept4 on our listening socket, no address wanted.
                    let c = unsafe { sys::call(sys::ACCEPT4, [0, 0, 0, sys::O_CLOEXEC, 0, 0]) };
                    if c < 0 {
                        break;
                    }
                    let peer = peer_uid(c as i32);
                    if !peer_allowed(peer, own_uid) {
                        // Refused without touching the current client.
                        close(c as i32);
                        let mut m = Vec::from(&b"berth-shim: refused a connection from uid "[..]);
                        match peer {
                            Some(u) => push_num(&mut m, u as u64),
                            None => m.push(b'?'),
                        }
                        m.push(b'\n');
                        write_all(2, &m, false);
                        continue;
                    }
                    close(shim.client);
                    shim.client = c as i32;
                    shim.inbuf.clear();
                },
                1 => {
                    let mut si = [0u8; 128];
                    while read(sfd, &mut si) > 0 {}
                    shim.reap();
                }
                2 => {
                    if shim.client >= 0 && !shim.read_client() {
                        sys::exit(0);
                    }
                }
                _ => {
                    let idx = shim.ctrs[ci].idx;
                    if shim.read_stream(ci, s) && !logged.contains(&idx) {
                        logged.push(idx);
                    }
                }
            }
        }
        for &idx in &logged {
            let mut a = Vec::new();
            push_num(&mut a, idx);
            shim.send(&[b"log", &a]);
        }
        shim.finish_exits();
    }
}
