//! Two-way rounds: seeded operations on both hosts of a two-way pair (`<twoWay>`), with
//! sersyncd killed (-9 or SIGTERM) and restarted, a peer's rsync daemon stopped and
//! started, and a full sync asked for (`sersyncctl full-sync`, on a private bus of each
//! side's), while both sides keep working. At the end of every round both roots must be
//! equal, and every path only one side touched in that round must be as that side left it
//! (nothing lost, nothing resurrected, nothing made by one side dropped by the other).
//!
//! Paths both sides touched in a round (or one touched a path and the other one of its
//! ancestors or descendants) are *contested*: the rules decide them (newest wins, a
//! modification beats a deletion) and only equality of the two roots is checked there.
//!
//! Each side works mostly in an area of its own (`a/`, `b/`) and sometimes in a shared one
//! (`s/`). The operations are drawn from what is on the side's disk at that moment, which
//! depends on timing: a seed does not replay exactly. Each round's operations, with times,
//! are written to `target/tmp/two-way-SEED-ops.log`, beside both daemons' logs.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::bus::{Bus, Policy, SERSYNCCTL};
use crate::harness::{RsyncDaemon, Sersyncd, SersyncdBuilder};
use crate::rng::Rng;

const OPS_PER_ROUND: usize = 30;
const ROUNDS: usize = 6;

/// What one path is: the replicated properties (mtimes aside: the roots are compared as
/// the operations left them, and "newest" is the daemons' business).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, contents: Vec<u8> },
    Symlink { target: PathBuf },
    Other,
}

impl Entry {
    fn describe(entry: Option<&Entry>) -> String {
        match entry {
            None => "absent".to_owned(),
            Some(Entry::Dir { mode }) => format!("dir {mode:o}"),
            Some(Entry::File { mode, contents }) => format!(
                "file {mode:o} {:?}",
                String::from_utf8_lossy(&contents[..contents.len().min(40)])
            ),
            Some(Entry::Symlink { target }) => format!("symlink -> {target:?}"),
            Some(Entry::Other) => "special file".to_owned(),
        }
    }
}

type Tree = BTreeMap<String, Entry>;

/// An operation on a side's root, run once its paths are known.
type Action = Box<dyn FnOnce() -> std::io::Result<()>>;

fn entry_at(path: &Path) -> Option<Entry> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o7777;
    let kind = meta.file_type();
    Some(if kind.is_dir() {
        Entry::Dir { mode }
    } else if kind.is_symlink() {
        Entry::Symlink {
            target: std::fs::read_link(path).ok()?,
        }
    } else if kind.is_file() {
        Entry::File {
            mode,
            contents: std::fs::read(path).ok()?,
        }
    } else {
        Entry::Other
    })
}

/// `rel` and everything below it on `root` (sersync's own directories aside).
fn tree_under(root: &Path, rel: &str) -> Tree {
    let mut tree = Tree::new();
    let mut pending = vec![rel.to_owned()];
    while let Some(rel) = pending.pop() {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let Some(entry) = entry_at(&path) else {
            continue;
        };
        if matches!(entry, Entry::Dir { .. }) {
            if let Ok(children) = std::fs::read_dir(&path) {
                for child in children.flatten() {
                    let name = child.file_name().to_string_lossy().into_owned();
                    if rel.is_empty() && name.starts_with(".sersync-") {
                        continue;
                    }
                    pending.push(if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    });
                }
            }
        }
        if !rel.is_empty() {
            tree.insert(rel, entry);
        }
    }
    tree
}

fn whole_tree(root: &Path) -> Tree {
    tree_under(root, "")
}

/// `a` is `b` or an ancestor or descendant of it.
fn related(a: &str, b: &str) -> bool {
    let below =
        |x: &str, y: &str| x.len() > y.len() && x.starts_with(y) && x.as_bytes()[y.len()] == b'/';
    a == b || below(a, b) || below(b, a)
}

fn differences(a: &Tree, b: &Tree, skip: impl Fn(&str) -> bool) -> Vec<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|key| !skip(key) && a.get(*key) != b.get(*key))
        .map(|key| {
            format!(
                "{key}: {} / {}",
                Entry::describe(a.get(key)),
                Entry::describe(b.get(key))
            )
        })
        .collect()
}

