//! behavior-profile: builds a user's interest profile from a browsing log for ad targeting, as
//! CloneCloud's behavior-profiling application did.
//!
//! A multinomial naive Bayes classifier, trained on a category corpus, gives each visited page a
//! posterior over the categories of a taxonomy cut at the profiling *depth*; the posteriors,
//! weighted by dwell time and decayed with age, add up to the user's interests at every level of
//! the tree, and ads are ranked by the interest in their category times their bid. A deeper
//! profile has several times more categories, and several times more work per page.
//!
//! A plain program: it knows nothing of clonecloud, and builds natively and for wasm32-wasip1.
//! Floating point uses only operations that round the same everywhere (see [`math`]), and every
//! sum runs in a fixed order, so the report is the same bytes on every platform.

pub mod math;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

/// Settings read from `settings.txt` (`key = value` lines, `#` comments).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The level of the taxonomy the classifier decides among (1 = top level).
    pub depth: usize,
    /// Interest halves every this many days before the newest log entry.
    pub half_life_days: f64,
    /// How many entries each ranked list shows.
    pub top: usize,
    /// Whether to list each page's most likely category.
    pub list_pages: bool,
}

impl Settings {
    pub fn parse(text: &str) -> Result<Settings, String> {
        let mut s = Settings { depth: 3, half_life_days: 7.0, top: 10, list_pages: false };
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |what: &str| format!("settings.txt:{}: {what}", n + 1);
            let (key, value) = line.split_once('=').ok_or_else(|| bad("expected `key = value`"))?;
            let (key, value) = (key.trim(), value.trim());
            match key {
                "depth" => {
                    s.depth = value.parse().ok().filter(|&d| d >= 1).ok_or_else(|| bad("depth must be a whole number >= 1"))?
                }
                "half_life_days" => {
                    s.half_life_days = value
                        .parse()
                        .ok()
                        .filter(|&h: &f64| h > 0.0 && h.is_finite())
                        .ok_or_else(|| bad("half_life_days must be a positive number"))?
                }
                "top" => s.top = value.parse().map_err(|_| bad("top must be a whole number"))?,
                "list_pages" => s.list_pages = value.parse().map_err(|_| bad("list_pages must be true or false"))?,
                other => return Err(bad(&format!("unknown setting `{other}` (known: depth, half_life_days, top, list_pages)"))),
            }
        }
        Ok(s)
    }
}

/// The records of a tab-separated file: the line number and `N` fields (the last takes the rest of
/// the line). Blank lines and `#` comments are skipped; a short line is an error naming the file,
/// the line and the columns it needs.
fn records<'a, const N: usize>(
    text: &'a str,
    file: &'a str,
    columns: &'a str,
) -> impl Iterator<Item = Result<(usize, [&'a str; N]), String>> + 'a {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(move |(n, line)| {
            <[&str; N]>::try_from(line.splitn(N, '\t').collect::<Vec<_>>())
                .map(|fields| (n + 1, fields))
                .map_err(|_| format!("{file}:{}: expected `{columns}`", n + 1))
        })
}

/// The category tree.
#[derive(Debug)]
pub struct Taxonomy {
    pub ids: Vec<String>,
    pub names: Vec<String>,
    pub parent: Vec<Option<usize>>,
    pub level: Vec<usize>,
    index: BTreeMap<String, usize>,
}

impl Taxonomy {
    /// Parses `id<TAB>parent<TAB>name` lines; `-` is the parent of a top-level category. A parent
    /// must come before its children.
    pub fn parse(text: &str) -> Result<Taxonomy, String> {
        let mut t = Taxonomy { ids: vec![], names: vec![], parent: vec![], level: vec![], index: BTreeMap::new() };
        for record in records::<3>(text, "taxonomy.tsv", "id<TAB>parent<TAB>name") {
            let (n, [id, parent, name]) = record?;
            let bad = |what: &str| format!("taxonomy.tsv:{n}: {what}");
            let parent = match parent {
                "-" => None,
                p => Some(*t.index.get(p).ok_or_else(|| bad(&format!("parent `{p}` is not defined above")))?),
            };
            if t.index.insert(id.to_string(), t.ids.len()).is_some() {
                return Err(bad(&format!("category `{id}` is defined twice")));
            }
            t.ids.push(id.to_string());
            t.names.push(name.to_string());
            t.level.push(parent.map_or(1, |p| t.level[p] + 1));
            t.parent.push(parent);
        }
        if t.ids.is_empty() {
            return Err("taxonomy.tsv defines no category".into());
        }
        Ok(t)
    }

    pub fn get(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The ancestor of `node` at `level` (itself when it is at or above that level).
    pub fn cut(&self, mut node: usize, level: usize) -> usize {
        while self.level[node] > level {
            node = self.parent[node].expect("a node below level 1 has a parent");
        }
        node
    }

    /// `Top > Child > …` for reports.
    pub fn path(&self, node: usize) -> String {
        let mut parts = vec![self.names[node].as_str()];
        let mut n = node;
        while let Some(p) = self.parent[n] {
            parts.push(&self.names[p]);
            n = p;
        }
        parts.reverse();
        parts.join(" > ")
    }
}

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of", "on", "or", "that",
    "the", "this", "to", "was", "with",
];

/// Lower-cased ASCII alphanumeric words of two letters or more, stop words removed.
pub fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() >= 2)
        .map(|w| w.to_ascii_lowercase())
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
}

