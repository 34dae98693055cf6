//! An Aho-Corasick automaton over bytes: every occurrence of every pattern in one pass.
//!
//! The trie keeps sparse, sorted transitions (a large signature database has hundreds of
//! thousands of states, most with one child); the root keeps a dense table, and the failure links
//! are resolved for the root so the scan loop never follows a failure link out of it.

/// A pattern's index as given to [`Automaton::new`].
pub type PatternId = u32;

const ROOT: u32 = 0;

#[derive(Debug)]
pub struct Automaton {
    /// Transitions of state `s`: `edges[first[s] .. first[s + 1]]`, sorted by byte.
    first: Vec<u32>,
    edges: Vec<(u8, u32)>,
    root: Box<[u32; 256]>,
    fail: Vec<u32>,
    /// Patterns ending at state `s`: `outputs[out_first[s] .. out_first[s + 1]]`, including those
    /// of its failure chain.
    out_first: Vec<u32>,
    outputs: Vec<PatternId>,
    lengths: Vec<u32>,
}

impl Automaton {
    /// Builds the automaton; empty patterns never match.
    pub fn new<P: AsRef<[u8]>>(patterns: &[P]) -> Automaton {
        // 1. The trie, with per-state child lists.
        let mut children: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        let mut ends: Vec<Vec<PatternId>> = vec![Vec::new()];
        let mut lengths = Vec::with_capacity(patterns.len());
        for (id, p) in patterns.iter().enumerate() {
            let p = p.as_ref();
            lengths.push(p.len() as u32);
            if p.is_empty() {
                continue;
            }
            let mut s = ROOT;
            for &b in p {
                let kids = &children[s as usize];
                s = match kids.binary_search_by_key(&b, |e| e.0) {
                    Ok(i) => kids[i].1,
                    Err(i) => {
                        let n = children.len() as u32;
                        children[s as usize].insert(i, (b, n));
                        children.push(Vec::new());
                        ends.push(Vec::new());
                        n
                    }
                };
            }
            ends[s as usize].push(id as PatternId);
        }

        // 2. Flatten.
        let n = children.len();
        let mut first = Vec::with_capacity(n + 1);
        let mut edges = Vec::with_capacity(n);
        for kids in &children {
            first.push(edges.len() as u32);
            edges.extend_from_slice(kids);
        }
        first.push(edges.len() as u32);
        drop(children);
        let mut root = Box::new([ROOT; 256]);
        for &(b, t) in &edges[first[0] as usize..first[1] as usize] {
            root[b as usize] = t;
        }

        // 3. Failure links, breadth first; outputs merged along the failure chain.
        let mut fail = vec![ROOT; n];
        let mut order = Vec::with_capacity(n);
        let mut queue = std::collections::VecDeque::new();
        for &(_, t) in &edges[first[0] as usize..first[1] as usize] {
            queue.push_back(t);
        }
        let goto = |first: &[u32], edges: &[(u8, u32)], s: u32, b: u8| -> Option<u32> {
            let kids = &edges[first[s as usize] as usize..first[s as usize + 1] as usize];
            kids.binary_search_by_key(&b, |e| e.0).ok().map(|i| kids[i].1)
        };
        while let Some(s) = queue.pop_front() {
            order.push(s);
            for &(b, t) in &edges[first[s as usize] as usize..first[s as usize + 1] as usize] {
                let mut f = fail[s as usize];
                let target = loop {
                    if let Some(x) = goto(&first, &edges, f, b) {
                        break x;
                    }
                    if f == ROOT {
                        break ROOT;
                    }
                    f = fail[f as usize];
                };
                fail[t as usize] = if target == t { ROOT } else { target };
                queue.push_back(t);
            }
        }
        // A state's failure target comes earlier in breadth-first order, so its merged outputs
        // are complete when the state is reached.
        let mut merged: Vec<Vec<PatternId>> = ends;
        for &s in &order {
            let f = fail[s as usize] as usize;
            if f != ROOT as usize && !merged[f].is_empty() {
                let inherited = merged[f].clone();
                merged[s as usize].extend(inherited);
            }
        }
        let mut out_first = Vec::with_capacity(n + 1);
        let mut outputs = Vec::new();
        for m in &merged {
            out_first.push(outputs.len() as u32);
            outputs.extend_from_slice(m);
        }
        out_first.push(outputs.len() as u32);

        Automaton { first, edges, root, fail, out_first, outputs, lengths }
    }

    pub fn states(&self) -> usize {
        self.fail.len()
    }

    #[inline]
    fn step(&self, mut s: u32, b: u8) -> u32 {
        loop {
            if s == ROOT {
                return self.root[b as usize];
            }
            let kids = &self.edges[self.first[s as usize] as usize..self.first[s as usize + 1] as usize];
            if let Some(&(_, t)) = kids.iter().find(|e| e.0 == b) {
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
            let (lo, hi) = (self.out_first[s as usize], self.out_first[s as usize + 1]);
            for &p in &self.outputs[lo as usize..hi as usize] {
                found(p, i + 1 - self.lengths[p as usize] as usize);
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
        for round in 0..200 {
            // A small alphabet makes overlaps, shared prefixes and suffix outputs common.
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