/// One host: its root (served by its rsync daemon) and its sersyncd, which is `None` while
/// a restart runs on a thread of its own.
struct Side {
    name: &'static str,
    root: PathBuf,
    sersyncd: Option<Sersyncd>,
    restarting: Option<std::thread::JoinHandle<Sersyncd>>,
    /// What this side's operations left, per path, in this round, and whether the last
    /// one ran while this side's sersyncd was down (before its restart was ready).
    touched: BTreeMap<String, (Option<Entry>, bool)>,
}

impl Side {
    fn log(&self) -> String {
        self.sersyncd
            .as_ref()
            .map(Sersyncd::log)
            .unwrap_or_default()
    }

    fn offline(&self) -> bool {
        self.restarting
            .as_ref()
            .is_some_and(|handle| !handle.is_finished())
    }

    fn finish_restart(&mut self) {
        if let Some(handle) = self.restarting.take() {
            self.sersyncd = Some(handle.join().expect("the restart thread"));
        }
    }
}

fn builder(root: &Path, peer: &RsyncDaemon) -> SersyncdBuilder {
    SersyncdBuilder::new()
        .root(root, &[peer.remote("m")])
        .rsyncd(peer)
        .raw_sersync_xml("        <twoWay start=\"true\"/>\n        <softDelete start=\"true\"/>\n")
}

struct Pair {
    /// Each side's control bus (`--bus-address`), where a fault asks for a full sync.
    buses: [Bus; 2],
    daemons: [RsyncDaemon; 2],
    sides: [Side; 2],
    rng: Rng,
    log: Vec<String>,
    started: Instant,
    serial: u64,
}

const NAMES: [&str; 2] = ["a", "b"];

impl Pair {
    fn new(seed: u64) -> Pair {
        let daemons = [RsyncDaemon::new(&["m"]), RsyncDaemon::new(&["m"])];
        let roots = [
            daemons[0].replica("m").to_path_buf(),
            daemons[1].replica("m").to_path_buf(),
        ];
        for root in &roots {
            for area in ["a", "b", "s"] {
                std::fs::create_dir_all(root.join(area)).unwrap();
            }
        }
        let buses = [0, 1].map(|_| Bus::start(Policy::Permissive).expect("dbus-daemon"));
        let sides = [0, 1].map(|i| Side {
            name: NAMES[i],
            root: roots[i].clone(),
            sersyncd: Some(
                builder(&roots[i], &daemons[1 - i])
                    .arg("--bus-address")
                    .arg(buses[i].address())
                    .start(),
            ),
            restarting: None,
            touched: BTreeMap::new(),
        });
        Pair {
            buses,
            daemons,
            sides,
            rng: Rng::new(seed),
            log: Vec::new(),
            started: Instant::now(),
            serial: 0,
        }
    }

    fn note(&mut self, what: String) {
        self.log.push(format!(
            "{:9.3} {what}",
            self.started.elapsed().as_secs_f64()
        ));
    }

    /// A path in one of `side`'s areas: a file name or a directory name at depth 1 to 3.
    fn pick_path(&mut self, side: usize, dir: bool) -> String {
        let area = if self.rng.chance(60) {
            NAMES[side]
        } else {
            "s"
        };
        let depth = self.rng.range(1, 3) as usize;
        let mut path = area.to_owned();
        for level in 0..depth {
            let last = level + 1 == depth;
            let name = if last && !dir {
                format!("f{}", self.rng.below(5))
            } else {
                format!("d{}", self.rng.below(3))
            };
            path = format!("{path}/{name}");
        }
        path
    }

    /// An existing entry of `side`'s areas that `want` accepts, if there is one.
    fn pick_existing(&mut self, side: usize, want: impl Fn(&Entry) -> bool) -> Option<String> {
        let own = NAMES[side];
        let root = self.sides[side].root.clone();
        let candidates: Vec<String> = whole_tree(&root)
            .into_iter()
            .filter(|(path, entry)| {
                (path.starts_with(&format!("{own}/")) || path.starts_with("s/")) && want(entry)
            })
            .map(|(path, _)| path)
            .collect();
        self.rng.pick(&candidates).cloned()
    }