/// Multinomial naive Bayes with add-one smoothing, stored sparsely: a word's postings list the
/// classes whose training text holds it.
#[derive(Debug)]
pub struct Classifier {
    /// The taxonomy node of each class.
    pub classes: Vec<usize>,
    vocabulary: BTreeMap<String, usize>,
    /// ln P(c) for each class.
    log_prior: Vec<f64>,
    /// ln(total words of c + |V|).
    log_norm: Vec<f64>,
    /// Per word: (class, ln(count(w, c) + 1)).
    postings: Vec<Vec<(u32, f64)>>,
}

impl Classifier {
    /// Trains on `(category id, text)` documents; each counts for its ancestor at `depth`.
    pub fn train(tax: &Taxonomy, docs: &[(usize, &str)], depth: usize) -> Result<Classifier, String> {
        let mut class_of_node: BTreeMap<usize, usize> = BTreeMap::new();
        for &(node, _) in docs {
            let c = tax.cut(node, depth);
            let next = class_of_node.len();
            class_of_node.entry(c).or_insert(next);
        }
        // Classes in taxonomy order, so the report does not depend on the corpus's order.
        let mut classes: Vec<usize> = class_of_node.keys().copied().collect();
        classes.sort_unstable();
        let class_index: BTreeMap<usize, usize> = classes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        if classes.is_empty() {
            return Err("corpus.tsv holds no training document".into());
        }
        let mut vocabulary: BTreeMap<String, usize> = BTreeMap::new();
        let mut counts: Vec<BTreeMap<u32, u64>> = Vec::new();
        let mut doc_count = vec![0u64; classes.len()];
        let mut word_total = vec![0u64; classes.len()];
        for &(node, text) in docs {
            let c = class_index[&tax.cut(node, depth)];
            doc_count[c] += 1;
            for w in tokens(text) {
                let next = vocabulary.len();
                let id = *vocabulary.entry(w).or_insert(next);
                if id == counts.len() {
                    counts.push(BTreeMap::new());
                }
                *counts[id].entry(c as u32).or_insert(0) += 1;
                word_total[c] += 1;
            }
        }
        let v = vocabulary.len() as f64;
        let n_docs = docs.len() as f64;
        let log_prior = doc_count.iter().map(|&d| math::ln(d as f64 / n_docs)).collect();
        let log_norm = word_total.iter().map(|&t| math::ln(t as f64 + v)).collect();
        let postings = counts
            .into_iter()
            .map(|m| m.into_iter().map(|(c, k)| (c, math::ln(k as f64 + 1.0))).collect())
            .collect();
        Ok(Classifier { classes, vocabulary, log_prior, log_norm, postings })
    }

    pub fn vocabulary_size(&self) -> usize {
        self.vocabulary.len()
    }

