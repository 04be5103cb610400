//! The tree of watched directories, kept small.
//!
//! inotify reports a watch descriptor and an entry name; turning that into a path needs the
//! parent and name of every watched directory, and a renamed or removed directory needs its
//! children. Big trees mean one node per directory (52,550 in the benchmark's tree, millions
//! on some file servers), so the layout is chosen for memory: nodes live in one slab with
//! intrusive sibling links instead of a map per directory, names of up to
//! [`INLINE_NAME`] bytes are stored in the node, and the `(parent, name) → child` index
//! holds only slot numbers. That is about 60 bytes per directory, where a map of maps
//! took about 280.
//!
//! The API speaks watch descriptors (`i32`); slots never leave this module.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::config::RootId;
use crate::queue::RelPath;

const NIL: u32 = u32::MAX;
/// Parent of a node whose parent was forgotten first: it has no path any more and waits
/// for its own `IN_IGNORED`.
const ORPHAN: u32 = u32::MAX - 1;
/// Names up to this length live in the node; longer ones in a side table.
const INLINE_NAME: usize = 15;
const LONG_NAME: u8 = u8::MAX;
/// Deeper than any path the kernel can report (PATH_MAX / 2): a guard against a corrupt
/// chain, never reached while the invariants hold.
const MAX_DEPTH: usize = 2048;

/// Where a watched directory sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Root,
    Child {
        parent: i32,
    },
    /// Its parent was forgotten before it; events from it have no path.
    Orphan,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    /// 0 marks a free slot (the kernel's descriptors start at 1).
    wd: i32,
    parent: u32,
    first_child: u32,
    next_sibling: u32,
    prev_sibling: u32,
    root: u32,
    name_len: u8,
    name: [u8; INLINE_NAME],
}

#[derive(Debug, Default)]
struct Slab {
    nodes: Vec<Node>,
    free: Vec<u32>,
    long_names: HashMap<u32, Box<[u8]>>,
}

impl Slab {
    fn name(&self, slot: u32) -> &[u8] {
        let node = &self.nodes[slot as usize];
        if node.name_len == LONG_NAME {
            self.long_names.get(&slot).map_or(&[], |name| name)
        } else {
            &node.name[..node.name_len as usize]
        }
    }

    fn set_name(&mut self, slot: u32, name: &[u8]) {
        let node = &mut self.nodes[slot as usize];
        if name.len() <= INLINE_NAME {
            node.name_len = name.len() as u8;
            node.name[..name.len()].copy_from_slice(name);
            self.long_names.remove(&slot);
        } else {
            node.name_len = LONG_NAME;
            self.long_names.insert(slot, name.into());
        }
    }