    fn contents(&mut self, side: usize) -> Vec<u8> {
        self.serial += 1;
        let line = format!("{} {} {}\n", NAMES[side], self.serial, self.rng.next_u64());
        let repeat = self.rng.range(1, 40) as usize;
        line.repeat(repeat).into_bytes()
    }

    /// The topmost of `path` and its ancestors that does not exist on `root` (what an
    /// operation that makes `path`'s parents changes), or `path`.
    fn scope(root: &Path, path: &str) -> String {
        let mut top = path.to_owned();
        let mut at = path;
        while let Some((parent, _)) = at.rsplit_once('/') {
            if root.join(parent).symlink_metadata().is_ok() {
                break;
            }
            top = parent.to_owned();
            at = parent;
        }
        top
    }

    /// Runs one operation on `side`, recording what it left under every path it touched.
    fn operate(&mut self, side: usize) {
        let root = self.sides[side].root.clone();
        let kind = self.rng.weighted(&[30, 8, 10, 10, 8, 5, 6, 4]);
        let (what, scopes, action): (String, Vec<String>, Action) = match kind {
            0 | 1 => {
                let path = self.pick_path(side, false);
                let data = self.contents(side);
                let full = root.join(&path);
                let append = kind == 1;
                (
                    format!("{} {path}", if append { "append" } else { "write" }),
                    vec![Self::scope(&root, &path)],
                    Box::new(move || {
                        std::fs::create_dir_all(full.parent().unwrap())?;
                        use std::io::Write;
                        use std::os::unix::fs::OpenOptionsExt;
                        // A symlink is replaced, not written through.
                        std::fs::OpenOptions::new()
                            .custom_flags(nix::libc::O_NOFOLLOW)
                            .create(true)
                            .write(true)
                            .append(append)
                            .truncate(!append)
                            .open(&full)?
                            .write_all(&data)
                    }),
                )
            }
            2 => {
                let Some(path) = self.pick_existing(side, |e| !matches!(e, Entry::Dir { .. }))
                else {
                    return;
                };
                let full = root.join(&path);
                (
                    format!("unlink {path}"),
                    vec![path],
                    Box::new(move || std::fs::remove_file(full)),
                )
            }
            3 => {
                let Some(from) = self.pick_existing(side, |e| !matches!(e, Entry::Dir { .. }))
                else {
                    return;
                };
                let to = self.pick_path(side, false);
                let (full_from, full_to) = (root.join(&from), root.join(&to));
                (
                    format!("rename {from} {to}"),
                    vec![from, Self::scope(&root, &to)],
                    Box::new(move || {
                        std::fs::create_dir_all(full_to.parent().unwrap())?;
                        std::fs::rename(full_from, full_to)
                    }),
                )
            }
            4 => {
                let path = self.pick_path(side, true);
                let full = root.join(&path);
                (
                    format!("mkdir {path}"),
                    vec![Self::scope(&root, &path)],
                    Box::new(move || std::fs::create_dir_all(full)),
                )
            }
            5 => {
                let Some(path) = self.pick_existing(side, |e| matches!(e, Entry::Dir { .. }))
                else {
                    return;
                };
                let full = root.join(&path);
                (
                    format!("rm -rf {path}"),
                    vec![path],
                    Box::new(move || std::fs::remove_dir_all(full)),
                )
            }
            6 => {
                let Some(from) = self.pick_existing(side, |e| matches!(e, Entry::Dir { .. }))
                else {
                    return;
                };
                let to = self.pick_path(side, true);
                if related(&from, &to) {
                    return;
                }
                let (full_from, full_to) = (root.join(&from), root.join(&to));
                (
                    format!("rename-dir {from} {to}"),
                    vec![from, Self::scope(&root, &to)],
                    Box::new(move || {
                        std::fs::create_dir_all(full_to.parent().unwrap())?;
                        std::fs::rename(full_from, full_to)
                    }),
                )
            }
            _ => {
                let path = self.pick_path(side, false);
                let target = format!("t{}", self.rng.below(3));
                let full = root.join(&path);
                (
                    format!("symlink {path} -> {target}"),
                    vec![Self::scope(&root, &path)],
                    Box::new(move || {
                        std::fs::create_dir_all(full.parent().unwrap())?;
                        std::os::unix::fs::symlink(target, full)
                    }),
                )
            }
        };
        let mut before = Tree::new();
        for scope in &scopes {
            before.extend(tree_under(&root, scope));
        }
        let outcome = action();
        let mut after = Tree::new();
        for scope in &scopes {
            after.extend(tree_under(&root, scope));
        }
        let side_state = &mut self.sides[side];
        let offline = side_state.offline();
        // A failed operation left only what it changed (parents it made): what else is
        // there is not this side's doing (seed 49: a rename refused by a directory the
        // peer's full sync had just brought back over this side's removal, which the
        // daemon then removed again, as it should).
        let failed = outcome.is_err();
        let paths: BTreeSet<String> = before
            .keys()
            .chain(after.keys())
            .cloned()
            .chain(scopes.iter().cloned())
            .collect();
        for path in paths {
            let now = after.get(&path).cloned();
            if failed && before.get(&path) == now.as_ref() {
                continue;
            }
            side_state.touched.insert(path, (now, offline));
        }
        // An operation that makes its path's parents wants them there: one this side
        // removed earlier in the round, and that the peer brought back just before (its
        // full sync, listing before the removal reached it), is this side's again (seed
        // 11: a write into a directory removed a moment before, which a resurrection had
        // made again; without it, the write would have made it).
        if !failed {
            for scope in &scopes {
                for (at, _) in scope.match_indices('/') {
                    let ancestor = &scope[..at];
                    if matches!(side_state.touched.get(ancestor), Some((None, _))) {
                        let now = entry_at(&root.join(ancestor));
                        side_state
                            .touched
                            .insert(ancestor.to_owned(), (now, offline));
                    }
                }
            }
        }
        let result = match outcome {
            Ok(()) => String::new(),
            Err(err) => format!(" ({err})"),
        };
        let offline = if offline { " [sersyncd down]" } else { "" };
        self.note(format!("{}: {what}{result}{offline}", NAMES[side]));
    }

