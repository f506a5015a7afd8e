//! The merged index: which layer holds each block of a volume, as non-overlapping extents.
//!
//! One map per volume and per snapshot answers "where is block N" with a single B-tree
//! lookup whatever the depth of the layer chain below it: a layer's map is its parent's
//! map with the layer's own records applied. The map is a persistent (structurally shared)
//! B-tree, so cloning it for a snapshot costs O(1) and a child shares every untouched node
//! with its parent. Pure logic: no IO here.

use imbl::OrdMap;

/// Where a run of blocks lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// In the data file of the layer at `depth` in the chain (0 = bottom), starting at
    /// physical block `phys`; the run continues contiguously.
    Data { depth: u16, phys: u64 },
    /// Reads as zero and masks whatever lies below. `unmapped`: no storage behind it (a
    /// trim or a write-zeroes that was allowed to punch holes).
    Zero { unmapped: bool },
}

impl Target {
    /// The target for the part of a run that starts `delta` blocks into it.
    fn advance(self, delta: u64) -> Target {
        match self {
            Target::Data { depth, phys } => Target::Data {
                depth,
                phys: phys + delta,
            },
            z => z,
        }
    }

    /// Whether `next` continues `self` (which is `len` blocks long) without a seam.
    fn continues(self, len: u64, next: Target) -> bool {
        match (self, next) {
            (
                Target::Data {
                    depth: d1,
                    phys: p1,
                },
                Target::Data {
                    depth: d2,
                    phys: p2,
                },
            ) => d1 == d2 && p1.checked_add(len) == Some(p2),
            (Target::Zero { unmapped: a }, Target::Zero { unmapped: b }) => a == b,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    len: u64,
    target: Target,
}

/// A piece of a range as answered by [`ExtentMap::lookup`]: `None` means no layer holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub start: u64,
    pub len: u64,
    pub target: Option<Target>,
}

/// Non-overlapping runs of blocks keyed by their first block.
#[derive(Debug, Clone, Default)]
pub struct ExtentMap {
    runs: OrdMap<u64, Run>,
}

impl ExtentMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of runs (for statistics and journal compaction decisions).
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Sets blocks `[start, start+len)` to `target` (`None` removes them).
    pub fn set(&mut self, start: u64, len: u64, target: Option<Target>) {
        if len == 0 {
            return;
        }
        let end = start.saturating_add(len);
        self.cut(start, end);
        if let Some(t) = target {
            self.insert_merged(start, len, t);
        }
    }

    /// Removes everything in `[start, end)`, trimming runs that stick out on either side.
    fn cut(&mut self, start: u64, end: u64) {
        // A run that begins before `start` and reaches into the range.
        if let Some((&s, &r)) = self.runs.range(..start).next_back() {
            let run_end = s + r.len;
            if run_end > start {
                self.runs.insert(
                    s,
                    Run {
                        len: start - s,
                        target: r.target,
                    },
                );
                if run_end > end {
                    let tail = Run {
                        len: run_end - end,
                        target: r.target.advance(end - s),
                    };
                    self.runs.insert(end, tail);
                }
            }
        }
        // Runs that begin inside the range.
        let inside: Vec<(u64, Run)> = self.runs.range(start..end).map(|(&s, &r)| (s, r)).collect();
        for (s, r) in inside {
            self.runs.remove(&s);
            let run_end = s + r.len;
            if run_end > end {
                self.runs.insert(
                    end,
                    Run {
                        len: run_end - end,
                        target: r.target.advance(end - s),
                    },
                );
            }
        }
    }

    /// Inserts a run into a gap, joining it with neighbours it continues seamlessly.
    fn insert_merged(&mut self, mut start: u64, mut len: u64, mut target: Target) {
        if let Some((&s, &r)) = self.runs.range(..start).next_back() {
            if s + r.len == start && r.target.continues(r.len, target) {
                self.runs.remove(&s);
                len += r.len;
                start = s;
                target = r.target;
            }
        }
        let end = start + len;
        if let Some(&r) = self.runs.get(&end) {
            if target.continues(len, r.target) {
                self.runs.remove(&end);
                len += r.len;
            }
        }
        self.runs.insert(start, Run { len, target });
    }

    /// Describes `[start, start+len)` completely, in order, gaps included.
    pub fn lookup(&self, start: u64, len: u64) -> Vec<Piece> {
        let mut out = Vec::new();
        self.lookup_into(start, len, &mut out);
        out
    }

