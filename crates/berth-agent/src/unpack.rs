//! Unpacking one image layer (a tar stream, OCI image spec "Image Layer Filesystem Changeset")
//! into an empty snapshot directory, in the form overlayfs reads: `.wh.<name>` becomes a 0/0
//! character device `<name>`, `.wh..wh..opq` marks its directory with
//! `trusted.overlay.opaque=y`.
//!
//! Layers are hostile input. Every operation is done relative to a directory fd opened below
//! the snapshot root, never through a host path:
//! - parent directories are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` (or one component at a time with `O_NOFOLLOW`
//!   where openat2 is unavailable), so no path of an entry, whiteout, opaque marker or
//!   hard-link target can leave the root, and an entry whose path goes through a symbolic
//!   link (made by an earlier entry of the same layer) fails the layer, as GNU tar refuses to
//!   extract through an archive's own symlinks;
//! - a final component is never followed: whatever is there (a symlink too) is removed and
//!   replaced, with `*at` calls and `O_NOFOLLOW`/`O_EXCL`;
//! - `..` components (in entry paths and hard-link targets) and whiteouts of `.`/`..` fail
//!   the layer;
//! - character and block devices are skipped (except the 0/0 character device, overlayfs's
//!   own whiteout form): Fargate gives tasks no devices, and a container's `/dev` is a fresh
//!   tmpfs anyway. FIFOs, setuid/setgid bits and file capabilities stay (they only matter
//!   inside the container);
//! - of the extended attributes in PAX `SCHILY.xattr.*` records only `user.*` and
//!   `security.capability` are set (no `trusted.overlay.*` smuggled in).
//!
//! Errors name the offending entry as the layer spells it and never a host path.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

/// Why a layer could not be unpacked. Shown to API callers (in `stoppedReason`): it names
/// entries as the layer spells them, never a host path.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// An entry tries to reach outside the snapshot root or through a symbolic link.
    #[error("unsafe layer entry {path:?}: {reason}")]
    Unsafe { path: String, reason: &'static str },
    /// A filesystem operation for an entry failed.
    #[error("layer entry {path:?}: {source}")]
    Entry { path: String, source: io::Error },
    /// The stream is not a readable tar archive (or its decompression failed).
    #[error("reading the layer: {0}")]
    Read(io::Error),
}

/// An entry path as shown in errors: lossy UTF-8, at most 200 characters.
fn shown(p: &[u8]) -> String {
    String::from_utf8_lossy(p).chars().take(200).collect()
}

/// What a tar entry name means in overlayfs terms.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// Not a whiteout: unpack as is.
    No,
    /// `.wh..wh..opq`: the entry's directory is opaque.
    Opaque,
    /// `.wh.<name>`: `<name>` in the entry's directory is deleted.
    Delete(&'a [u8]),
}

/// Classifies the last component of an entry path.
pub fn classify_whiteout(name: &[u8]) -> Whiteout<'_> {
    if name == b".wh..wh..opq" {
        Whiteout::Opaque
    } else if let Some(rest) = name.strip_prefix(b".wh.") {
        Whiteout::Delete(rest)
    } else {
        Whiteout::No
    }
}

/// Splits a tar path into its components below the root: leading `/`, empty and `.`
/// components are dropped; `..` anywhere is refused (`None`). An empty result is the root.
pub fn components(path: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn os(c: &[u8]) -> &OsStr {
    OsStr::from_bytes(c)
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV
}

/// Unpacks into one root directory; all operations are relative to `root`.
struct Unpacker {
    root: OwnedFd,
    /// openat2 answered ENOSYS/EPERM once: walk one component at a time instead.
    no_openat2: bool,
    /// Directories whose mtime is set at the end (children change it), with that mtime.
    dirs: Vec<(Vec<u8>, u64)>,
    /// Directories marked opaque at the end (a later entry re-creating one keeps the mark).
    opaque: Vec<Vec<u8>>,
}

/// Context for errors of one entry.
struct Ctx<'a> {
    path: &'a [u8],
}

