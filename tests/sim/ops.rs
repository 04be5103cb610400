//! The operations of the simulation: what a user, a deploy script or an editor does to the
//! source tree, and the faults an operator meets. Ops are concrete (paths, sizes, seeds),
//! so a recorded list replays exactly; an op whose target is gone just fails and is logged.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// A change to the source tree (paths relative to the root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create or overwrite (O_TRUNC) with `len` pseudo-random bytes.
    Write {
        path: Vec<u8>,
        len: usize,
        seed: u64,
    },
    Append {
        path: Vec<u8>,
        len: usize,
        seed: u64,
    },
    Truncate {
        path: Vec<u8>,
        len: usize,
    },
    /// Rewrite with the same size at once (same second, usually): only the nanoseconds of
    /// the mtime tell the versions apart.
    Rewrite {
        path: Vec<u8>,
        seed: u64,
    },
    Chmod {
        path: Vec<u8>,
        mode: u32,
    },
    /// Sets the mtime (often into the past: a rollback of the timestamp alone).
    SetMtime {
        path: Vec<u8>,
        secs: i64,
        nsec: i64,
    },
    /// New contents with an older mtime, as a deploy that restores the previous release.
    RestoreOld {
        path: Vec<u8>,
        len: usize,
        seed: u64,
        secs: i64,
    },
    Mkdir {
        path: Vec<u8>,
    },
    Symlink {
        path: Vec<u8>,
        target: Vec<u8>,
    },
    HardLink {
        existing: Vec<u8>,
        path: Vec<u8>,
    },
    /// `open(dir, O_TMPFILE)` + `linkat`: the final name never gets IN_CLOSE_WRITE.
    TmpfileLink {
        path: Vec<u8>,
        len: usize,
        seed: u64,
        write_after_link: bool,
    },
    /// rename(2): replaces a file, or an empty directory, at `to`.
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// renameat2(RENAME_EXCHANGE): two paths swap atomically.
    Exchange {
        a: Vec<u8>,
        b: Vec<u8>,
    },
    /// Moves a path out of the tree into the attic (same filesystem).
    MoveOut {
        path: Vec<u8>,
        slot: u32,
    },
    /// Moves an attic entry back into the tree.
    MoveIn {
        slot: u32,
        path: Vec<u8>,
    },
    /// rm -rf
    Remove {
        path: Vec<u8>,
    },
    Sleep {
        ms: u64,
    },
    Fault(Fault),
    /// The end of a round: faults healed, then every configured replica must equal the
    /// source.
    Quiesce,
}

/// Faults: remotes, receivers and the daemon itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    RemoteDown {
        remote: usize,
    },
    RemoteUp {
        remote: usize,
    },
    /// `read only = yes` on the remote's module: every write refused.
    ReadOnlyModule {
        remote: usize,
    },
    /// `chattr +i` on the replica's copy of `path` (a directory refuses new and removed
    /// entries, a file refuses changes and removal).
    Immutable {
        remote: usize,
        path: Vec<u8>,
    },
    /// A read-only bind mount over the replica's copy of directory `path`.
    ReadOnlyMount {
        remote: usize,
        path: Vec<u8>,
    },
    /// The receiver's filesystem fills up.
    DiskFull {
        remote: usize,
    },
    /// Undo every refusal and free the disk of `remote`.
    Repair {
        remote: usize,
    },
    Kill9,
    /// SIGTERM and wait for the exit.
    Sigterm,
    /// Start the stopped daemon (with `-r` when asked).
    Start {
        full_sync_first: bool,
    },
    /// kill -9, start (a recovery full sync begins), SIGTERM soon after READY, start
    /// again without `-r`.
    SigtermDuringRecovery {
        after_ms: u64,
    },
    /// SIGHUP with the same config.
    Reload,
    /// Rewrite the config with the remotes in `mask` (bit per remote) and SIGHUP.
    SetRemotes {
        mask: u8,
    },
    /// Restart the daemon with a tiny inotify queue (`max_queued_events`), so the next
    /// bursts overflow it.
    SmallQueue {
        events: u32,
    },
    /// Lower the daemon's inotify watch limit to its current watches + `headroom`.
    WatchLimit {
        headroom: u32,
    },
    /// Raise the watch limit again and reload.
    WatchLimitLifted,
}