    /// As [`lookup`](Self::lookup), into a reused buffer (the read hot path). Point
    /// lookups only (no iterator state to allocate): a read inside one run costs one
    /// B-tree descent.
    pub fn lookup_into(&self, start: u64, len: u64, out: &mut Vec<Piece>) {
        out.clear();
        let end = start.saturating_add(len);
        let mut pos = start;
        while pos < end {
            match self.runs.get_prev(&pos) {
                Some((&s, r)) if s + r.len > pos => {
                    let run_end = (s + r.len).min(end);
                    out.push(Piece {
                        start: pos,
                        len: run_end - pos,
                        target: Some(r.target.advance(pos - s)),
                    });
                    pos = run_end;
                }
                _ => {
                    let gap_end = self.runs.get_next(&pos).map_or(end, |(&s, _)| s.min(end));
                    out.push(Piece {
                        start: pos,
                        len: gap_end - pos,
                        target: None,
                    });
                    pos = gap_end;
                }
            }
        }
    }

    /// Every run in block order (gaps omitted).
    pub fn iter(&self) -> impl Iterator<Item = Piece> + '_ {
        self.runs.iter().map(|(&s, r)| Piece {
            start: s,
            len: r.len,
            target: Some(r.target),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(depth: u16, phys: u64) -> Option<Target> {
        Some(Target::Data { depth, phys })
    }

    #[test]
    fn set_and_lookup_split_runs() {
        let mut m = ExtentMap::new();
        m.set(0, 100, data(0, 1000));
        m.set(10, 5, data(1, 0));
        let p = m.lookup(0, 100);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            Piece {
                start: 0,
                len: 10,
                target: data(0, 1000)
            }
        );
        assert_eq!(
            p[1],
            Piece {
                start: 10,
                len: 5,
                target: data(1, 0)
            }
        );
        assert_eq!(
            p[2],
            Piece {
                start: 15,
                len: 85,
                target: data(0, 1015)
            }
        );
        assert_eq!(
            m.lookup(150, 10),
            vec![Piece {
                start: 150,
                len: 10,
                target: None
            }]
        );
    }

    #[test]
    fn contiguous_writes_merge() {
        let mut m = ExtentMap::new();
        for i in 0..1000 {
            m.set(i, 1, data(0, 500 + i));
        }
        assert_eq!(m.len(), 1);
        m.set(1000, 1, Some(Target::Zero { unmapped: true }));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn removal_leaves_gaps() {
        let mut m = ExtentMap::new();
        m.set(0, 10, data(0, 0));
        m.set(3, 4, None);
        let p = m.lookup(0, 10);
        assert_eq!(
            p[1],
            Piece {
                start: 3,
                len: 4,
                target: None
            }
        );
        assert_eq!(
            p[2],
            Piece {
                start: 7,
                len: 3,
                target: data(0, 7)
            }
        );
    }

    #[test]
    fn clones_are_independent() {
        let mut a = ExtentMap::new();
        a.set(0, 10, data(0, 0));
        let b = a.clone();
        a.set(0, 10, data(1, 0));
        assert_eq!(b.lookup(0, 1)[0].target, data(0, 0));
        assert_eq!(a.lookup(0, 1)[0].target, data(1, 0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(u64, u64, Option<(u16, u64)>),
        Zero(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                0u64..200,
                1u64..40,
                proptest::option::of((0u16..3, 0u64..10_000))
            )
                .prop_map(|(s, l, t)| Op::Set(s, l, t)),
            (0u64..200, 1u64..40).prop_map(|(s, l)| Op::Zero(s, l)),
        ]
    }

    proptest! {
        // The map must answer exactly like a plain array of per-block targets.
        #[test]
        fn matches_array_model(ops in proptest::collection::vec(op(), 1..60)) {
            let mut m = ExtentMap::new();
            let mut model: Vec<Option<Target>> = vec![None; 300];
            for o in ops {
                let (s, l, t) = match o {
                    Op::Set(s, l, t) => (s, l, t.map(|(d, p)| Target::Data { depth: d, phys: p })),
                    Op::Zero(s, l) => (s, l, Some(Target::Zero { unmapped: false })),
                };
                m.set(s, l, t);
                for i in 0..l {
                    model[(s + i) as usize] = t.map(|t| t.advance(i));
                }
            }
            let pieces = m.lookup(0, 300);
            let mut pos = 0;
            for p in &pieces {
                prop_assert_eq!(p.start, pos);
                for i in 0..p.len {
                    prop_assert_eq!(p.target.map(|t| t.advance(i)), model[(p.start + i) as usize]);
                }
                pos += p.len;
            }
            prop_assert_eq!(pos, 300);
            // Runs never overlap and are maximal where seamless.
            let runs: Vec<Piece> = m.iter().collect();
            for w in runs.windows(2) {
                prop_assert!(w[0].start + w[0].len <= w[1].start);
            }
        }
    }
}