impl Ctx<'_> {
    fn unsafe_(&self, reason: &'static str) -> LayerError {
        LayerError::Unsafe {
            path: shown(self.path),
            reason,
        }
    }

    fn io(&self, e: impl Into<io::Error>) -> LayerError {
        LayerError::Entry {
            path: shown(self.path),
            source: e.into(),
        }
    }

    /// Maps an error of resolving a path below the root: symlinks and escapes are unsafe.
    fn resolve_err(&self, e: Errno) -> LayerError {
        match e {
            Errno::LOOP => self.unsafe_("the path goes through a symbolic link"),
            Errno::XDEV => self.unsafe_("the path leaves the layer root"),
            Errno::NOTDIR => self.unsafe_("a parent of the path is not a directory"),
            e => self.io(e),
        }
    }
}

impl Unpacker {
    /// Opens directory `comps` below the root, creating missing components (mode 0755) when
    /// `create`. Never follows a symbolic link.
    fn open_dir(&mut self, comps: &[&[u8]], create: bool, cx: &Ctx) -> Result<OwnedFd, LayerError> {
        if comps.is_empty() {
            return rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(|e| cx.io(e));
        }
        if !self.no_openat2 {
            let joined = comps.join(&b'/');
            // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS refuses a final symlink too, with ELOOP.
            match rustix::fs::openat2(
                &self.root,
                os(&joined),
                DIR_FLAGS.difference(OFlags::NOFOLLOW),
                Mode::empty(),
                resolve_flags(),
            ) {
                Ok(fd) => return Ok(fd),
                Err(Errno::NOENT) if create => {}
                Err(Errno::NOSYS) | Err(Errno::PERM) => self.no_openat2 = true,
                Err(e) => return Err(cx.resolve_err(e)),
            }
        }
        // One component at a time: each is a plain name (no `/`, never `..`) opened with
        // O_NOFOLLOW, so nothing leads out of the root.
        let mut fd = rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(|e| cx.io(e))?;
        for c in comps {
            let next = match rustix::fs::openat(&fd, os(c), DIR_FLAGS, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&fd, os(c), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(cx.io(e)),
                    }
                    rustix::fs::openat(&fd, os(c), DIR_FLAGS, Mode::empty())
                }
                r => r,
            };
            fd = match next {
                Ok(fd) => fd,
                // O_NOFOLLOW|O_DIRECTORY on a symlink may answer ENOTDIR: tell which it was.
                Err(Errno::NOTDIR) if is_symlink(&fd, c) => return Err(cx.resolve_err(Errno::LOOP)),
                Err(e) => return Err(cx.resolve_err(e)),
            };
        }
        Ok(fd)
    }

    fn unpack_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), LayerError> {
        let raw = entry.path_bytes().into_owned();
        let cx = Ctx { path: &raw };
        let comps = components(&raw).ok_or_else(|| cx.unsafe_("the path contains \"..\""))?;
        let Some((name, parent)) = comps.split_last() else {
            // The root itself: its metadata is the snapshot directory's business.
            return Ok(());
        };
        match classify_whiteout(name) {
            Whiteout::Opaque => {
                drop(self.open_dir(parent, true, &cx)?);
                self.opaque.push(parent.join(&b'/'));
                return Ok(());
            }
            Whiteout::Delete(target) => {
                if matches!(target, b"" | b"." | b"..") {
                    return Err(cx.unsafe_("a whiteout of \".\", \"..\" or nothing"));
                }
                let pd = self.open_dir(parent, true, &cx)?;
                return make_whiteout(&pd, target).map_err(|e| cx.io(e));
            }
            Whiteout::No => {}
        }
        let header = entry.header().clone();
        let kind = header.entry_type();
        let num = |r: io::Result<u64>| r.map_err(|e| cx.io(e));
        let mode = header.mode().map_err(|e| cx.io(e))? & 0o7777;
        let uid = u32::try_from(num(header.uid())?).map_err(|_| cx.unsafe_("uid out of range"))?;
        let gid = u32::try_from(num(header.gid())?).map_err(|_| cx.unsafe_("gid out of range"))?;
        let mtime = num(header.mtime())?;
        let owner = (
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        );
        let xattrs = pax_xattrs(&mut entry).map_err(|e| cx.io(e))?;
        let pd = self.open_dir(parent, true, &cx)?;
        let name = os(name);
        match kind {
            tar::EntryType::Directory => {
                match rustix::fs::statat(&pd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(_) => {
                        remove_all_at(&pd, name).map_err(|e| cx.io(e))?;
                        rustix::fs::mkdirat(&pd, name, Mode::from_raw_mode(0o700))
                            .map_err(|e| cx.io(e))?;
                    }
                    Err(Errno::NOENT) => rustix::fs::mkdirat(&pd, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| cx.io(e))?,
                    Err(e) => return Err(cx.io(e)),
                }
                let fd = rustix::fs::openat(&pd, name, DIR_FLAGS, Mode::empty())
                    .map_err(|e| cx.resolve_err(e))?;
                set_meta(&fd, owner, mode, &xattrs).map_err(|e| cx.io(e))?;
                self.dirs.push((comps.join(&b'/'), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_all_at(&pd, name).map_err(|e| cx.io(e))?;
                let fd = rustix::fs::openat(
                    &pd,
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| cx.io(e))?;
                let mut f = std::fs::File::from(fd);
                io::copy(&mut entry, &mut f).map_err(|e| cx.io(e))?;
                set_meta(&f, owner, mode, &xattrs).map_err(|e| cx.io(e))?;
                rustix::fs::futimens(&f, &times(mtime)).map_err(|e| cx.io(e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| cx.unsafe_("a symbolic link without a target"))?
                    .into_owned();
                remove_all_at(&pd, name).map_err(|e| cx.io(e))?;
                rustix::fs::symlinkat(os(&target), &pd, name).map_err(|e| cx.io(e))?;
                rustix::fs::chownat(&pd, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| cx.io(e))?;
                rustix::fs::utimensat(&pd, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| cx.io(e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| cx.unsafe_("a hard link without a target"))?
                    .into_owned();
                let tcomps = components(&target)
                    .ok_or_else(|| cx.unsafe_("the hard link target contains \"..\""))?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(cx.unsafe_("a hard link to the root"));
                };
                if tcomps == comps {
                    return Ok(());
                }
                let tpd = self.open_dir(tparent, false, &cx)?;
                remove_all_at(&pd, name).map_err(|e| cx.io(e))?;
                // Without AT_SYMLINK_FOLLOW: a symlink target is linked, not followed.
                rustix::fs::linkat(&tpd, os(tname), &pd, name, AtFlags::empty())
                    .map_err(|e| cx.io(e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = header.device_major().map_err(|e| cx.io(e))?.unwrap_or(0);
                let minor = header.device_minor().map_err(|e| cx.io(e))?.unwrap_or(0);
                if kind == tar::EntryType::Char && major == 0 && minor == 0 {
                    // overlayfs's whiteout form, as some layers already carry it.
                    make_whiteout(&pd, name.as_bytes()).map_err(|e| cx.io(e))?;
                } else {
                    tracing::debug!(entry = %shown(&raw), "layer device node skipped");
                }
            }
            tar::EntryType::Fifo => {
                remove_all_at(&pd, name).map_err(|e| cx.io(e))?;
                rustix::fs::mknodat(&pd, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .map_err(|e| cx.io(e))?;
                rustix::fs::chownat(&pd, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| cx.io(e))?;
                rustix::fs::chmodat(&pd, name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(|e| cx.io(e))?;
            }
            // PAX/GNU metadata records are consumed by the reader; anything else is skipped.
            _ => {}
        }
        Ok(())
    }

    /// Sets the opaque marks and directory mtimes, once every entry is in place.
    fn finish(&mut self) -> Result<(), LayerError> {
        for d in std::mem::take(&mut self.opaque) {
            let cx = Ctx { path: &d };
            let comps: Vec<&[u8]> = components(&d).unwrap_or_default();
            let fd = self.open_dir(&comps, false, &cx)?;
            rustix::fs::fsetxattr(
                &fd,
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
            .map_err(|e| cx.io(e))?;
        }
        for (d, mtime) in std::mem::take(&mut self.dirs).into_iter().rev() {
            let cx = Ctx { path: &d };
            let comps: Vec<&[u8]> = components(&d).unwrap_or_default();
            // A directory replaced by a later entry keeps that entry's times.
            if let Ok(fd) = self.open_dir(&comps, false, &cx) {
                let _ = rustix::fs::futimens(&fd, &times(mtime));
            }
        }
        Ok(())
    }
}

fn is_symlink(dir: &OwnedFd, name: &[u8]) -> bool {
    rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

fn times(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Owner, permission bits (after chown, which clears setuid) and allowed xattrs of an open
/// file or directory.
fn set_meta(
    fd: impl AsFd,
    owner: (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>),
    mode: u32,
    xattrs: &[(OsString, Vec<u8>)],
) -> io::Result<()> {
    rustix::fs::fchown(&fd, owner.0, owner.1)?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    for (k, v) in xattrs {
        rustix::fs::fsetxattr(&fd, k.as_os_str(), v, rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

/// The extended attributes an entry may carry: `user.*` and `security.capability`.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                if name.starts_with(b"user.") || name == b"security.capability" {
                    out.push((
                        OsString::from_vec(name.to_vec()),
                        ext.value_bytes().to_vec(),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Replaces whatever is at `name` in `dir` with a 0/0 character device (an overlayfs whiteout).
fn make_whiteout(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    remove_all_at(dir, os(name))?;
    rustix::fs::mknodat(
        dir,
        os(name),
        FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    )?;
    Ok(())
}

/// Removes `name` in `dir` (a directory with everything below it), never following a
/// symbolic link; nothing there is fine.
pub fn remove_all_at(dir: impl AsFd, name: &OsStr) -> io::Result<()> {
    let dir = dir.as_fd();
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?);
    }
    let fd = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
    clear_dir(fd.as_fd())?;
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

fn clear_dir(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut names = Vec::new();
    let mut d = rustix::fs::Dir::read_from(fd)?;
    while let Some(e) = d.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n.to_vec()));
        }
    }
    for n in names {
        remove_all_at(fd, &n)?;
    }
    Ok(())
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks one layer tar stream into the (empty) directory `dest`, converting OCI whiteouts
/// into overlayfs form, with every path kept inside `dest` (see the module docs). Returns the
/// `sha256:` digest of the uncompressed stream (the layer's diff id). On error `dest` holds a
/// partial tree for the caller to remove; nothing outside it was touched.
pub fn unpack_layer<R: Read>(reader: R, dest: &Path) -> Result<String, LayerError> {
    unpack(reader, dest, true)
}

/// [`unpack_layer`] walking paths one component at a time, as on kernels without openat2
/// (tests and fuzzing only).
#[cfg(any(test, fuzzing))]
pub(crate) fn unpack_layer_per_component<R: Read>(
    reader: R,
    dest: &Path,
) -> Result<String, LayerError> {
    unpack(reader, dest, false)
}

fn unpack<R: Read>(reader: R, dest: &Path, openat2: bool) -> Result<String, LayerError> {
    let root =
        rustix::fs::open(dest, DIR_FLAGS, Mode::empty()).map_err(|e| LayerError::Read(e.into()))?;
    let mut u = Unpacker {
        root,
        no_openat2: !openat2,
        dirs: Vec::new(),
        opaque: Vec::new(),
    };
    let mut hr = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
    };
    {
        let mut ar = tar::Archive::new(&mut hr);
        for entry in ar.entries().map_err(LayerError::Read)? {
            u.unpack_entry(entry.map_err(LayerError::Read)?)?;
        }
    }
    u.finish()?;
    // The tar reader may stop before the end-of-archive padding; the digest covers everything.
    io::copy(&mut hr, &mut io::sink()).map_err(LayerError::Read)?;
    Ok(format!("sha256:{}", hex::encode(hr.hasher.finalize())))
}
