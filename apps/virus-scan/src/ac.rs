//! An Aho-Corasick automaton over bytes: every occurrence of every pattern in one pass.
//!
//! States are numbered breadth first and, within a depth, in the order of the prefixes they
//! stand for, so the children of a state are consecutive states sorted by their byte: a state's
//! transitions are a range of state numbers and one byte label per state, with no edge lists. The
//! trie is built level by level from the sorted patterns, without per-state allocations (a large
//! signature database has over a million states). The root keeps a dense table; outputs follow
//! dictionary suffix links instead of being copied down the failure chain.

/// A pattern's index as given to [`Automaton::new`].
pub type PatternId = u32;

const ROOT: u32 = 0;
const NONE: u32 = u32::MAX;

#[derive(Debug)]
pub struct Automaton {
    /// The byte on the edge into each state (the root's is unused).
    label: Vec<u8>,
    /// Children of `s`: states `first_child[s] .. first_child[s + 1]`.
    first_child: Vec<u32>,
    root: Box<[u32; 256]>,
    fail: Vec<u32>,
    /// The nearest state on the failure chain (itself excluded) where a pattern ends, or NONE.
    out_link: Vec<u32>,
    /// Patterns ending exactly at `s`: `ends[end_first[s] .. end_first[s + 1]]`.
    end_first: Vec<u32>,
    ends: Vec<PatternId>,
    lengths: Vec<u32>,
}

impl Automaton {
    /// Builds the automaton; empty patterns never match.
    pub fn new<P: AsRef<[u8]>>(patterns: &[P]) -> Automaton {
        let pats: Vec<&[u8]> = patterns.iter().map(AsRef::as_ref).collect();
        let lengths = pats.iter().map(|p| p.len() as u32).collect();
        let mut order: Vec<u32> = (0..pats.len() as u32).filter(|&i| !pats[i as usize].is_empty()).collect();
        order.sort_unstable_by(|&a, &b| pats[a as usize].cmp(pats[b as usize]).then(a.cmp(&b)));

        // 1. The trie, one depth at a time. `state[k]` is the state of `order[k]`'s prefix at the
        //    current depth; a new state starts wherever the prefix differs from the previous one
        //    (sorted order keeps equal prefixes together, and children in byte order).
        let mut label = vec![0u8];
        let mut parent = vec![NONE];
        let mut state = vec![ROOT; order.len()];
        let mut ended_at: Vec<(u32, PatternId)> = Vec::with_capacity(order.len());
        let mut depth = 0;
        let mut live: Vec<usize> = (0..order.len()).collect();
        while !live.is_empty() {
            let mut prev: Option<(u32, u8)> = None;
            let mut next_live = Vec::with_capacity(live.len());
            for &k in &live {
                let p = pats[order[k] as usize];
                let key = (state[k], p[depth]);
                if prev != Some(key) {
                    label.push(key.1);
                    parent.push(key.0);
                    prev = Some(key);
                }
                state[k] = label.len() as u32 - 1;
                if p.len() == depth + 1 {
                    ended_at.push((state[k], order[k]));
                } else {
                    next_live.push(k);
                }
            }
            live = next_live;
            depth += 1;
        }
        drop(state);
        let n = label.len();
        // Parents are numbered before their children, in order: children ranges are consecutive.
        let mut first_child = vec![0u32; n + 1];
        let mut child_count = vec![0u32; n];
        for &p in &parent[1..] {
            child_count[p as usize] += 1;
        }
        let mut next = 1u32;
        for s in 0..n {
            first_child[s] = next;
            next += child_count[s];
        }
        first_child[n] = next;
        drop(child_count);
        let mut root = Box::new([ROOT; 256]);
        for t in first_child[0]..first_child[1] {
            root[label[t as usize] as usize] = t;
        }
        ended_at.sort_unstable();
        let mut end_first = vec![0u32; n + 1];
        for &(s, _) in &ended_at {
            end_first[s as usize + 1] += 1;
        }
        for s in 0..n {
            end_first[s + 1] += end_first[s];
        }
        let ends: Vec<PatternId> = ended_at.into_iter().map(|(_, p)| p).collect();

        let mut a = Automaton {
            label,
            first_child,
            root,
            fail: vec![ROOT; n],
            out_link: vec![NONE; n],
            end_first,
            ends,
            lengths,
        };
        // 2. Failure and output links in breadth-first (= numbering) order: every state a link
        //    points to is shallower, so it is done first.
        for (t, &p) in parent.iter().enumerate().skip(1) {
            let f = if p == ROOT { ROOT } else { a.step(a.fail[p as usize], a.label[t]) };
            a.fail[t] = f;
            a.out_link[t] = if a.end_first[f as usize] < a.end_first[f as usize + 1] { f } else { a.out_link[f as usize] };
        }
        a
    }

    pub fn states(&self) -> usize {
        self.fail.len()
    }

    fn child(&self, s: u32, b: u8) -> Option<u32> {
        let (lo, hi) = (self.first_child[s as usize] as usize, self.first_child[s as usize + 1] as usize);
        let kids = &self.label[lo..hi];
        kids.binary_search(&b).ok().map(|i| (lo + i) as u32)
    }

    #[inline]
    fn step(&self, mut s: u32, b: u8) -> u32 {
        loop {
            if s == ROOT {
                return self.root[b as usize];
            }
            if let Some(t) = self.child(s, b) {
                return t;
            }
            s = self.fail[s as usize];
        }
    }

    /// Calls `found(pattern, start)` for every occurrence, in order of the end position.
    pub fn find_all(&self, haystack: &[u8], mut found: impl FnMut(PatternId, usize)) {
        let mut s = ROOT;
        for (i, &b) in haystack.iter().enumerate() {
            s = self.step(s, b);
            let mut o = s;
            while o != NONE {
                for &p in &self.ends[self.end_first[o as usize] as usize..self.end_first[o as usize + 1] as usize] {
                    found(p, i + 1 - self.lengths[p as usize] as usize);
                }
                o = self.out_link[o as usize];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(patterns: &[Vec<u8>], hay: &[u8]) -> Vec<(PatternId, usize)> {
        let mut v = Vec::new();
        for end in 1..=hay.len() {
            for (id, p) in patterns.iter().enumerate() {
                if !p.is_empty() && end >= p.len() && &hay[end - p.len()..end] == p.as_slice() {
                    v.push((id as PatternId, end - p.len()));
                }
            }
        }
        v.sort_by_key(|&(id, start)| (start + patterns[id as usize].len(), id));
        v
    }

    #[test]
    fn finds_what_a_naive_search_finds() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            // A small alphabet makes overlaps, shared prefixes, duplicates and suffix outputs common.
            let alphabet = 2 + round % 4;
            let patterns: Vec<Vec<u8>> = (0..1 + next() % 12)
                .map(|_| (0..next() % 6).map(|_| (next() % alphabet) as u8).collect())
                .collect();
            let hay: Vec<u8> = (0..next() % 200).map(|_| (next() % alphabet) as u8).collect();
            let ac = Automaton::new(&patterns);
            let mut got = Vec::new();
            ac.find_all(&hay, |p, s| got.push((p, s)));
            got.sort_by_key(|&(id, start)| (start + patterns[id as usize].len(), id));
            assert_eq!(got, naive(&patterns, &hay), "patterns {patterns:?} in {hay:?}");
        }
    }
}