/// What a source path is, for choosing targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// A file at the top of the source that no operation touches (it is left out of
/// [`listing`]): the replica guard refuses a full sync from an empty root to a remote that
/// is not empty, by design (README "Replica guard"), which is not what the simulation is
/// about. Every replica starts with a copy.
pub const ANCHOR: &str = "anchor.keep";

/// The source tree as a sorted list of (path, kind), without the [`ANCHOR`].
pub fn listing(root: &Path) -> Vec<(Vec<u8>, Kind)> {
    fn walk(dir: &Path, prefix: &[u8], out: &mut Vec<(Vec<u8>, Kind)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let mut rel = prefix.to_vec();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(entry.file_name().as_bytes());
            if rel == ANCHOR.as_bytes() {
                continue;
            }
            let kind = match std::fs::symlink_metadata(entry.path()) {
                Ok(m) if m.file_type().is_symlink() => Kind::Symlink,
                Ok(m) if m.is_dir() => Kind::Dir,
                Ok(m) if m.is_file() => Kind::File,
                _ => Kind::Other,
            };
            out.push((rel.clone(), kind));
            if kind == Kind::Dir {
                walk(&entry.path(), &rel, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &[], &mut out);
    out
}

/// Names a tree may hold: a few short ones (so operations collide), and the hostile set.
pub const NAMES: &[&[u8]] = &[
    b"a",
    b"b",
    b"c",
    b"d",
    b"a",
    b"b",
    b"x.txt",
    b"release",
    b"-rf",
    b"it's \"quoted\"",
    b"`id`$(touch pwned)",
    b"new\nline",
    b"*?[x]",
    b"\xff\xfe-not-utf8",
    b"#hash",
    b";semi",
    b"back\\slash",
    b"sp ace",
    b"a-name-longer-than-fifteen-bytes",
    b".dotfile",
    b"tilde~",
];

const MAX_DEPTH: usize = 3;
const MAX_ENTRIES: usize = 90;

fn depth(path: &[u8]) -> usize {
    if path.is_empty() {
        0
    } else {
        path.iter().filter(|&&b| b == b'/').count() + 1
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = dir.to_vec();
    if !out.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// Whether `path` is `dir` or below it.
pub fn under(path: &[u8], dir: &[u8]) -> bool {
    path == dir || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
}

/// Chooses the operations of rounds from the live source tree and the generator's own
/// idea of the fault state.
#[derive(Debug)]
pub struct Generator {
    pub rng: Rng,
    pub remotes: usize,
    /// Which faults the world can inject (root-only ones are off without root).
    pub privileged: bool,
    attic_next: u32,
    attic: Vec<u32>,
    /// The daemon is stopped; `Some(true)` after a clean stop (changes since then need
    /// `-r`), `Some(false)` after kill -9 (the next start recovers by itself).
    daemon_down: Option<bool>,
    configured: u8,
}

impl Generator {
    pub fn new(seed: u64, remotes: usize, privileged: bool) -> Generator {
        Generator {
            rng: Rng::new(seed),
            remotes,
            privileged,
            attic_next: 0,
            attic: Vec::new(),
            daemon_down: None,
            configured: (1u8 << remotes) - 1,
        }
    }

    /// One round: changes with faults between them, ending in [`Op::Quiesce`]. The
    /// tree is read again after each op is applied (`apply` is called in between).
    pub fn round(&mut self, root: &Path, mut apply: impl FnMut(&Op)) -> Vec<Op> {
        let mut ops = Vec::new();
        let count = self.rng.range(4, 28) as usize;
        let faults = self.rng.weighted(&[30, 45, 25]);
        let mut fault_at: Vec<usize> = (0..faults).map(|_| self.rng.below(count + 1)).collect();
        fault_at.sort_unstable();
        for i in 0..=count {
            while fault_at.first() == Some(&i) {
                fault_at.remove(0);
                let tree = listing(root);
                for op in self.fault(&tree) {
                    apply(&op);
                    ops.push(op);
                }
            }
            if i == count {
                break;
            }
            let tree = listing(root);
            for op in self.change(&tree) {
                apply(&op);
                ops.push(op);
            }
        }
        // The daemon must be running at a quiescent point; a clean stop followed by
        // changes needs -r to see them (README: changes made while it is stopped).
        if let Some(full_sync_first) = self.daemon_down.take() {
            let op = Op::Fault(Fault::Start { full_sync_first });
            apply(&op);
            ops.push(op);
        }
        ops.push(Op::Quiesce);
        apply(&Op::Quiesce);
        ops
    }

    /// One user-level change (sometimes a few renames at once: a swap).
    fn change(&mut self, tree: &[(Vec<u8>, Kind)]) -> Vec<Op> {
        let files: Vec<&Vec<u8>> = tree
            .iter()
            .filter(|(_, k)| *k == Kind::File)
            .map(|(p, _)| p)
            .collect();
        let dirs: Vec<&Vec<u8>> = tree
            .iter()
            .filter(|(_, k)| *k == Kind::Dir)
            .map(|(p, _)| p)
            .collect();
        let any: Vec<&Vec<u8>> = tree.iter().map(|(p, _)| p).collect();
        let crowded = tree.len() > MAX_ENTRIES;
        let weights = [
            20,                                        // 0 write
            5,                                         // 1 append
            3,                                         // 2 truncate
            6,                                         // 3 rewrite same size
            4,                                         // 4 chmod
            4,                                         // 5 set mtime
            3,                                         // 6 restore old
            if crowded { 1 } else { 9 },               // 7 mkdir
            4,                                         // 8 symlink
            3,                                         // 9 hard link
            3,                                         // 10 O_TMPFILE
            8,                                         // 11 rename file
            7,                                         // 12 rename dir
            4,                                         // 13 swap dirs via a temp name
            3,                                         // 14 exchange
            3,                                         // 15 move out
            if self.attic.is_empty() { 0 } else { 4 }, // 16 move in
            if crowded { 20 } else { 6 },              // 17 remove
            4,                                         // 18 replace type
            5,                                         // 19 sleep
        ];
        let seed = self.rng.next_u64();
        match self.rng.weighted(&weights) {
            0 => {
                let path = if !files.is_empty() && self.rng.chance(40) {
                    self.rng.pick(&files).map(|p| p.to_vec()).unwrap()
                } else {
                    self.new_path(&dirs)
                };
                vec![Op::Write {
                    path,
                    len: self.size(),
                    seed,
                }]
            }
            1 => self.on_file(&files, |path, g| Op::Append {
                path,
                len: g.rng.range(1, 3000) as usize,
                seed,
            }),
            2 => self.on_file(&files, |path, g| Op::Truncate {
                path,
                len: g.rng.range(0, 100) as usize,
            }),
            3 => self.on_file(&files, |path, _| Op::Rewrite { path, seed }),
            4 => {
                let Some(path) = self.rng.pick(&any).map(|p| p.to_vec()) else {
                    return vec![];
                };
                let modes = [0o644, 0o600, 0o755, 0o700, 0o640, 0o444, 0o1777, 0o2755];
                let mode = *self.rng.pick(&modes).unwrap();
                vec![Op::Chmod { path, mode }]
            }
            5 => {
                let Some(path) = self.rng.pick(&any).map(|p| p.to_vec()) else {
                    return vec![];
                };
                let secs = self.rng.range(1_500_000_000, 1_700_000_000) as i64;
                let nsec = if self.rng.chance(50) {
                    0
                } else {
                    self.rng.range(0, 999_999_999) as i64
                };
                vec![Op::SetMtime { path, secs, nsec }]
            }
            6 => {
                let path = if !files.is_empty() && self.rng.chance(70) {
                    self.rng.pick(&files).map(|p| p.to_vec()).unwrap()
                } else {
                    self.new_path(&dirs)
                };
                let secs = self.rng.range(1_500_000_000, 1_700_000_000) as i64;
                vec![Op::RestoreOld {
                    path,
                    len: self.size(),
                    seed,
                    secs,
                }]
            }
            7 => {
                let mut path = self.new_path(&dirs);
                let mut ops = vec![Op::Mkdir { path: path.clone() }];
                // Sometimes mkdir -p and a file at once: the classic mkdir-then-write race.
                while depth(&path) < MAX_DEPTH && self.rng.chance(40) {
                    path = join(&path, self.name());
                    ops.push(Op::Mkdir { path: path.clone() });
                }
                if self.rng.chance(60) {
                    ops.push(Op::Write {
                        path: join(&path, self.name()),
                        len: self.size(),
                        seed,
                    });
                }
                ops
            }
            8 => {
                let path = self.new_path(&dirs);
                let target = match self.rng.below(4) {
                    0 => b"../elsewhere/missing".to_vec(),
                    1 => self
                        .rng
                        .pick(&any)
                        .map(|p| p.to_vec())
                        .unwrap_or_else(|| b"a".to_vec()),
                    2 => b"/etc/hostname".to_vec(),
                    _ => self.name().to_vec(),
                };
                vec![Op::Symlink { path, target }]
            }
            9 => self.on_file(&files, |existing, g| Op::HardLink {
                existing,
                path: g.new_path(&dirs),
            }),
            10 => {
                let path = self.new_path(&dirs);
                vec![Op::TmpfileLink {
                    path,
                    len: self.size(),
                    seed,
                    write_after_link: self.rng.chance(40),
                }]
            }
            11 => {
                let candidates: Vec<&Vec<u8>> = tree
                    .iter()
                    .filter(|(_, k)| *k != Kind::Dir)
                    .map(|(p, _)| p)
                    .collect();
                let Some(from) = self.rng.pick(&candidates).map(|p| p.to_vec()) else {
                    return vec![];
                };
                let to = if self.rng.chance(30) && !files.is_empty() {
                    self.rng.pick(&files).map(|p| p.to_vec()).unwrap()
                } else {
                    self.new_path(&dirs)
                };
                vec![Op::Rename { from, to }]
            }
            12 => {
                let Some(from) = self.rng.pick(&dirs).map(|p| p.to_vec()) else {
                    return vec![];
                };
                let to = self.new_path(&dirs);
                if under(&to, &from) {
                    return vec![];
                }
                vec![Op::Rename { from, to }]
            }
            13 => {
                // The atomic-deploy pattern: mv a t; mv b a; mv t b.
                if dirs.len() < 2 {
                    return vec![];
                }
                let a = self.rng.pick(&dirs).map(|p| p.to_vec()).unwrap();
                let b = self.rng.pick(&dirs).map(|p| p.to_vec()).unwrap();
                if under(&a, &b) || under(&b, &a) {
                    return vec![];
                }
                let parent = &a[..a.iter().rposition(|&c| c == b'/').unwrap_or(0)];
                let t = join(parent, b"swap-tmp");
                vec![
                    Op::Rename {
                        from: a.clone(),
                        to: t.clone(),
                    },
                    Op::Rename {
                        from: b.clone(),
                        to: a,
                    },
                    Op::Rename { from: t, to: b },
                ]
            }
            14 => {
                if any.len() < 2 {
                    return vec![];
                }
                let a = self.rng.pick(&any).map(|p| p.to_vec()).unwrap();
                let b = self.rng.pick(&any).map(|p| p.to_vec()).unwrap();
                if under(&a, &b) || under(&b, &a) {
                    return vec![];
                }
                vec![Op::Exchange { a, b }]
            }
            15 => {
                let Some(path) = self.rng.pick(&any).map(|p| p.to_vec()) else {
                    return vec![];
                };
                let slot = self.attic_next;
                self.attic_next += 1;
                self.attic.push(slot);
                let mut ops = vec![Op::MoveOut {
                    path: path.clone(),
                    slot,
                }];
                // Often straight back, under the same name or another one.
                if self.rng.chance(50) {
                    self.attic.retain(|&s| s != slot);
                    let to = if self.rng.chance(50) {
                        path
                    } else {
                        self.new_path(&dirs)
                    };
                    ops.push(Op::MoveIn { slot, path: to });
                }
                ops
            }
            16 => {
                let i = self.rng.below(self.attic.len());
                let slot = self.attic.remove(i);
                vec![Op::MoveIn {
                    slot,
                    path: self.new_path(&dirs),
                }]
            }
            17 => {
                let Some(path) = self.rng.pick(&any).map(|p| p.to_vec()) else {
                    return vec![];
                };
                vec![Op::Remove { path }]
            }
            18 => {
                let Some(path) = self.rng.pick(&any).map(|p| p.to_vec()) else {
                    return vec![];
                };
                let replacement = match self.rng.below(3) {
                    0 => Op::Mkdir { path: path.clone() },
                    1 => Op::Write {
                        path: path.clone(),
                        len: self.size(),
                        seed,
                    },
                    _ => Op::Symlink {
                        path: path.clone(),
                        target: b"a".to_vec(),
                    },
                };
                let mut ops = vec![Op::Remove { path: path.clone() }, replacement];
                if matches!(ops[1], Op::Mkdir { .. }) && self.rng.chance(60) {
                    ops.push(Op::Write {
                        path: join(&path, self.name()),
                        len: self.size(),
                        seed,
                    });
                }
                ops
            }
            _ => {
                let ms = match self.rng.below(10) {
                    0 => 1100, // across a second boundary
                    1..=3 => self.rng.range(50, 300),
                    _ => self.rng.range(0, 20),
                };
                vec![Op::Sleep { ms }]
            }
        }
    }

    fn on_file(
        &mut self,
        files: &[&Vec<u8>],
        make: impl FnOnce(Vec<u8>, &mut Self) -> Op,
    ) -> Vec<Op> {
        match self.rng.pick(files).map(|p| p.to_vec()) {
            Some(path) => vec![make(path, self)],
            None => vec![],
        }
    }

    fn name(&mut self) -> &'static [u8] {
        NAMES[self.rng.below(NAMES.len())]
    }

    /// A path in an existing directory (or the root), not deeper than [`MAX_DEPTH`].
    fn new_path(&mut self, dirs: &[&Vec<u8>]) -> Vec<u8> {
        let shallow: Vec<&Vec<u8>> = dirs
            .iter()
            .copied()
            .filter(|d| depth(d) < MAX_DEPTH)
            .collect();
        let parent = if shallow.is_empty() || self.rng.chance(35) {
            Vec::new()
        } else {
            self.rng.pick(&shallow).map(|p| p.to_vec()).unwrap()
        };
        join(&parent, self.name())
    }

    fn size(&mut self) -> usize {
        match self.rng.below(20) {
            0 => 0,
            1 => self.rng.range(200_000, 2_000_000) as usize,
            2..=4 => self.rng.range(4_000, 60_000) as usize,
            _ => self.rng.range(1, 3_000) as usize,
        }
    }

    fn fault(&mut self, tree: &[(Vec<u8>, Kind)]) -> Vec<Op> {
        let remote = self.rng.below(self.remotes);
        let p = self.privileged;
        let weights = [
            10,                    // 0 remote down (and maybe up again)
            if p { 6 } else { 0 }, // 1 read-only module
            if p { 8 } else { 0 }, // 2 immutable path
            if p { 6 } else { 0 }, // 3 read-only mount
            if p { 4 } else { 0 }, // 4 disk full
            8,                     // 5 kill -9 (+ start)
            6,                     // 6 SIGTERM (+ start)
            4,                     // 7 SIGTERM during recovery
            5,                     // 8 reload
            5,                     // 9 reload with other remotes
            if p { 3 } else { 0 }, // 10 small inotify queue
            if p { 4 } else { 0 }, // 11 watch limit
        ];
        if let Some(full_sync_first) = self.daemon_down.take() {
            return vec![Op::Fault(Fault::Start { full_sync_first })];
        }
        let mut ops = Vec::new();
        match self.rng.weighted(&weights) {
            0 => {
                ops.push(Op::Fault(Fault::RemoteDown { remote }));
                if self.rng.chance(40) {
                    ops.push(Op::Sleep {
                        ms: self.rng.range(100, 1500),
                    });
                    ops.push(Op::Fault(Fault::RemoteUp { remote }));
                }
            }
            1 => ops.push(Op::Fault(Fault::ReadOnlyModule { remote })),
            2 => {
                let path = self.pick_in(tree, |kind| kind != Kind::Symlink);
                ops.push(Op::Fault(Fault::Immutable { remote, path }));
            }
            3 => {
                let path = self.pick_in(tree, |kind| kind == Kind::Dir);
                ops.push(Op::Fault(Fault::ReadOnlyMount { remote, path }));
            }
            4 => ops.push(Op::Fault(Fault::DiskFull { remote })),
            5 => {
                ops.push(Op::Fault(Fault::Kill9));
                if self.rng.chance(60) {
                    ops.push(Op::Fault(Fault::Start {
                        full_sync_first: false,
                    }));
                } else {
                    self.daemon_down = Some(false);
                }
            }
            6 => {
                ops.push(Op::Fault(Fault::Sigterm));
                if self.rng.chance(60) {
                    ops.push(Op::Fault(Fault::Start {
                        full_sync_first: false,
                    }));
                } else {
                    self.daemon_down = Some(true);
                }
            }
            7 => ops.push(Op::Fault(Fault::SigtermDuringRecovery {
                after_ms: self.rng.range(0, 400),
            })),
            8 => ops.push(Op::Fault(Fault::Reload)),
            9 => {
                let all = (1u8 << self.remotes) - 1;
                let mask = if self.configured != all || self.rng.chance(30) {
                    all
                } else {
                    1 + self.rng.below(all as usize) as u8
                };
                self.configured = mask;
                ops.push(Op::Fault(Fault::SetRemotes { mask }));
            }
            10 => ops.push(Op::Fault(Fault::SmallQueue { events: 16 })),
            _ => ops.push(Op::Fault(Fault::WatchLimit {
                headroom: self.rng.range(0, 3) as u32,
            })),
        }
        if self.rng.chance(30) {
            ops.push(Op::Fault(Fault::Repair { remote }));
        }
        ops
    }

    /// A source path of a kind that `fits` (or the root), chosen when the fault is
    /// generated: its replica copy usually exists (the fault is a no-op if it does not).
    fn pick_in(&mut self, tree: &[(Vec<u8>, Kind)], fits: impl Fn(Kind) -> bool) -> Vec<u8> {
        let candidates: Vec<&Vec<u8>> = tree
            .iter()
            .filter(|(_, kind)| fits(*kind))
            .map(|(path, _)| path)
            .collect();
        if candidates.is_empty() || self.rng.chance(20) {
            return Vec::new();
        }
        self.rng
            .pick(&candidates)
            .map(|p| p.to_vec())
            .unwrap_or_default()
    }
}

/// Pseudo-random contents.
pub fn contents(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Applies one source-tree change under `root` (attic for moves out). Returns the error,
/// if any, for the log; a failed op is part of the scenario, not a test failure.
pub fn apply_change(root: &Path, attic: &Path, op: &Op) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let at = |p: &[u8]| root.join(os(p));
    // inotify reports a change under the name it was made through only: a file with
    // several hard links changed in place leaves its other names stale until the next
    // full sync (README, "Guarantees"). Those changes are not part of the scenario.
    let in_place = match op {
        Op::Write { path, .. }
        | Op::Append { path, .. }
        | Op::Truncate { path, .. }
        | Op::Rewrite { path, .. }
        | Op::Chmod { path, .. }
        | Op::SetMtime { path, .. }
        | Op::RestoreOld { path, .. } => Some(path),
        _ => None,
    };
    if let Some(path) = in_place {
        if std::fs::symlink_metadata(at(path)).is_ok_and(|m| m.is_file() && m.nlink() > 1) {
            return Err(std::io::Error::other(
                "skipped: a file with several hard links",
            ));
        }
    }
    match op {
        Op::Write { path, len, seed } => std::fs::write(at(path), contents(*len, *seed)),
        Op::Append { path, len, seed } => {
            let mut f = std::fs::OpenOptions::new().append(true).open(at(path))?;
            f.write_all(&contents(*len, *seed))
        }
        Op::Truncate { path, len } => {
            let f = std::fs::OpenOptions::new().write(true).open(at(path))?;
            f.set_len(*len as u64)
        }
        Op::Rewrite { path, seed } => {
            let len = std::fs::symlink_metadata(at(path))?.len() as usize;
            if !std::fs::symlink_metadata(at(path))?.is_file() {
                return Err(std::io::Error::other("not a file"));
            }
            let mut bytes = contents(len, *seed);
            if len > 0 {
                bytes[0] ^= 0x55;
            }
            let mut f = std::fs::OpenOptions::new().write(true).open(at(path))?;
            f.write_all(&bytes)
        }
        Op::Chmod { path, mode } => {
            let meta = std::fs::symlink_metadata(at(path))?;
            if meta.file_type().is_symlink() {
                return Err(std::io::Error::other("symlink"));
            }
            std::fs::set_permissions(at(path), std::fs::Permissions::from_mode(*mode))
        }
        Op::SetMtime { path, secs, nsec } => set_mtime(&at(path), *secs, *nsec),
        Op::RestoreOld {
            path,
            len,
            seed,
            secs,
        } => {
            std::fs::write(at(path), contents(*len, *seed))?;
            set_mtime(&at(path), *secs, 0)
        }
        Op::Mkdir { path } => std::fs::create_dir(at(path)),
        Op::Symlink { path, target } => std::os::unix::fs::symlink(os(target), at(path)),
        Op::HardLink { existing, path } => std::fs::hard_link(at(existing), at(path)),
        Op::TmpfileLink {
            path,
            len,
            seed,
            write_after_link,
        } => tmpfile_link(&at(path), &contents(*len, *seed), *write_after_link),
        Op::Rename { from, to } => std::fs::rename(at(from), at(to)),
        Op::Exchange { a, b } => nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &at(a),
            nix::fcntl::AT_FDCWD,
            &at(b),
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(std::io::Error::from),
        Op::MoveOut { path, slot } => std::fs::rename(at(path), attic.join(slot.to_string())),
        Op::MoveIn { slot, path } => std::fs::rename(attic.join(slot.to_string()), at(path)),
        Op::Remove { path } => {
            let p = at(path);
            match std::fs::symlink_metadata(&p)? {
                m if m.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            }
        }
        Op::Sleep { ms } => {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
            Ok(())
        }
        Op::Fault(_) | Op::Quiesce => Ok(()),
    }
}

fn set_mtime(path: &Path, secs: i64, nsec: i64) -> std::io::Result<()> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let now = TimeSpec::new(secs, nsec);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &now,
        &now,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
}

fn tmpfile_link(path: &Path, bytes: &[u8], write_after_link: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir: PathBuf = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o644)
        .open(&dir)?;
    if !write_after_link {
        file.write_all(bytes)?;
    }
    nix::unistd::linkat(
        &file,
        "",
        nix::fcntl::AT_FDCWD,
        path,
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .map_err(std::io::Error::from)?;
    if write_after_link {
        file.write_all(bytes)?;
    }
    Ok(())
}

/// One op for the log, names escaped.
pub fn show(op: &Op) -> String {
    let p = |b: &[u8]| format!("\"{}\"", b.escape_ascii());
    match op {
        Op::Write { path, len, .. } => format!("write {} ({len} B)", p(path)),
        Op::Append { path, len, .. } => format!("append {} (+{len} B)", p(path)),
        Op::Truncate { path, len } => format!("truncate {} to {len}", p(path)),
        Op::Rewrite { path, .. } => format!("rewrite same size {}", p(path)),
        Op::Chmod { path, mode } => format!("chmod {mode:o} {}", p(path)),
        Op::SetMtime { path, secs, nsec } => format!("set mtime {} {secs}.{nsec:09}", p(path)),
        Op::RestoreOld {
            path, len, secs, ..
        } => format!("restore old {} ({len} B, mtime {secs})", p(path)),
        Op::Mkdir { path } => format!("mkdir {}", p(path)),
        Op::Symlink { path, target } => format!("symlink {} -> {}", p(path), p(target)),
        Op::HardLink { existing, path } => format!("link {} {}", p(existing), p(path)),
        Op::TmpfileLink {
            path,
            len,
            write_after_link,
            ..
        } => format!(
            "O_TMPFILE+linkat {} ({len} B, written {})",
            p(path),
            if *write_after_link {
                "after link"
            } else {
                "before link"
            }
        ),
        Op::Rename { from, to } => format!("mv {} {}", p(from), p(to)),
        Op::Exchange { a, b } => format!("exchange {} {}", p(a), p(b)),
        Op::MoveOut { path, slot } => format!("mv {} attic/{slot}", p(path)),
        Op::MoveIn { slot, path } => format!("mv attic/{slot} {}", p(path)),
        Op::Remove { path } => format!("rm -rf {}", p(path)),
        Op::Sleep { ms } => format!("sleep {ms} ms"),
        Op::Fault(fault) => format!("FAULT {fault:?}").replace("path: [", "path: bytes ["),
        Op::Quiesce => "-- quiesce: heal faults, wait for every replica == source".to_owned(),
    }
}