    /// A fault, now and then: sersyncd killed and restarted a moment later on a thread of
    /// its own (both sides keep working), the peer's rsync daemon down for a moment, or a
    /// full sync asked for while both sides work (as a timer unit or an operator does).
    fn fault(&mut self, side: usize) {
        match self.rng.weighted(&[3, 1, 1, 1]) {
            0 | 1 if self.sides[side].sersyncd.is_some() => {
                let kill = self.rng.chance(75);
                let delay = Duration::from_millis(self.rng.range(0, 1500));
                let mut sersyncd = self.sides[side].sersyncd.take().unwrap();
                let bus = self.buses[side].address().to_owned();
                if kill {
                    sersyncd.kill9();
                } else {
                    sersyncd.terminate();
                }
                self.sides[side].restarting = Some(std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    // After a clean stop, an operator starts it with -r (changes made
                    // meanwhile are seen by no watcher); after kill -9 it recovers alone.
                    if kill {
                        sersyncd.restart();
                    } else {
                        sersyncd.restart_with(&["-r", "--bus-address", &bus]);
                    }
                    sersyncd
                }));
                self.note(format!(
                    "{}: sersyncd {} (restart in {} ms)",
                    NAMES[side],
                    if kill { "kill -9" } else { "SIGTERM" },
                    delay.as_millis()
                ));
            }
            2 => {
                let down = Duration::from_millis(self.rng.range(100, 2000));
                self.note(format!(
                    "{}: rsync daemon down for {} ms",
                    NAMES[side],
                    down.as_millis()
                ));
                self.daemons[side].stop();
                std::thread::sleep(down);
                self.daemons[side].start();
            }
            3 => {
                let asked = std::process::Command::new(SERSYNCCTL)
                    .arg("--bus-address")
                    .arg(self.buses[side].address())
                    .arg("full-sync")
                    .output();
                let outcome = match asked {
                    Ok(out) if out.status.success() => String::new(),
                    Ok(out) => format!(
                        " ({}: {})",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                    Err(err) => format!(" ({err})"),
                };
                self.note(format!("{}: full sync asked for{outcome}", NAMES[side]));
            }
            _ => {}
        }
    }

    fn round(&mut self, round: usize) -> Result<(), String> {
        self.note(format!("---- round {round}"));
        let start = whole_tree(&self.sides[0].root);
        for side in &mut self.sides {
            side.touched.clear();
        }
        let fault_at = if self.rng.chance(70) {
            Some((self.rng.below(OPS_PER_ROUND), self.rng.below(2)))
        } else {
            None
        };
        for op in 0..OPS_PER_ROUND {
            if let Some((at, side)) = fault_at {
                if at == op {
                    self.fault(side);
                }
            }
            let side = self.rng.below(2);
            self.operate(side);
            if self.rng.chance(30) {
                std::thread::sleep(Duration::from_millis(self.rng.range(0, 300)));
            }
        }
        for side in &mut self.sides {
            side.finish_restart();
        }
        self.note("quiesce".to_owned());
        let converged = self.converge(Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(3));
        let settled = converged.and_then(|()| self.converge(Duration::from_secs(30)));
        self.note(format!("round {round} settled: {settled:?}"));
        settled?;
        self.check_model(&start)
    }

    fn converge(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let a = whole_tree(&self.sides[0].root);
            let b = whole_tree(&self.sides[1].root);
            let diff = differences(&a, &b, |_| false);
            if diff.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the roots differ after {timeout:?} (A / B):\n  {}",
                    diff[..diff.len().min(30)].join("\n  ")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every path only one side touched is as that side left it; every path no side
    /// touched is as it was at the start of the round. Removed while that side's sersyncd
    /// was down, a path may come back from the peer (resurrection is the safe failure,
    /// README "Two-way mode").
    fn check_model(&self, start: &Tree) -> Result<(), String> {
        let (ta, tb) = (&self.sides[0].touched, &self.sides[1].touched);
        let contested: Vec<&String> = ta
            .keys()
            .filter(|p| tb.keys().any(|q| related(p, q)))
            .chain(tb.keys().filter(|q| ta.keys().any(|p| related(p, q))))
            .collect();
        let mut expected = start.clone();
        let mut may_return = Vec::new();
        for touched in [ta, tb] {
            for (path, (entry, offline)) in touched {
                match entry {
                    Some(entry) => {
                        expected.insert(path.clone(), entry.clone());
                    }
                    None => {
                        expected.remove(path);
                        if *offline {
                            may_return.push(path);
                        }
                    }
                }
            }
        }
        let now = whole_tree(&self.sides[0].root);
        for path in may_return {
            if let Some(back) = now.get(path) {
                expected.insert(path.clone(), back.clone());
            }
        }
        let diff = differences(&expected, &now, |path| {
            contested.iter().any(|c| related(path, c))
        });
        if diff.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "paths only one side touched are not as it left them (expected / both roots):\n  {}",
                diff[..diff.len().min(30)].join("\n  ")
            ))
        }
    }

    fn write_logs(&self, seed: u64) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let _ = std::fs::create_dir_all(&dir);
        for side in &self.sides {
            let _ = std::fs::write(
                dir.join(format!("two-way-{seed}-{}.log", side.name)),
                side.log(),
            );
        }
        let ops = dir.join(format!("two-way-{seed}-ops.log"));
        let mut log = self.log.join("\n") + "\n";
        // Both roots as they ended, sersync's own directories (trash, incoming) included.
        for side in &self.sides {
            log.push_str(&format!("---- {}'s root, all of it\n", side.name));
            let mut pending = vec![side.root.clone()];
            let mut lines = Vec::new();
            while let Some(dir) = pending.pop() {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let path = entry.path();
                    let rel = path.strip_prefix(&side.root).unwrap_or(&path).to_path_buf();
                    let described = Entry::describe(entry_at(&path).as_ref());
                    lines.push(format!("{} {described}", rel.display()));
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        pending.push(path);
                    }
                }
            }
            lines.sort();
            log.push_str(&(lines.join("\n") + "\n"));
        }
        let _ = std::fs::write(&ops, log);
        ops
    }
}

/// Runs one seed's rounds; on failure, the report (the logs are in target/tmp).
pub fn run_seed(seed: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut pair = Pair::new(seed);
    for round in 0..ROUNDS {
        if let Err(what) = pair.round(round) {
            for side in &mut pair.sides {
                side.finish_restart();
            }
            let ops = pair.write_logs(seed);
            return Err(format!(
                "two-way seed {seed}, round {round}: {what}\n(operations: {}; daemons' logs beside it)",
                ops.display()
            ));
        }
    }
    pair.write_logs(seed);
    Ok(started.elapsed())
}