    /// The posterior over the classes for `text` (into `out`), by log-sum-exp; words outside the
    /// vocabulary are ignored.
    pub fn posterior(&self, text: &str, out: &mut Vec<f64>) {
        let mut words: BTreeMap<usize, u32> = BTreeMap::new();
        for w in tokens(text) {
            if let Some(&id) = self.vocabulary.get(&w) {
                *words.entry(id).or_insert(0) += 1;
            }
        }
        let n: u32 = words.values().sum();
        out.clear();
        out.extend(self.log_prior.iter().zip(&self.log_norm).map(|(p, z)| p - f64::from(n) * z));
        for (&w, &k) in &words {
            for &(c, l) in &self.postings[w] {
                out[c as usize] += f64::from(k) * l;
            }
        }
        let max = out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for s in out.iter_mut() {
            *s = math::exp(*s - max);
            sum += *s;
        }
        for s in out.iter_mut() {
            *s /= sum;
        }
    }
}

/// One visited page.
#[derive(Debug)]
pub struct Visit<'a> {
    pub time: i64,
    pub dwell: f64,
    pub url: &'a str,
    pub text: &'a str,
}

fn parse_log(text: &str) -> Result<Vec<Visit<'_>>, String> {
    let mut v = Vec::new();
    for record in records::<4>(text, "log.tsv", "unix_time<TAB>dwell_seconds<TAB>url<TAB>page text") {
        let (n, [time, dwell, url, text]) = record?;
        let bad = |what: &str| format!("log.tsv:{n}: {what}");
        let time = time.parse().map_err(|_| bad("the time is not a whole number of seconds"))?;
        let dwell = dwell.parse::<f64>().ok().filter(|d| *d >= 0.0 && d.is_finite()).ok_or_else(|| bad("the dwell time is not a number of seconds"))?;
        v.push(Visit { time, dwell, url, text });
    }
    if v.is_empty() {
        return Err("log.tsv holds no visit".into());
    }
    Ok(v)
}

/// A page's weight: dwell minutes (capped at five) halved every `half_life` days of age.
fn weight(v: &Visit, newest: i64, half_life: f64) -> f64 {
    let age_days = (newest - v.time) as f64 / 86_400.0;
    v.dwell.min(300.0) / 60.0 * math::exp(-age_days / half_life * std::f64::consts::LN_2)
}

fn read(dir: &Path, name: &str, what: &str) -> Result<String, String> {
    fs::read_to_string(dir.join(name)).map_err(|e| format!("cannot read {name} ({what}) in {}: {e}", dir.display()))
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { 100.0 * part / whole } else { 0.0 }
}

