//! When a change has reached every remote of its root: the moment the after-sync plugin
//! hears of it (a CDN purge before the last replica has the file would cache the old one).
//!
//! Changes are counted per (root path, relative path): the root by its path, not its
//! position in the config, so a reload that reorders roots does not mix them up. No I/O.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::queue::{Action, LaneId, RelPath};

#[derive(Debug, Default)]
pub(super) struct Deliveries {
    /// The lanes a change reached so far, and its last action, while some lane still
    /// lacks it.
    seen: HashMap<(PathBuf, RelPath), (Action, Vec<LaneId>)>,
}

impl Deliveries {
    /// `lane` delivered `action` on `path` of `root`, whose lanes are `lanes_of_root`;
    /// whether every one of them has it now (then it is forgotten).
    pub(super) fn delivered(
        &mut self,
        root: &Path,
        lane: LaneId,
        path: &[u8],
        action: Action,
        lanes_of_root: &[LaneId],
    ) -> bool {
        if lanes_of_root.iter().all(|&id| id == lane) {
            return true;
        }
        let key = (root.to_path_buf(), path.to_vec());
        let (last, seen) = self.seen.entry(key.clone()).or_insert((action, Vec::new()));
        *last = action;
        if !seen.contains(&lane) {
            seen.push(lane);
        }
        let complete = lanes_of_root.iter().all(|id| seen.contains(id));
        if complete {
            self.seen.remove(&key);
        }
        complete
    }

    /// `lane` made its remote equal to the whole of `root` (a full sync): every change of
    /// the root it had not had has reached it. Returns the changes every lane of the root
    /// (`lanes_of_root`) now has, as (path, last action), forgotten.
    pub(super) fn covered(
        &mut self,
        root: &Path,
        lane: LaneId,
        lanes_of_root: &[LaneId],
    ) -> Vec<(RelPath, Action)> {
        let mut complete = Vec::new();
        self.seen.retain(|(of, path), (action, seen)| {
            if of != root {
                return true;
            }
            if !seen.contains(&lane) {
                seen.push(lane);
            }
            if lanes_of_root.iter().all(|id| seen.contains(id)) {
                complete.push((path.clone(), *action));
                return false;
            }
            true
        });
        complete.sort_by(|a, b| a.0.cmp(&b.0));
        complete
    }

    /// A reload removed the lanes `removed`; `lanes_of` gives each root's lanes now. The
    /// changes that every remaining lane of their root already has are complete now:
    /// returned (root, path, last action) and forgotten.
    pub(super) fn forget_lanes(
        &mut self,
        removed: &[LaneId],
        lanes_of: impl Fn(&Path) -> Vec<LaneId>,
    ) -> Vec<(PathBuf, RelPath, Action)> {
        let mut complete = Vec::new();
        self.seen.retain(|(root, path), (action, seen)| {
            seen.retain(|lane| !removed.contains(lane));
            let lanes = lanes_of(root);
            if lanes.iter().all(|lane| seen.contains(lane)) {
                // No lanes left at all: the root is gone, and so is the change.
                if !lanes.is_empty() {
                    complete.push((root.clone(), path.clone(), *action));
                }
                return false;
            }
            true
        });
        complete.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        complete
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNC: Action = Action::Sync;

    #[test]
    fn a_change_is_complete_once_every_lane_of_its_root_has_it() {
        let www = Path::new("/srv/www");
        let img = Path::new("/srv/img");
        let mut deliveries = Deliveries::default();
        // One lane: at once, nothing kept.
        assert!(deliveries.delivered(www, 1, b"a", SYNC, &[1]));
        assert_eq!(deliveries.len(), 0);
        // Two lanes: on the second.
        assert!(!deliveries.delivered(www, 1, b"a", SYNC, &[1, 2]));
        assert!(
            !deliveries.delivered(www, 1, b"a", SYNC, &[1, 2]),
            "twice the same"
        );
        assert!(
            !deliveries.delivered(img, 2, b"a", SYNC, &[2, 3]),
            "another root"
        );
        assert!(deliveries.delivered(www, 2, b"a", SYNC, &[1, 2]));
        assert_eq!(deliveries.len(), 1, "the other root's change waits");
    }

    #[test]
    fn a_full_sync_delivers_every_change_of_its_root_that_waited_for_its_lane() {
        let www = Path::new("/srv/www");
        let img = Path::new("/srv/img");
        let mut deliveries = Deliveries::default();
        // Lane 2 (of 1, 2, 3) is behind on a and b; lane 3 on b; img waits for lane 5.
        assert!(!deliveries.delivered(www, 1, b"a", SYNC, &[1, 2, 3]));
        assert!(!deliveries.delivered(www, 3, b"a", SYNC, &[1, 2, 3]));
        assert!(!deliveries.delivered(www, 1, b"b", SYNC, &[1, 2, 3]));
        assert!(!deliveries.delivered(img, 4, b"c", SYNC, &[4, 5]));
        // Lane 2's full sync: a is everywhere now; b still waits for lane 3.
        assert_eq!(
            deliveries.covered(www, 2, &[1, 2, 3]),
            vec![(b"a".to_vec(), SYNC)]
        );
        assert!(deliveries.delivered(www, 3, b"b", SYNC, &[1, 2, 3]));
        assert_eq!(deliveries.len(), 1, "img's change is another root's");
    }

    #[test]
    fn a_reload_that_removes_a_lane_completes_what_the_others_have() {
        let www = Path::new("/srv/www");
        let gone = Path::new("/srv/gone");
        let mut deliveries = Deliveries::default();
        let removal = Action::Remove { dir: false };
        // Lanes 1, 2, 3 of www; 4, 5 of a root the reload removes.
        assert!(!deliveries.delivered(www, 1, b"a", SYNC, &[1, 2, 3]));
        assert!(!deliveries.delivered(www, 2, b"a", removal, &[1, 2, 3]));
        assert!(!deliveries.delivered(www, 3, b"b", SYNC, &[1, 2, 3]));
        assert!(!deliveries.delivered(gone, 4, b"c", SYNC, &[4, 5]));
        // Lane 3 goes: `a` reached 1 and 2, all that is left; `b` reached neither.
        let lanes_of = |root: &Path| {
            if root == www { vec![1, 2] } else { Vec::new() }
        };
        assert_eq!(
            deliveries.forget_lanes(&[3, 4, 5], lanes_of),
            vec![(www.to_path_buf(), b"a".to_vec(), removal)]
        );
        assert_eq!(deliveries.len(), 1, "b still waits for lanes 1 and 2");
        assert!(!deliveries.delivered(www, 1, b"b", SYNC, &[1, 2]));
        assert!(deliveries.delivered(www, 2, b"b", SYNC, &[1, 2]));
    }
}