    fn alloc(&mut self, wd: i32, root: RootId) -> u32 {
        let node = Node {
            wd,
            parent: NIL,
            first_child: NIL,
            next_sibling: NIL,
            prev_sibling: NIL,
            root: root as u32,
            name_len: 0,
            name: [0; INLINE_NAME],
        };
        match self.free.pop() {
            Some(slot) => {
                self.nodes[slot as usize] = node;
                slot
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn release(&mut self, slot: u32) {
        self.nodes[slot as usize].wd = 0;
        self.long_names.remove(&slot);
        self.free.push(slot);
    }
}

/// Every watched directory: its watch descriptor, root, parent and name.
#[derive(Debug, Default)]
pub(super) struct WatchTree {
    slab: Slab,
    by_wd: HashMap<i32, u32>,
    /// `(parent slot, name)` → child slot.
    by_name: HashTable<u32>,
    hasher: RandomState,
}

impl WatchTree {
    pub fn len(&self) -> usize {
        self.by_wd.len()
    }

    pub fn contains(&self, wd: i32) -> bool {
        self.by_wd.contains_key(&wd)
    }

    fn slot(&self, wd: i32) -> Option<u32> {
        self.by_wd.get(&wd).copied()
    }

    fn node(&self, slot: u32) -> &Node {
        &self.slab.nodes[slot as usize]
    }

    fn node_mut(&mut self, slot: u32) -> &mut Node {
        &mut self.slab.nodes[slot as usize]
    }

    pub fn root_of(&self, wd: i32) -> Option<RootId> {
        self.slot(wd).map(|slot| self.node(slot).root as RootId)
    }

    pub fn place(&self, wd: i32) -> Option<Place> {
        let node = self.node(self.slot(wd)?);
        Some(match node.parent {
            NIL => Place::Root,
            ORPHAN => Place::Orphan,
            parent => Place::Child {
                parent: self.node(parent).wd,
            },
        })
    }

    fn key_hash(&self, parent: u32, name: &[u8]) -> u64 {
        self.hasher.hash_one((parent, name))
    }

    fn index_insert(&mut self, slot: u32) {
        let hash = self.key_hash(self.node(slot).parent, self.slab.name(slot));
        let WatchTree {
            slab,
            by_name,
            hasher,
            ..
        } = self;
        by_name.insert_unique(hash, slot, |&s| {
            hasher.hash_one((slab.nodes[s as usize].parent, slab.name(s)))
        });
    }

    fn index_remove(&mut self, slot: u32) {
        let parent = self.node(slot).parent;
        if parent == NIL || parent == ORPHAN {
            return;
        }
        let hash = self.key_hash(parent, self.slab.name(slot));
        if let Ok(entry) = self.by_name.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
    }

    fn lookup(&self, parent: u32, name: &[u8]) -> Option<u32> {
        let hash = self.key_hash(parent, name);
        self.by_name
            .find(hash, |&s| {
                self.node(s).parent == parent && self.slab.name(s) == name
            })
            .copied()
    }

    /// Makes `slot` (currently detached) the first child of `parent`.
    fn link(&mut self, slot: u32, parent: u32) {
        let head = self.node(parent).first_child;
        let node = self.node_mut(slot);
        node.parent = parent;
        node.prev_sibling = NIL;
        node.next_sibling = head;
        if head != NIL {
            self.node_mut(head).prev_sibling = slot;
        }
        self.node_mut(parent).first_child = slot;
        self.index_insert(slot);
    }

    /// Takes `slot` out of its parent's children; it becomes an orphan.
    fn unlink(&mut self, slot: u32) {
        let node = *self.node(slot);
        if node.parent != NIL && node.parent != ORPHAN {
            self.index_remove(slot);
            if node.prev_sibling != NIL {
                self.node_mut(node.prev_sibling).next_sibling = node.next_sibling;
            } else {
                self.node_mut(node.parent).first_child = node.next_sibling;
            }
            if node.next_sibling != NIL {
                self.node_mut(node.next_sibling).prev_sibling = node.prev_sibling;
            }
        }
        let node = self.node_mut(slot);
        node.parent = ORPHAN;
        node.prev_sibling = NIL;
        node.next_sibling = NIL;
    }

    fn release(&mut self, slot: u32) {
        let wd = self.node(slot).wd;
        self.by_wd.remove(&wd);
        self.slab.release(slot);
    }

    /// The slot of `wd`, taken out of its parent's children (it keeps its own), or a new
    /// one.
    fn detached_slot(&mut self, wd: i32, root: RootId) -> u32 {
        if let Some(slot) = self.slot(wd) {
            self.unlink(slot);
            return slot;
        }
        let slot = self.slab.alloc(wd, root);
        self.by_wd.insert(wd, slot);
        slot
    }

    /// Records `wd` as the watch of a root. A descriptor already known (the same inode)
    /// keeps its children.
    pub fn insert_root(&mut self, wd: i32, root: RootId) {
        let slot = self.detached_slot(wd, root);
        self.slab.set_name(slot, b"");
        let node = self.node_mut(slot);
        node.parent = NIL;
        node.root = root as u32;
    }

    /// Records `wd` as the watch of `name` in the directory watched by `parent`. A
    /// descriptor already known (the same inode, moved) leaves its old place and keeps its
    /// children; a different directory still recorded under that name is orphaned.
    /// Returns false when `parent` is not watched, or when `wd` is `parent` or one of its
    /// ancestors (nothing changes then).
    pub fn attach(&mut self, wd: i32, parent: i32, name: &[u8], root: RootId) -> bool {
        let Some(parent_slot) = self.slot(parent) else {
            return false;
        };
        if let Some(slot) = self.slot(wd) {
            // A directory found inside itself (a bind mount of an ancestor): it stays
            // where it was first watched, or the tree would become a cycle.
            let mut up = parent_slot;
            loop {
                if up == slot {
                    return false;
                }
                match self.node(up).parent {
                    NIL | ORPHAN => break,
                    next => up = next,
                }
            }
        }
        if let Some(stale) = self.lookup(parent_slot, name) {
            if self.node(stale).wd != wd {
                self.unlink(stale);
            }
        }
        let slot = self.detached_slot(wd, root);
        self.slab.set_name(slot, name);
        self.node_mut(slot).root = root as u32;
        self.link(slot, parent_slot);
        true
    }

    /// The watched subdirectory `name` of `parent`.
    pub fn child(&self, parent: i32, name: &[u8]) -> Option<i32> {
        let slot = self.lookup(self.slot(parent)?, name)?;
        Some(self.node(slot).wd)
    }

    /// Moves a watched directory to `name` under `parent` (a rename inside the tree).
    pub fn move_to(&mut self, wd: i32, parent: i32, name: &[u8]) -> bool {
        let Some(root) = self.root_of(parent) else {
            return false;
        };
        self.attach(wd, parent, name, root)
    }

    /// The watched subdirectories of `wd`, with their names.
    pub fn children(&self, wd: i32) -> Vec<(Vec<u8>, i32)> {
        let mut out = Vec::new();
        let Some(slot) = self.slot(wd) else {
            return out;
        };
        let mut child = self.node(slot).first_child;
        while child != NIL {
            out.push((self.slab.name(child).to_vec(), self.node(child).wd));
            child = self.node(child).next_sibling;
        }
        out
    }

    /// Removes `wd` and everything below it; returns the descriptors removed (for
    /// `inotify_rm_watch`).
    pub fn remove_subtree(&mut self, wd: i32) -> Vec<i32> {
        let mut removed = Vec::new();
        let Some(top) = self.slot(wd) else {
            return removed;
        };
        self.unlink(top);
        let mut stack = vec![top];
        while let Some(slot) = stack.pop() {
            let mut child = self.node(slot).first_child;
            while child != NIL {
                stack.push(child);
                child = self.node(child).next_sibling;
            }
            // The index entry is keyed by the parent's slot number, still in the node.
            self.index_remove(slot);
            removed.push(self.node(slot).wd);
            self.release(slot);
        }
        removed
    }

    /// Removes one directory whose watch the kernel dropped (`IN_IGNORED`). Its children
    /// become orphans until their own `IN_IGNORED`. Returns its root and place.
    pub fn forget(&mut self, wd: i32) -> Option<(RootId, Place)> {
        let place = self.place(wd)?;
        let slot = self.slot(wd)?;
        let root = self.node(slot).root as RootId;
        self.unlink(slot);
        let mut child = self.node(slot).first_child;
        while child != NIL {
            let next = self.node(child).next_sibling;
            self.index_remove(child);
            let node = self.node_mut(child);
            node.parent = ORPHAN;
            node.prev_sibling = NIL;
            node.next_sibling = NIL;
            child = next;
        }
        self.release(slot);
        Some((root, place))
    }

    /// The path of a watched directory relative to its root; `None` for an orphan.
    pub fn rel_path(&self, wd: i32) -> Option<RelPath> {
        let mut slot = self.slot(wd)?;
        let mut parts: Vec<u32> = Vec::new();
        loop {
            match self.node(slot).parent {
                NIL => break,
                ORPHAN => return None,
                parent => {
                    parts.push(slot);
                    slot = parent;
                }
            }
            if parts.len() > MAX_DEPTH {
                return None;
            }
        }
        let mut path = Vec::new();
        for &part in parts.iter().rev() {
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(self.slab.name(part));
        }
        Some(path)
    }

    /// Every descriptor recorded for `root`.
    pub fn wds_of_root(&self, root: RootId) -> Vec<i32> {
        self.slab
            .nodes
            .iter()
            .filter(|n| n.wd != 0 && n.root as RootId == root)
            .map(|n| n.wd)
            .collect()
    }

    /// Every descriptor.
    pub fn wds(&self) -> Vec<i32> {
        self.by_wd.keys().copied().collect()
    }

    pub fn clear(&mut self) {
        *self = WatchTree::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> WatchTree {
        // root 0: 1 = "", 2 = a, 3 = a/b, 4 = a/b/a-name-longer-than-fifteen, 5 = c
        let mut t = WatchTree::default();
        t.insert_root(1, 0);
        assert!(t.attach(2, 1, b"a", 0));
        assert!(t.attach(3, 2, b"b", 0));
        assert!(t.attach(4, 3, b"a-name-longer-than-fifteen", 0));
        assert!(t.attach(5, 1, b"c", 0));
        t
    }

    fn path(t: &WatchTree, wd: i32) -> Option<String> {
        t.rel_path(wd)
            .map(|p| String::from_utf8(p).expect("test names are UTF-8"))
    }

    #[test]
    fn paths_and_lookups() {
        let t = tree();
        assert_eq!(t.len(), 5);
        for (wd, expected) in [
            (1, Some("")),
            (2, Some("a")),
            (3, Some("a/b")),
            (4, Some("a/b/a-name-longer-than-fifteen")),
            (5, Some("c")),
            (9, None),
        ] {
            assert_eq!(path(&t, wd).as_deref(), expected, "wd {wd}");
        }
        assert_eq!(t.child(1, b"a"), Some(2));
        assert_eq!(t.child(3, b"a-name-longer-than-fifteen"), Some(4));
        assert_eq!(t.child(1, b"b"), None);
        assert_eq!(t.child(2, b"c"), None);
        assert_eq!(t.place(1), Some(Place::Root));
        assert_eq!(t.place(3), Some(Place::Child { parent: 2 }));
        let mut children = t.children(1);
        children.sort();
        assert_eq!(children, vec![(b"a".to_vec(), 2), (b"c".to_vec(), 5)]);
    }

    #[test]
    fn move_keeps_the_subtree() {
        let mut t = tree();
        assert!(t.move_to(2, 5, b"moved-to-a-long-name-here"));
        assert_eq!(
            path(&t, 3).as_deref(),
            Some("c/moved-to-a-long-name-here/b")
        );
        assert_eq!(t.child(1, b"a"), None);
        assert_eq!(t.child(5, b"moved-to-a-long-name-here"), Some(2));
        assert_eq!(t.children(1), vec![(b"c".to_vec(), 5)]);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn remove_subtree_frees_and_slots_are_reused_cleanly() {
        let mut t = tree();
        let mut removed = t.remove_subtree(2);
        removed.sort();
        assert_eq!(removed, vec![2, 3, 4]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.child(1, b"a"), None);
        // New directories take the freed slots; nothing of the old subtree shows up.
        assert!(t.attach(10, 5, b"x", 0));
        assert!(t.attach(11, 10, b"b", 0));
        assert!(t.attach(12, 11, b"y", 0));
        assert_eq!(t.child(10, b"b"), Some(11));
        assert_eq!(t.child(11, b"a-name-longer-than-fifteen"), None);
        assert_eq!(path(&t, 12).as_deref(), Some("c/x/b/y"));
        assert_eq!(t.children(11), vec![(b"y".to_vec(), 12)]);
    }

    #[test]
    fn forget_orphans_the_children() {
        let mut t = tree();
        assert_eq!(t.forget(2), Some((0, Place::Child { parent: 1 })));
        assert_eq!(t.place(3), Some(Place::Orphan));
        assert_eq!(path(&t, 3), None);
        assert_eq!(path(&t, 4), None);
        // A new directory in the freed slot does not adopt the orphan.
        assert!(t.attach(20, 1, b"a", 0));
        assert_eq!(t.child(20, b"b"), None);
        assert!(t.children(20).is_empty());
        // The orphans leave with their own IN_IGNORED.
        assert_eq!(t.forget(4), Some((0, Place::Child { parent: 3 })));
        assert_eq!(t.forget(3), Some((0, Place::Orphan)));
        assert_eq!(t.forget(3), None);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn same_name_replaced_by_another_directory() {
        let mut t = tree();
        // `a` was removed and re-created; the new watch arrives before the old IN_IGNORED.
        assert!(t.attach(30, 1, b"a", 0));
        assert_eq!(t.child(1, b"a"), Some(30));
        assert_eq!(t.place(2), Some(Place::Orphan));
        assert_eq!(path(&t, 3), None);
        let mut children = t.children(1);
        children.sort();
        assert_eq!(children, vec![(b"a".to_vec(), 30), (b"c".to_vec(), 5)]);
    }

    #[test]
    fn same_inode_watched_again_keeps_its_children() {
        let mut t = tree();
        // inotify_add_watch on an inode already watched returns its descriptor.
        assert!(t.attach(2, 5, b"back", 0));
        assert_eq!(
            path(&t, 4).as_deref(),
            Some("c/back/b/a-name-longer-than-fifteen")
        );
        assert_eq!(t.child(1, b"a"), None);
        assert!(!t.attach(40, 99, b"x", 0), "unknown parent");
    }

    #[test]
    fn a_directory_inside_itself_stays_where_it_was() {
        let mut t = tree();
        // `a/b/x` is a bind mount of `a`: inotify answers with a's descriptor.
        assert!(!t.attach(2, 3, b"x", 0));
        assert!(!t.attach(1, 4, b"root-again", 0));
        assert!(!t.attach(3, 3, b"self", 0));
        assert_eq!(path(&t, 2).as_deref(), Some("a"));
        assert_eq!(
            path(&t, 4).as_deref(),
            Some("a/b/a-name-longer-than-fifteen")
        );
        assert_eq!(path(&t, 1).as_deref(), Some(""));
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn roots_are_separate() {
        let mut t = tree();
        t.insert_root(50, 1);
        assert!(t.attach(51, 50, b"a", 1));
        assert_eq!(t.child(50, b"a"), Some(51));
        let mut wds = t.wds_of_root(1);
        wds.sort();
        assert_eq!(wds, vec![50, 51]);
        assert_eq!(t.root_of(3), Some(0));
        t.clear();
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn many_directories_stay_consistent() {
        let mut t = WatchTree::default();
        t.insert_root(1, 0);
        let mut next = 2;
        for a in 0..50 {
            let da = next;
            next += 1;
            assert!(t.attach(da, 1, format!("d{a}").as_bytes(), 0));
            for b in 0..40 {
                assert!(t.attach(next, da, format!("sub-directory-{b:04}").as_bytes(), 0));
                next += 1;
            }
        }
        assert_eq!(t.len(), 1 + 50 + 50 * 40);
        for a in (0..50).step_by(2) {
            let da = t.child(1, format!("d{a}").as_bytes()).expect("d{a}");
            assert_eq!(t.remove_subtree(da).len(), 41);
        }
        assert_eq!(t.len(), 1 + 25 + 25 * 40);
        let d1 = t.child(1, b"d1").expect("d1");
        let leaf = t.child(d1, b"sub-directory-0039").expect("leaf");
        assert_eq!(path(&t, leaf).as_deref(), Some("d1/sub-directory-0039"));
        assert_eq!(t.children(d1).len(), 40);
    }

    #[test]
    fn node_stays_small() {
        assert!(std::mem::size_of::<Node>() <= 40);
    }
}
