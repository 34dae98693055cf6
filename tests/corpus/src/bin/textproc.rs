//! The biggest guest: regular expressions and JSON over a generated corpus (regex and
//! serde_json make the module over 1 MB).
use regex::Regex;
use serde_json::{Value, json};

fn main() {
    let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
    let mut text = String::new();
    for i in 0..2000u32 {
        let w = words[(i as usize * 7 + 3) % words.len()];
        text.push_str(&format!("{w}-{i} user{}@example{}.org {}.{}.{}.{} ", i % 97, i % 5, i % 256, (i * 3) % 256, (i * 7) % 256, (i * 11) % 256));
        if i % 10 == 9 {
            text.push('\n');
        }
    }
    let email = Regex::new(r"(?m)\b([a-z]+[0-9]*)@(example[0-9])\.org\b").unwrap();
    let ip = Regex::new(r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b").unwrap();
    let word = Regex::new(r"\b(?P<w>[a-z]+)-(?P<n>\d+)\b").unwrap();

    let mut domains = std::collections::BTreeMap::new();
    for c in email.captures_iter(&text) {
        *domains.entry(c[2].to_string()).or_insert(0u32) += 1;
    }
    let private = ip.captures_iter(&text).filter(|c| &c[1] == "10" || &c[1] == "192").count();
    let total: u64 = word.captures_iter(&text).map(|c| c["n"].parse::<u64>().unwrap()).sum();

    let report = json!({
        "lines": text.lines().count(),
        "domains": domains,
        "private_ips": private,
        "number_sum": total,
        "first_words": word.captures_iter(&text).take(3).map(|c| c["w"].to_string()).collect::<Vec<_>>(),
    });
    let round: Value = serde_json::from_str(&report.to_string()).unwrap();
    assert_eq!(round, report);
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
