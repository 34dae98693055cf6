//! behavior-profile inputs: a five-level category tree (16 top-level categories, four children
//! each), a training corpus, one user's 90-day browsing log drawn from planted interests, and ads.
//! The sizes are the paper's profiling depths: small 3, medium 4, large 5 (the same log and
//! corpus; a deeper cut has four times the categories).

use crate::rng::Rng;
use crate::{Size, write_file};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

const TOP: &[&str] = &[
    "Automotive", "Books", "Business", "Careers", "Education", "Food & Drink", "Health", "Hobbies",
    "Home & Garden", "News", "Personal Finance", "Pets", "Science", "Sports", "Technology", "Travel",
];
const BRANCHING: usize = 4;
const LEVELS: usize = 5;
const WORDS_PER_NODE: usize = 6;
const DOCS_PER_LEAF: usize = 2;
const DOC_WORDS: usize = 60;
const VISITS: usize = 6_000;
const PAGE_WORDS: usize = 80;
const ADS: usize = 3_000;
const DAYS: i64 = 90;
const START: i64 = 1_700_000_000;

/// Everyday words every page has, whatever its topic.
const BACKGROUND: &[&str] = &[
    "about", "after", "again", "all", "also", "always", "any", "best", "better", "big", "can", "come",
    "could", "day", "did", "do", "does", "down", "each", "even", "every", "first", "get", "give",
    "good", "great", "had", "has", "have", "here", "how", "into", "just", "know", "last", "life",
    "like", "little", "long", "look", "made", "make", "many", "more", "most", "much", "must", "new",
    "next", "now", "off", "old", "one", "only", "other", "our", "out", "over", "own", "part",
    "people", "place", "read", "right", "same", "say", "see", "should", "show", "since", "small",
    "some", "still", "such", "take", "than", "their", "them", "then", "there", "these", "they",
    "thing", "think", "time", "today", "two", "under", "use", "very", "want", "way", "well", "what",
    "when", "where", "which", "while", "who", "why", "will", "work", "world", "would", "year", "you",
];

fn pseudo_word(rng: &mut Rng) -> String {
    const C: &[&str] = &["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr", "st", "pl", "gr", "sh"];
    const V: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou", "ea"];
    let mut w = String::new();
    for _ in 0..rng.range(2, 3) {
        w.push_str(rng.pick::<&str>(C));
        w.push_str(rng.pick::<&str>(V));
    }
    if rng.chance(50) {
        w.push_str(rng.pick::<&str>(C));
    }
    w
}

struct Node {
    id: String,
    parent: Option<usize>,
    name: String,
    words: Vec<String>,
    children: Vec<usize>,
}

fn tree(rng: &mut Rng) -> Vec<Node> {
    let mut used = BTreeSet::new();
    let mut fresh = |rng: &mut Rng| loop {
        let w = pseudo_word(rng);
        if used.insert(w.clone()) && !BACKGROUND.contains(&w.as_str()) {
            break w;
        }
    };
    let mut nodes: Vec<Node> = Vec::new();
    let mut level: Vec<usize> = Vec::new();
    for (i, name) in TOP.iter().enumerate() {
        let words = (0..WORDS_PER_NODE).map(|_| fresh(rng)).collect();
        level.push(nodes.len());
        nodes.push(Node { id: format!("{:02}", i + 1), parent: None, name: name.to_string(), words, children: vec![] });
    }
    for _ in 1..LEVELS {
        let mut next = Vec::new();
        for &p in &level {
            for k in 0..BRANCHING {
                let words: Vec<String> = (0..WORDS_PER_NODE).map(|_| fresh(rng)).collect();
                let mut name = words[0].clone();
                name[..1].make_ascii_uppercase();
                let id = format!("{}.{}", nodes[p].id, k + 1);
                let n = nodes.len();
                nodes[p].children.push(n);
                next.push(n);
                nodes.push(Node { id, parent: Some(p), name, words, children: vec![] });
            }
        }
        level = next;
    }
    nodes
}

/// Words about `leaf`: a third everyday words, the rest from the leaf and its ancestors.
fn text(rng: &mut Rng, nodes: &[Node], leaf: usize, words: usize) -> String {
    let mut chain = vec![leaf];
    while let Some(p) = nodes[*chain.last().expect("not empty")].parent {
        chain.push(p);
    }
    let mut out = String::new();
    for i in 0..words {
        if i > 0 {
            out.push(' ');
        }
        if rng.chance(33) {
            out.push_str(rng.pick::<&str>(BACKGROUND));
        } else {
            let node = &nodes[*rng.pick(&chain)];
            out.push_str(rng.pick(&node.words).as_str());
        }
    }
    out
}