/// Reads `INPUT_DIR` (settings.txt, taxonomy.tsv, corpus.tsv, log.tsv, ads.tsv) and returns the
/// report.
pub fn run(input: &Path) -> Result<String, String> {
    let settings = Settings::parse(&read(input, "settings.txt", "profiling settings")?)?;
    let tax = Taxonomy::parse(&read(input, "taxonomy.tsv", "the category tree")?)?;
    let corpus_text = read(input, "corpus.tsv", "training documents")?;
    let mut docs = Vec::new();
    for record in records::<2>(&corpus_text, "corpus.tsv", "category<TAB>text") {
        let (n, [id, text]) = record?;
        let node = tax.get(id).ok_or_else(|| format!("corpus.tsv:{n}: unknown category `{id}`"))?;
        docs.push((node, text));
    }
    let log_text = read(input, "log.tsv", "the browsing log")?;
    let log = parse_log(&log_text)?;
    let ads_text = read(input, "ads.tsv", "the ads")?;
    let clf = Classifier::train(&tax, &docs, settings.depth)?;

    // Classify every page; add its weighted posterior to the interests.
    let newest = log.iter().map(|v| v.time).max().expect("log is not empty");
    let oldest = log.iter().map(|v| v.time).min().expect("log is not empty");
    let weeks = ((newest - oldest) / 604_800 + 1) as usize;
    let tops: Vec<usize> = (0..tax.ids.len()).filter(|&n| tax.level[n] == 1).collect();
    let mut interest = vec![0.0; clf.classes.len()];
    let mut weekly = vec![vec![0.0; tax.ids.len()]; weeks];
    let mut pages_per_class = vec![0u64; clf.classes.len()];
    let mut listing = String::new();
    let mut post = Vec::new();
    for v in &log {
        clf.posterior(v.text, &mut post);
        let w = weight(v, newest, settings.half_life_days);
        let week = ((v.time - oldest) / 604_800) as usize;
        let mut best = 0;
        for (c, &p) in post.iter().enumerate() {
            interest[c] += w * p;
            weekly[week][tax.cut(clf.classes[c], 1)] += w * p;
            if p > post[best] {
                best = c;
            }
        }
        pages_per_class[best] += 1;
        if settings.list_pages {
            let _ = writeln!(listing, "  {}  {}  {:.4}", v.url, tax.ids[clf.classes[best]], post[best]);
        }
    }
    // Interests of every node: the sum over its classes.
    let mut node_interest = vec![0.0; tax.ids.len()];
    for (c, &node) in clf.classes.iter().enumerate() {
        let mut n = Some(node);
        while let Some(x) = n {
            node_interest[x] += interest[c];
            n = tax.parent[x];
        }
    }
    let total: f64 = tops.iter().map(|&t| node_interest[t]).sum();

    let mut r = String::new();
    let _ = writeln!(
        r,
        "behavior profile: depth {}, {} categories, {} training documents, vocabulary {} words",
        settings.depth,
        clf.classes.len(),
        docs.len(),
        clf.vocabulary_size()
    );
    let _ = writeln!(r, "log: {} visits over {} weeks, half-life {} days", log.len(), weeks, settings.half_life_days);
    let ranked = |nodes: Vec<usize>| {
        let mut nodes = nodes;
        nodes.sort_by(|&a, &b| node_interest[b].total_cmp(&node_interest[a]).then(a.cmp(&b)));
        nodes
    };
    for level in 1..=settings.depth {
        let nodes: Vec<usize> = (0..tax.ids.len()).filter(|&n| tax.level[n] == level).collect();
        if nodes.is_empty() {
            break;
        }
        let _ = writeln!(r, "\ninterests at level {level} (top {} of {}):", settings.top.min(nodes.len()), nodes.len());
        for n in ranked(nodes).into_iter().take(settings.top) {
            let _ = writeln!(r, "  {:>7.3}%  {:<10} {}", percent(node_interest[n], total), tax.ids[n], tax.path(n));
        }
    }
    let _ = writeln!(r, "\nweekly top interest:");
    for (i, week) in weekly.iter().enumerate() {
        let sum: f64 = week.iter().sum();
        let best = tops.iter().copied().fold(tops[0], |b, t| if week[t] > week[b] { t } else { b });
        if sum > 0.0 {
            let _ = writeln!(r, "  week {:>2}: {:>7.3}%  {}", i + 1, percent(week[best], sum), tax.names[best]);
        } else {
            let _ = writeln!(r, "  week {:>2}: no visits", i + 1);
        }
    }
    let _ = writeln!(r, "\npages by most likely category (top {}):", settings.top);
    let mut by_pages: Vec<usize> = (0..clf.classes.len()).collect();
    by_pages.sort_by(|&a, &b| pages_per_class[b].cmp(&pages_per_class[a]).then(a.cmp(&b)));
    for c in by_pages.into_iter().take(settings.top).filter(|&c| pages_per_class[c] > 0) {
        let _ = writeln!(r, "  {:>6}  {:<10} {}", pages_per_class[c], tax.ids[clf.classes[c]], tax.path(clf.classes[c]));
    }

    // Ads: interest share of the ad's category (cut at the profiling depth) times the bid.
    let mut ads = Vec::new();
    for record in records::<4>(&ads_text, "ads.tsv", "ad_id<TAB>category<TAB>bid<TAB>title") {
        let (n, [id, category, bid, title]) = record?;
        let bad = |what: &str| format!("ads.tsv:{n}: {what}");
        let node = tax.get(category).ok_or_else(|| bad(&format!("unknown category `{category}`")))?;
        let bid: f64 = bid.parse().ok().filter(|b: &f64| *b >= 0.0 && b.is_finite()).ok_or_else(|| bad("the bid is not a number"))?;
        let share = percent(node_interest[tax.cut(node, settings.depth)], total) / 100.0;
        ads.push((share * bid, id, node, bid, title));
    }
    ads.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    let _ = writeln!(r, "\nads (top {} of {}):", settings.top.min(ads.len()), ads.len());
    for (i, (score, id, node, bid, title)) in ads.iter().take(settings.top).enumerate() {
        let _ = writeln!(r, "  {:>2}. {:<8} score {:.6}  bid {:.2}  {}  [{}]", i + 1, id, score, bid, title, tax.path(*node));
    }
    if settings.list_pages {
        let _ = writeln!(r, "\npages:");
        r.push_str(&listing);
    }
    Ok(r)
}