fn leaves_under(nodes: &[Node], n: usize, out: &mut Vec<usize>) {
    if nodes[n].children.is_empty() {
        out.push(n);
    }
    for &c in &nodes[n].children {
        leaves_under(nodes, c, out);
    }
}

pub fn generate(size: Size, seed: u64, out: &Path) -> Result<serde_json::Value, String> {
    let depth = match size {
        Size::Small => 3,
        Size::Medium => 4,
        Size::Large => 5,
    };
    let root = Rng::new(seed).fork("behavior-profile");
    let nodes = tree(&mut root.fork("taxonomy"));
    let mut taxonomy = String::from("# id\tparent\tname\n");
    for n in &nodes {
        let parent = n.parent.map_or("-", |p| nodes[p].id.as_str());
        let _ = writeln!(taxonomy, "{}\t{parent}\t{}", n.id, n.name);
    }
    let mut rng = root.fork("corpus");
    let mut corpus = String::from("# category\ttraining text\n");
    let leaves: Vec<usize> = (0..nodes.len()).filter(|&n| nodes[n].children.is_empty()).collect();
    for &leaf in &leaves {
        for _ in 0..DOCS_PER_LEAF {
            let _ = writeln!(corpus, "{}\t{}", nodes[leaf].id, text(&mut rng, &nodes, leaf, DOC_WORDS));
        }
    }

    // The user: five favourite top-level categories with planted weights, a few favourite
    // leaves in each, and a little of everything.
    let mut rng = root.fork("user");
    let mut tops: Vec<usize> = (0..TOP.len()).collect();
    for i in (1..tops.len()).rev() {
        tops.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let favourites: Vec<(usize, u64)> = tops[..5].iter().copied().zip([40, 25, 15, 10, 5]).collect();
    let favourite_leaves: Vec<Vec<usize>> = favourites
        .iter()
        .map(|&(t, _)| {
            let mut l = Vec::new();
            leaves_under(&nodes, t, &mut l);
            (0..3).map(|_| *rng.pick(&l)).collect()
        })
        .collect();
    let mut rng = root.fork("log");
    let mut times: Vec<i64> = (0..VISITS).map(|_| START + rng.below((DAYS * 86_400) as u64) as i64).collect();
    times.sort_unstable();
    let mut log = String::from("# unix_time\tdwell_seconds\turl\tpage text\n");
    let mut truth_pages = Vec::new();
    for (i, &t) in times.iter().enumerate() {
        let roll = rng.below(100);
        let leaf = if roll < 95 {
            let mut acc = 0;
            let k = favourites.iter().position(|&(_, w)| {
                acc += w;
                roll < acc
            });
            let k = k.unwrap_or(favourites.len() - 1);
            if rng.chance(60) {
                *rng.pick(&favourite_leaves[k])
            } else {
                let mut l = Vec::new();
                leaves_under(&nodes, favourites[k].0, &mut l);
                *rng.pick(&l)
            }
        } else {
            *rng.pick(&leaves)
        };
        let url = format!("https://{}.example/{}/{}", nodes[leaf].words[1], nodes[leaf].words[2], i);
        let dwell = rng.range(5, 600);
        let _ = writeln!(log, "{t}\t{dwell}\t{url}\t{}", text(&mut rng, &nodes, leaf, PAGE_WORDS));
        truth_pages.push(serde_json::json!([url, nodes[leaf].id]));
    }
    let mut rng = root.fork("ads");
    let mut ads = String::from("# ad\tcategory\tbid\ttitle\n");
    for i in 0..ADS {
        let n = rng.range(0, nodes.len() - 1);
        let bid = rng.range(10, 500);
        let _ = writeln!(ads, "ad{:05}\t{}\t{}.{:02}\t{} {} deals", i + 1, nodes[n].id, bid / 100, bid % 100, nodes[n].name, pseudo_word(&mut rng));
    }
    let settings = format!("# behavior-profile settings (gen-data, size {})\ndepth = {depth}\nhalf_life_days = 7\ntop = 10\n", size.name());
    for (name, body) in [("settings.txt", &settings), ("taxonomy.tsv", &taxonomy), ("corpus.tsv", &corpus), ("log.tsv", &log), ("ads.tsv", &ads)] {
        write_file(&out.join(name), body.as_bytes())?;
    }
    Ok(serde_json::json!({
        "depth": depth,
        "categories_at_depth": nodes.iter().filter(|n| n.id.split('.').count() == depth).count(),
        "favourite_top_categories": favourites.iter().map(|&(t, w)| serde_json::json!([nodes[t].id, TOP[t], w])).collect::<Vec<_>>(),
        "pages": truth_pages,
    }))
}
